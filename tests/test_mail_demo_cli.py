"""`gaeservices smtpd` and the demo's mail page, as a developer uses them: real processes.

The demo (waitress, its own dispatcher thread) is pointed at `gaeservices smtpd`
with GAESERVICES_MAIL=smtp://...; a message posted on the page shows up, readable,
in the smtpd's output and in its --save folder.
"""

from __future__ import annotations

import argparse
import email
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from email import policy

import pytest
from webob import Request

from gaeservices import Services, set_services
from gaeservices.demo import mail as demo_mail
from gaeservices.demo import tasks as demo_tasks
from gaeservices.demo.app import Router
from gaeservices.mail.smtp import SMTPBackend
from gaeservices.mail.message import build_message

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(TESTS_DIR)
KEY = "k-signing-key-for-the-test-suite"


class Process:
    """A command whose standard output is collected, line by line, as it comes."""

    def __init__(self, args, env=None):
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gaeservices", *args], cwd=ROOT, env=env,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, encoding="utf-8",
        )
        self.output = ""
        self._reader = threading.Thread(target=self._collect, daemon=True)
        self._reader.start()

    def _collect(self):
        for line in self.proc.stdout:
            self.output += line

    def read(self):
        return self.output

    def wait_for(self, pattern, timeout=30.0):
        deadline = time.monotonic() + timeout
        while True:
            found = re.search(pattern, self.read())
            if found:
                return found
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"no {pattern!r} in the output of {self.proc.args}:\n{self.read()}")
            time.sleep(0.05)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._reader.join(5)
        return self.proc.returncode


@pytest.fixture
def smtpd(tmp_path):
    try:
        import aiosmtpd  # noqa: F401
    except ImportError:
        from conftest import unavailable

        unavailable("aiosmtpd", "pip install 'gaeservices[mail]'")
    saved = tmp_path / "saved"
    process = Process(["smtpd", "--port", "0", "--save", str(saved)])
    try:
        found = process.wait_for(r"listening on 127\.0\.0\.1:(\d+)")
        process.port, process.saved = int(found.group(1)), saved
        yield process
    finally:
        process.stop()


def test_smtpd_prints_each_message_readably_and_saves_it(smtpd):
    backend = SMTPBackend("127.0.0.1", smtpd.port)
    msg, envelope = build_message(
        "Jöhn Dœ <john@example.com>", ["Ünï <u@example.com>"], "Grüße 🎉", "Héllo wörld\nline two\n",
        html="<p>Héllo</p>", bcc=["hidden@example.com"],
        attachments=[("résumé.pdf", b"%PDF" + bytes(2000)), ("data.csv", "a,b\n1,2\n")],
    )
    backend.send(msg.as_bytes(), envelope)
    backend.close()
    out = smtpd.wait_for(r"data\.csv.*\n-{10,}").string
    assert "envelope: from <john@example.com> to <u@example.com>, <hidden@example.com>" in out
    assert "From: Jöhn Dœ <john@example.com>" in out
    assert "To: Ünï <u@example.com>" in out
    assert "Subject: Grüße 🎉" in out
    assert "Héllo wörld\nline two" in out
    assert "[text/html part: 14 bytes]" in out
    assert "résumé.pdf  application/pdf  2,004 bytes" in out
    assert "data.csv  text/csv  8 bytes" in out
    (saved,) = list(smtpd.saved.iterdir())
    got = email.message_from_bytes(saved.read_bytes(), policy=policy.default)
    assert str(got["Subject"]) == "Grüße 🎉" and str(got["X-Envelope-To"]) == "u@example.com, hidden@example.com"
    assert f"saved as {saved}" in out
    assert smtpd.stop() == 0
    assert "gaeservices smtpd stopped" in smtpd.output


