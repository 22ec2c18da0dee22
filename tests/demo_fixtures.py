"""The demo as a newcomer starts it: ``gaeservices demo`` in a process of its own.

:func:`demo_server` runs ``python -m gaeservices demo --port 0`` (waitress, its
dispatcher thread) in a directory of the test's own, on embedded defaults unless
told otherwise, and yields its base URL; its output goes to files beside it, so
a chatty server (console mail prints every message) never blocks on a pipe.
:class:`Client` is a browser-less client that keeps cookies and follows the
demo's 303s, for tests that need no real browser.
"""

from __future__ import annotations

import http.cookiejar
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

KEY = "k-signing-key-for-the-test-suite"
STARTED = "gaeservices demo on "


@contextmanager
def demo_server(directory: Path, *args: str, env: dict[str, str] | None = None,
                timeout: float = 60) -> Iterator[str]:
    """Serve the demo from ``directory``; yield its URL (ending in ``/``)."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("GAESERVICES_")}
    environ["GAESERVICES_SECRET_KEY"] = KEY
    environ.update(env or {})
    directory.mkdir(parents=True, exist_ok=True)
    out, err = directory / "demo.out", directory / "demo.err"
    with open(out, "w") as stdout, open(err, "w") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "gaeservices", "demo", "--port", "0", *args],
            cwd=directory, env=environ, stdout=stdout, stderr=stderr, text=True,
        )
    try:
        deadline = time.monotonic() + timeout
        while True:
            started = [line for line in out.read_text().splitlines() if line.startswith(STARTED)]
            if started:
                break
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the demo did not start: {out.read_text()}\n{err.read_text()}")
            time.sleep(0.05)
        yield started[0].split()[3]
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class Client:
    """Cookies kept, redirects followed; ``get``/``post`` return (status, text)."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.cookies = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.cookies))

    def open(self, path: str, data: dict[str, str] | None = None,
             headers: dict[str, str] | None = None) -> tuple[int, str, dict[str, str]]:
        body = None if data is None else urllib.parse.urlencode(data).encode()
        request = urllib.request.Request(self.base + path.lstrip("/"), data=body, headers=headers or {})
        try:
            with self.opener.open(request, timeout=30) as response:
                return response.status, response.read().decode(), dict(response.headers)
        except urllib.error.HTTPError as error:
            with error:
                return error.code, error.read().decode(), dict(error.headers)

    def get(self, path: str) -> tuple[int, str]:
        return self.open(path)[:2]

    def post(self, path: str, **data: str) -> tuple[int, str]:
        return self.open(path, data)[:2]
