"""Real servers for the file-transfer tests: gunicorn serving the demo, nginx and Apache in front.

Each server runs as a process of the test's own, on a free loopback port, with its
configuration, logs and pid file in the test's temporary directory; nothing of the
machine's own (no system service, no /etc file) is used or changed. Where a server
is not installed the test is skipped outside CI and fails under CI=true
(conftest's ``unavailable``); ``make test`` installs Debian's packages.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

from conftest import unavailable

from gaeservices.testing import free_port, wait_for_port

SECRET = "k-signing-key-for-the-test-suite"


def demo_environ(data_dir: str, **settings: str) -> dict[str, str]:
    """The environment the demo runs in: a data dir of the test's own, and ``settings``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GAESERVICES_")}
    env.update({"GAESERVICES_SECRET_KEY": SECRET, "GAESERVICES_DATA_DIR": data_dir, "GAESERVICES_QUEUE": "immediate://"})
    env.update(settings)
    return env


@contextmanager
def gunicorn(app: str, env: dict[str, str], log_dir: str, *, workers: int = 2) -> Iterator[int]:
    """gunicorn serving ``app`` (``module:callable``) on a free loopback port; yields the port."""
    try:
        import gunicorn as _  # noqa: F401
    except ImportError:
        unavailable("gunicorn", "pip install -e '.[dev]'")
    port = free_port()
    log = open(os.path.join(log_dir, f"gunicorn-{port}.log"), "wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "--workers", str(workers), "--bind", f"127.0.0.1:{port}",
         "--access-logfile", "-", "--graceful-timeout", "2", app],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        wait_for_port("127.0.0.1", port, timeout=30)
        yield port
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def raw_exchange(port: int, head: bytes, body_chunks: Iterator[bytes], *, timeout: float = 10.0) -> tuple[bytes, int]:
    """Send a request head, then body chunks until the server answers or they run out.

    Returns (what the server answered, how many body bytes were sent). An answer
    that arrives while most of the body is still unsent proves the body was
    refused unread.
    """
    sent = 0
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(head)
        sock.setblocking(False)
        answer = b""
        deadline = time.monotonic() + timeout
        for chunk in body_chunks:
            try:
                answer += sock.recv(65536)
            except BlockingIOError:
                pass
            except OSError:
                break
            if answer:
                break
            try:
                sock.sendall(chunk)
            except BlockingIOError:
                time.sleep(0.01)
                continue
            except OSError:  # the server closed its side: it will not read more
                break
            sent += len(chunk)
            if time.monotonic() > deadline:
                break
        sock.setblocking(True)
        sock.settimeout(timeout)
        try:
            while b"\r\n\r\n" not in answer or len(answer) < answer.index(b"\r\n\r\n") + 4 + _length(answer):
                more = sock.recv(65536)
                if not more:
                    break
                answer += more
        except OSError:
            pass
    return answer, sent


def _length(answer: bytes) -> int:
    for line in answer.split(b"\r\n\r\n", 1)[0].split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    return 0


def which(*names: str) -> str | None:
    for name in names:
        found = shutil.which(name) or next(
            (os.path.join(d, name) for d in ("/usr/sbin", "/sbin") if os.access(os.path.join(d, name), os.X_OK)),
            None,
        )
        if found:
            return found
    return None
