"""examples/django_site: its own tests (Django's test client) and the site through a real
WSGI server, with the deferred welcome task run by a worker in a fresh process."""

from __future__ import annotations

import http.cookiejar
import os
import re
import sqlite3
import subprocess
import sys
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

SITE = Path(__file__).resolve().parent.parent / "examples" / "django_site"


def site_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GAESERVICES_", "DJANGO_"))}
    env.update(
        DJANGO_SETTINGS_MODULE="django_site.settings",
        GAESERVICES_DATA_DIR=str(tmp_path / "data"),
        GAESERVICES_MAIL=f"file://{tmp_path / 'mail'}",
        PYTHONPATH=os.pathsep.join([str(SITE), env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
    )
    return env


def run(args: list[str], env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *args], cwd=SITE, env=env, capture_output=True, text=True, timeout=timeout)


def test_the_sites_own_tests_pass(tmp_path):
    done = run(["manage.py", "test", "accounts", "--noinput"], site_env(tmp_path))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "OK" in done.stderr


@pytest.fixture
def served(tmp_path):
    env = site_env(tmp_path)
    migrated = run(["manage.py", "migrate", "--noinput"], env)
    assert migrated.returncode == 0, migrated.stderr
    code = (
        "from waitress import create_server\n"
        "from django_site.wsgi import application\n"
        "server = create_server(application, host='127.0.0.1', port=0, threads=2)\n"
        "print(server.effective_port, flush=True)\n"
        "server.run()\n"
    )
    server = subprocess.Popen([sys.executable, "-c", code], cwd=SITE, env=env, stdout=subprocess.PIPE, text=True)
    try:
        port = int(server.stdout.readline())
        yield f"http://127.0.0.1:{port}", env, tmp_path
    finally:
        server.kill()
        server.wait()


class Browser:
    def __init__(self, base: str) -> None:
        self.base = base
        self.jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar))

    def get(self, path: str) -> str:
        with self.opener.open(self.base + path, timeout=30) as response:
            return response.read().decode()

    def post(self, path: str, fields: dict[str, str]) -> str:
        page = self.get(path)
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)
        data = urllib.parse.urlencode({**fields, "csrfmiddlewaretoken": token}).encode()
        request = urllib.request.Request(self.base + path, data=data, headers={"Referer": self.base + path})
        with self.opener.open(request, timeout=30) as response:
            return response.read().decode()

    def cookie(self, name: str) -> str | None:
        return next((c.value for c in self.jar if c.name == name), None)


def test_registration_through_a_real_server_and_the_welcome_task_in_a_fresh_worker(served):
    base, env, tmp_path = served
    browser = Browser(base)
    assert "Visits in this session: 1" in browser.get("/")
    before = browser.cookie("sessionid")
    home = browser.post("/register/", {"username": "ada", "email": "ada@example.com",
                                       "password1": "a long pass phrase 1", "password2": "a long pass phrase 1"})
    assert "Hello, ada" in home and "Visits in this session: 2" in home
    assert browser.cookie("sessionid") != before  # the key was cycled at login
    about = browser.get("/about/")
    assert browser.get("/about/") == about  # cached

    database = tmp_path / "data" / "django.sqlite3"
    with sqlite3.connect(database) as db:
        assert db.execute("select count(*) from accounts_welcome").fetchone() == (0,)  # queued, not run
    # A worker in a process of its own: it sets Django up (DJANGO_SETTINGS_MODULE) before
    # the first task, verifies with Django's SECRET_KEY, and the task reads models.
    worker = run(["-m", "gaeservices", "worker", "--queues", "mail", "--drain"], env)
    assert worker.returncode == 0, worker.stderr
    with sqlite3.connect(database) as db:
        members, pid = db.execute("select members_then, worker_pid from accounts_welcome").fetchone()
    assert members == 1 and pid not in (os.getpid(),)
    mails = list((tmp_path / "mail").rglob("*.eml"))
    assert len(mails) == 1 and b"member number 1" in mails[0].read_bytes()


def test_the_readme_command_serves_the_site(tmp_path):
    env = site_env(tmp_path)
    server = subprocess.Popen([sys.executable, "manage.py", "serve", "--port", "0"], cwd=SITE, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = server.stdout.readline()
        match = re.search(r"serving (http://127\.0\.0\.1:\d+/) \(tasks: a worker thread\)", line)
        assert match, line + server.stderr.read() if server.poll() is not None else line
        assert "Visits in this session: 1" in Browser(match.group(1).rstrip("/")).get("/")
    finally:
        server.kill()
        server.wait()
