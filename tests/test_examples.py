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