def test_smtpd_on_a_taken_port_says_so_in_one_line(smtpd):
    taken = subprocess.run(
        [sys.executable, "-m", "gaeservices", "smtpd", "--port", str(smtpd.port)],
        cwd=ROOT, capture_output=True, text=True, timeout=30,
    )
    assert taken.returncode == 1
    assert taken.stderr.strip() == (
        f"gaeservices smtpd: cannot listen on 127.0.0.1:{smtpd.port}: "
        "the address is already in use; choose another port with --port"
    )


def test_the_demo_sends_to_smtpd(tmp_path, smtpd):
    env = dict(
        os.environ,
        GAESERVICES_MAIL=f"smtp://127.0.0.1:{smtpd.port}",
        GAESERVICES_SECRET_KEY=KEY,
        GAESERVICES_DATA_DIR=str(tmp_path / "demo"),
    )
    env.pop("GAESERVICES_STORE", None)
    env.pop("GAESERVICES_QUEUE", None)
    demo = Process(["demo", "--port", "0"], env=env)
    try:
        port = int(demo.wait_for(r"gaeservices demo on http://127\.0\.0\.1:(\d+)/").group(1))
        form = urllib.parse.urlencode({
            "sender": "Demo <demo@example.com>", "to": "reader@example.com",
            "subject": "from the demo page", "body": "posted on the form", "html": "1", "attach": "1",
        }).encode()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/mail/", data=form, timeout=10) as response:
            assert response.status == 200  # after the 303
        out = smtpd.wait_for(r"note\.txt.*\n-{10,}").string
        assert "Subject: from the demo page" in out and "posted on the form" in out
        deadline = time.monotonic() + 20
        while True:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/mail/", timeout=10) as response:
                page = response.read().decode()
            if "s-done'>sent<" in page or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert "s-done'>sent<" in page
    finally:
        demo.stop()


# --- the page itself, in process, on the demo's defaults ---------------------------------


def post(app, **fields):
    body = urllib.parse.urlencode(fields).encode()
    return Request.blank("/mail/", method="POST", body=body,
                         content_type="application/x-www-form-urlencoded").get_response(app)


def test_the_page_queues_the_mail_and_the_console_prints_it(tmp_path, capsys):
    services = Services(secret_key=KEY, data_dir=str(tmp_path), environ={})  # the demo's defaults
    assert services.backend_url("mail").scheme == "console"
    previous = set_services(services)
    try:
        app = Router([(demo_mail.PREFIX, demo_mail.TITLE, demo_mail.make_app(services))])
        held = demo_tasks.start(services, argparse.Namespace(disable_task_running=True))
        assert held is None
        response = post(app, sender="demo@example.com", to="reader@example.com", subject="Grüße",
                        body="console body", html="1", attach="1")
        assert response.status_int == 303
        assert "s-queued'>queued<" in Request.blank("/mail/").get_response(app).text
        assert "console body" not in capsys.readouterr().out  # waiting in the queue

        dispatcher = demo_tasks.start(services, argparse.Namespace(disable_task_running=False))
        try:
            deadline = time.monotonic() + 20
            while "s-done'>sent<" not in Request.blank("/mail/").get_response(app).text:
                assert time.monotonic() < deadline
                time.sleep(0.05)
        finally:
            dispatcher.stop()
        out = capsys.readouterr().out
        assert "Subject: Grüße" in out and "console body" in out and "note.txt  text/plain" in out
    finally:
        set_services(previous)
        services.close()


def test_the_page_refuses_an_injected_header_and_queues_nothing(tmp_path):
    services = Services(secret_key=KEY, data_dir=str(tmp_path), environ={})
    app = Router([(demo_mail.PREFIX, demo_mail.TITLE, demo_mail.make_app(services))])
    response = post(app, sender="demo@example.com", to="reader@example.com",
                    subject="hi\r\nBcc: victim@example.com", body="b")
    assert response.status_int == 400
    assert "Not queued" in response.text and "CR or LF" in response.text
    assert "<script>" not in post(app, sender="demo@example.com", to="<script>@x", subject="s", body="b").text
    assert sum(services.queue.counts().values()) == 0
    services.close()
