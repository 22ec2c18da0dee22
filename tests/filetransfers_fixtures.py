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
         "--pythonpath", os.path.dirname(os.path.abspath(__file__)),
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


# --- nginx and Apache, configured as docs/filetransfers.md says ---------------------------

DOCS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs", "filetransfers.md")
DOC_APP = "127.0.0.1:8000"
DOC_ROOT = "/srv/app/uploads"


def documented(language: str) -> str:
    """The one ```language block of docs/filetransfers.md: the configuration the docs give."""
    import re

    with open(DOCS, encoding="utf-8") as f:
        blocks = re.findall(rf"^```{language}\n(.*?)^```", f.read(), flags=re.S | re.M)
    assert len(blocks) == 1, f"docs/filetransfers.md should hold one {language} configuration"
    return blocks[0]


def _adapt(config: str, *, listen_from: str, listen_to: str, app_port: int, root: str) -> str:
    for old, new in ((listen_from, listen_to), (DOC_APP, f"127.0.0.1:{app_port}"), (DOC_ROOT, root)):
        assert old in config, f"the documented configuration no longer says {old!r}"
        config = config.replace(old, new)
    return config


@contextmanager
def public_directory() -> Iterator[str]:
    """A directory the front servers' unprivileged workers can read (pytest's own tmp is
    0700), removed afterwards."""
    import tempfile

    directory = tempfile.mkdtemp(prefix="gaeservices-files-")
    os.chmod(directory, 0o755)
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def _start(command: list[str], port: int, log_path: str, what: str) -> subprocess.Popen:
    log = open(log_path, "wb")
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    log.close()
    try:
        wait_for_port("127.0.0.1", port, timeout=15)
    except TimeoutError:
        process.kill()
        process.wait()
        with open(log_path, errors="replace") as f:
            raise RuntimeError(f"{what} did not start:\n{f.read()[-3000:]}") from None
    return process


def _stop(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


@contextmanager
def nginx(app_port: int, root: str, workdir: str) -> Iterator[int]:
    """nginx with the documented server block in front of ``app_port``; yields its port."""
    executable = which("nginx")
    if executable is None:
        unavailable("nginx", "`make test` installs Debian's nginx when run as root")
    port = free_port()
    server = _adapt(documented("nginx"), listen_from="listen 80;", listen_to=f"listen 127.0.0.1:{port};",
                    app_port=app_port, root=root)
    temp = os.path.join(workdir, "nginx-temp")
    os.makedirs(temp, exist_ok=True)
    os.chmod(temp, 0o777)
    config = os.path.join(workdir, "nginx.conf")
    with open(config, "w") as f:
        f.write(f"""daemon off;
worker_processes 1;
pid {workdir}/nginx.pid;
error_log {workdir}/nginx-error.log info;
events {{ worker_connections 64; }}
http {{
    access_log {workdir}/nginx-access.log;
    client_body_temp_path {temp}/body;
    proxy_temp_path {temp}/proxy;
    fastcgi_temp_path {temp}/fastcgi;
    uwsgi_temp_path {temp}/uwsgi;
    scgi_temp_path {temp}/scgi;
    default_type application/octet-stream;
{server}
}}
""")
    process = _start([executable, "-c", config, "-p", workdir, "-e", f"{workdir}/nginx-error.log"], port,
                     os.path.join(workdir, "nginx-stderr.log"), "nginx")
    try:
        yield port
    finally:
        _stop(process)


APACHE_MODULES = "/usr/lib/apache2/modules"


@contextmanager
def apache(app_port: int, root: str, workdir: str) -> Iterator[int]:
    """Apache (mod_proxy_http, mod_headers, mod_xsendfile) with the documented virtual host; yields its port."""
    executable = which("apache2", "httpd")
    xsendfile = os.path.join(APACHE_MODULES, "mod_xsendfile.so")
    if executable is None or not os.path.exists(xsendfile):
        unavailable("Apache with mod_xsendfile",
                    "`make test` installs Debian's apache2 and libapache2-mod-xsendfile when run as root")
    port = free_port()
    site = _adapt(documented("apache"), listen_from="*:80", listen_to=f"127.0.0.1:{port}", app_port=app_port,
                  root=root)
    modules = "\n".join(f"LoadModule {name}_module {APACHE_MODULES}/mod_{name}.so"
                        for name in ("mpm_event", "authz_core", "rewrite", "proxy", "proxy_http", "headers", "xsendfile"))
    unprivileged = "User nobody\nGroup nogroup\n" if os.geteuid() == 0 else ""
    config = os.path.join(workdir, "apache2.conf")
    with open(config, "w") as f:
        f.write(f"""ServerRoot {workdir}
DefaultRuntimeDir {workdir}
PidFile {workdir}/apache2.pid
Mutex file:{workdir} default
ErrorLog {workdir}/apache2-error.log
LogLevel warn
ServerName 127.0.0.1
Listen 127.0.0.1:{port}
{unprivileged}{modules}
{site}
""")
    process = _start([executable, "-f", config, "-DFOREGROUND"], port, os.path.join(workdir, "apache2-stderr.log"),
                     "Apache")
    try:
        yield port
    finally:
        _stop(process)
