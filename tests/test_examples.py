"""The examples start as their READMEs say and answer.

Each README's first ``sh`` block holds its two commands: the first makes the
repository's virtualenv (which the test suite runs in already), the second
starts the example. The test runs that second command as written, in a copy of
the example whose ``../../.venv`` is the virtualenv running the tests, with one
change: a free port instead of the fixed one.
"""

from __future__ import annotations

import http.client
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlencode

import pytest

from conftest import unavailable
from demo_fixtures import Client

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples"


def readme_commands(example: str) -> list[str]:
    text = (EXAMPLES / example / "README.md").read_text(encoding="utf-8")
    block = re.search(r"```sh\n(.*?)```", text, re.DOTALL).group(1)
    return [line.split("  #")[0].strip() for line in block.splitlines() if line.strip()]


@contextmanager
def started(example: str, tmp_path: Path, command: str, ready: re.Pattern[str]) -> Iterator[tuple[str, Path]]:
    """Run ``command`` in a copy of the example; yield the URL ``ready`` finds in its output."""
    repo = tmp_path / "repo"
    shutil.copytree(EXAMPLES / example, repo / "examples" / example,
                    ignore=shutil.ignore_patterns(".gaeservices", "__pycache__"))
    (repo / ".venv").symlink_to(sys.prefix)  # ../../.venv: the virtualenv of this test run
    cwd = repo / "examples" / example
    log = cwd / "output.log"
    environ = {k: v for k, v in os.environ.items() if not k.startswith("GAESERVICES_")}
    with open(log, "wb") as out:
        process = subprocess.Popen(shlex.split(command), cwd=cwd, env=environ, stdout=out,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while not (found := ready.search(log.read_text(errors="replace"))):
            assert process.poll() is None and time.monotonic() < deadline, log.read_text(errors="replace")
            time.sleep(0.05)
        yield found.group(1), log
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@pytest.mark.parametrize("example", ["wsgi", "flask"])
def test_the_readme_has_two_commands(example):
    commands = readme_commands(example)
    assert len(commands) == 2 and commands[0] == "make -C ../.. venv"
    assert commands[1].startswith("../../.venv/bin/")


def test_the_app_engine_readme_prepares_then_deploys():
    assert readme_commands("appengine") == ["../../.venv/bin/python prepare.py", "gcloud app deploy app.yaml queue.yaml"]


def test_the_wsgi_example_serves_sessions_across_processes(tmp_path):
    command = readme_commands("wsgi")[1]
    assert "--bind 127.0.0.1:8000" in command and "--workers 2" in command
    with started("wsgi", tmp_path, command.replace("127.0.0.1:8000", "127.0.0.1:0"),
                 re.compile(r"Listening at: (http://127\.0\.0\.1:\d+)")) as (url, _):
        client = Client(url + "/")
        processes = set()
        for visit in range(1, 41):
            status, text = client.get("/")
            assert status == 200
            assert f'id="visits">{visit}<' in text  # one session, whichever process answers
            processes.add(re.search(r'id="pid">(\d+)<', text).group(1))
            if len(processes) == 2 and visit >= 5:
                break
        assert len(processes) == 2, "every request went to one worker process"

        host, port = url.removeprefix("http://").split(":")
        barrier = threading.Barrier(10)
        statuses = []

        def sign(number: int) -> None:
            connection = http.client.HTTPConnection(host, int(port), timeout=30)
            connection.connect()
            barrier.wait()
            connection.request("POST", "/", urlencode({"name": f"signer {number}", "message": f"<hello {number}>"}),
                               {"Content-Type": "application/x-www-form-urlencoded"})
            statuses.append(connection.getresponse().status)
            connection.close()

        threads = [threading.Thread(target=sign, args=(n,)) for n in range(10)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert statuses == [303] * 10
        text = client.get("/")[1]
        for number in range(10):
            assert f"<strong>signer {number}</strong>: &lt;hello {number}&gt;" in text


def test_the_flask_example_builds_downloads_and_mails_a_report(tmp_path):
    command = readme_commands("flask")[1]
    assert command == "../../.venv/bin/python app.py"
    with started("flask", tmp_path, command + " --port 0", re.compile(r"serving on (http://\S+/)")) as (url, log):
        owner, stranger = Client(url), Client(url)
        assert "Reports built so far" in owner.get("/")[1]
        text = owner.post("/reports", text="to be or not to be", email="reader@example.com")[1]
        report_id = re.search(r"report ([0-9a-f]{12})", text).group(1)

        def link():
            return re.search(r'href="(/reports/[0-9a-f]+\.txt)"', owner.get("/")[1])

        deadline = time.monotonic() + 30
        while not (found := link()):
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        status, body, headers = owner.open(found.group(1))
        assert status == 200 and body.startswith("6 words\n") and "     2  to\n" in body
        assert headers["Content-Type"] == "text/plain; charset=utf-8" and "ETag" in headers
        status, body, headers = owner.open(found.group(1), headers={"Range": "bytes=0-6"})
        assert status == 206 and body == "6 words" and headers["Content-Range"].startswith("bytes 0-6/")
        assert stranger.open(found.group(1))[0] == 404  # only the session that asked for it
        assert 'id="built">1<' in owner.get("/")[1]

        deadline = time.monotonic() + 30
        while f"Subject: Your report {report_id} is ready" not in log.read_text():
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        assert "To: reader@example.com" in log.read_text()


# --- App Engine: what can be checked without deploying --------------------------------

APPENGINE = EXAMPLES / "appengine"
KEY = "k-signing-key-for-the-test-suite"


def app_yaml():
    from google.appengine.api import appinfo

    with open(APPENGINE / "app.yaml", encoding="utf-8") as f:
        return appinfo.LoadSingleAppInfo(f)


def defined_in_main() -> set[str]:
    import ast

    tree = ast.parse((APPENGINE / "main.py").read_text(encoding="utf-8"))
    names = {node.name for node in tree.body if isinstance(node, ast.FunctionDef)}
    names |= {target.id for node in tree.body if isinstance(node, ast.Assign)
              for target in node.targets if isinstance(target, ast.Name)}
    return names


def test_app_yaml_and_queue_yaml_parse_and_name_what_exists():
    pytest.importorskip("google.appengine.api.appinfo")
    from google.appengine.api import queueinfo

    info = app_yaml()
    assert re.fullmatch(r"python3\d+", info.runtime) and info.app_engine_apis
    assert info.entrypoint.removeprefix("exec ") == "gunicorn -b :$PORT main:application"
    assert "gunicorn" in (APPENGINE / "requirements.txt").read_text()  # an entrypoint's server is not added for us
    handlers = {h.url: h for h in info.handlers}
    assert handlers["/_ah/queue/deferred"].login == "admin" and handlers["/mail"].login == "required"
    assert all(h.script == "auto" and h.secure == "always" for h in info.handlers)
    assert {"application", "setup"} <= defined_in_main()
    assert info.env_variables["GAESERVICES_BOOTSTRAP"] == "main:setup"
    with open(APPENGINE / "queue.yaml", encoding="utf-8") as f:
        queues = {q.name for q in queueinfo.LoadSingleQueue(f).queue}
    assert {"default", info.env_variables["EMAIL_QUEUE_NAME"]} <= queues


def test_the_placeholder_key_stops_an_instance_at_start_up():
    from gaeservices import ConfigurationError, Services

    pytest.importorskip("google.appengine.api.appinfo")
    environ = {"GAE_ENV": "standard", **app_yaml().env_variables}
    with pytest.raises(ConfigurationError, match="GAESERVICES_SECRET_KEY"):
        Services(environ=environ)


def test_the_app_engine_example_prepares_installs_and_boots(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    for name in ("setup.py", "pyproject.toml", "README.md"):
        shutil.copy(REPO / name, repo / name)
    shutil.copytree(REPO / "gaeservices", repo / "gaeservices", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(APPENGINE, repo / "examples" / "appengine",
                    ignore=shutil.ignore_patterns("__pycache__", "wheels", ".gaeservices"))
    (repo / ".venv").symlink_to(sys.prefix)
    here = repo / "examples" / "appengine"

    prepare = shlex.split(readme_commands("appengine")[0])
    done = subprocess.run(prepare, cwd=here, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    key = re.search(r'GAESERVICES_SECRET_KEY: "([^"]+)"', (here / "app.yaml").read_text()).group(1)
    assert len(key.encode()) >= 32 and key != "REPLACE-ME"
    (wheel,) = (here / "wheels").glob("gaeservices-*.whl")
    again = subprocess.run(prepare, cwd=here, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and "keeping the signing key" in again.stdout
    assert key in (here / "app.yaml").read_text()

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    install = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet",
                              "--disable-pip-version-check", "-r", "requirements.txt"],
                             cwd=here, capture_output=True, text=True, timeout=600)
    assert install.returncode == 0, install.stderr

    environ = {"PATH": os.environ["PATH"], "GAE_ENV": "standard", "PORT": "0"}
    from google.appengine.api import appinfo

    with open(here / "app.yaml", encoding="utf-8") as f:
        info = appinfo.LoadSingleAppInfo(f)
    environ.update(info.env_variables)
    entrypoint = shlex.split(info.entrypoint.removeprefix("exec ").replace("$PORT", "0"))
    assert entrypoint[0] == "gunicorn"
    # --check-config loads the application (main:application) and exits: 0 when it imports
    booted = subprocess.run([str(venv / "bin" / "gunicorn"), *entrypoint[1:], "--check-config"],
                            cwd=here, env=environ, capture_output=True, text=True, timeout=120)
    assert booted.returncode == 0, booted.stderr
    del environ["GAESERVICES_SECRET_KEY"]
    refused = subprocess.run([str(venv / "bin" / "gunicorn"), *entrypoint[1:], "--check-config"],
                             cwd=here, env=environ, capture_output=True, text=True, timeout=120)
    assert refused.returncode != 0 and "GAESERVICES_SECRET_KEY must be set on App Engine" in refused.stderr


@pytest.fixture
def request_testbed(monkeypatch):
    """The SDK's testbed as requests through ``wrap_wsgi_app`` meet it on App Engine.

    Unlike conftest's ``testbed``, it creates no ndb context in the test's own
    thread: wrap_wsgi_app runs each request in a thread of its own, and one
    that inherits a context made outside any request hangs in its next
    Datastore transaction. The task queue reads the example's queue.yaml.
    """
    try:
        from google.appengine.ext import testbed as gae_testbed
    except ImportError:
        unavailable("the App Engine SDK", "pip install 'gaeservices[appengine]'")
    monkeypatch.setenv("GAE_APPLICATION", "testbed-test")
    bed = gae_testbed.Testbed()
    bed.activate()
    for stub in ("memcache", "datastore_v3", "app_identity", "mail", "urlfetch", "user"):
        getattr(bed, f"init_{stub}_stub")()
    bed.init_taskqueue_stub(root_path=str(APPENGINE))
    yield bed
    bed.deactivate()


def test_the_app_engine_example_serves_under_the_sdk_testbed(request_testbed, monkeypatch, tmp_path):
    from webob import Request

    from gaeservices.config import set_services

    testbed = request_testbed
    for name, value in app_yaml().env_variables.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("GAESERVICES_SECRET_KEY", KEY)
    monkeypatch.setenv("GAE_ENV", "standard")  # App Engine's backends: memcache, Datastore, task queue, mail
    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", "testbed-test")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(APPENGINE))  # GAESERVICES_BOOTSTRAP=main:setup imports "main"
    fresh = ("main", "gaeservices.wsgi.deferred")  # module-level objects built from this environment
    saved = {name: sys.modules.pop(name) for name in fresh if name in sys.modules}
    previous = set_services(None)
    # The SDK's wrap_wsgi_app replaces os.environ with a per-thread view for the rest of
    # the process (on Python 3.13, threads started later see it empty): give it back.
    saved_environ = os.environ
    try:
        import main

        app = main.application
        first = Request.blank("/").get_response(app)
        assert first.status_code == 200 and "id='hits'>1<" in first.text and "id='visits'>1<" in first.text
        cookie = first.headers["Set-Cookie"].split(";")[0]
        again = Request.blank("/", headers={"Cookie": cookie}).get_response(app)
        assert "id='hits'>2<" in again.text and "id='visits'>2<" in again.text

        # What App Engine's front end adds for a signed-in user (and strips from anyone else's request)
        signed_in = {"Cookie": cookie, "X-AppEngine-User-Email": "ada@example.com", "X-AppEngine-User-Id": "1"}
        assert Request.blank("/mail", method="POST", headers=signed_in).get_response(app).status_code == 303
        assert Request.blank("/mail", method="POST").get_response(app).status_code == 403
        queue = testbed.get_stub("taskqueue")
        assert queue.get_filtered_tasks(queue_names=["default"]) == []
        (task,) = queue.get_filtered_tasks(queue_names=["mail"])
        assert task.url == "/_ah/queue/deferred"

        outside = Request.blank(task.url, method="POST", body=task.payload).get_response(app)
        assert outside.status_code == 403  # no X-AppEngine-TaskName: not the task queue
        mail = testbed.get_stub("mail")
        assert mail.get_sent_messages() == []

        headers = {k: v for k, v in task.headers.items() if k.lower() not in ("content-type", "content-length")}
        headers.update({"X-AppEngine-TaskName": task.name, "X-AppEngine-QueueName": "mail"})
        delivered = Request.blank(task.url, method="POST", body=task.payload, headers=headers).get_response(app)
        assert delivered.status_code == 200
        (sent,) = mail.get_sent_messages()
        assert sent.to == "ada@example.com" and sent.sender == "noreply@testbed-test.appspotmail.com"
        assert "id='mailed'>A mail to ada@example.com is queued" in \
            Request.blank("/", headers={"Cookie": cookie}).get_response(app).text
    finally:
        os.environ = saved_environ
        services = set_services(previous)
        if services is not None:
            services.close()
        for name in fresh:
            sys.modules.pop(name, None)
        sys.modules.update(saved)
