"""Mail: 1,000 messages to a local aiosmtpd, ours deferred through a worker against Django's SMTP backend.

One counting SMTP server (aiosmtpd, a process of its own, ``bench._smtp_sink``)
receives every contender's 1,000 messages, one recipient each, the same text.
A run is timed from the first message built until the server has counted the
last one:

- Django ``send_mail`` one by one (its SMTP backend opens a connection per call);
- Django ``get_connection().send_messages`` of the 1,000 (one connection);
- gaeservices ``send_mail(defer=True)``: each call queues a task on the local
  queue (SQLite, a fresh file per run) and returns; a ``gaeservices worker``
  process (started before the run, ``--poll 0.01``: tasks queued by another
  process are seen by polling) sends them through
  ``smtp://``, reusing its connection and recording each delivery in the store
  before acknowledging the task. Also printed: how fast ``send_mail`` returned
  (what a request handler pays), and ``send_mail(defer=False)`` in the
  benchmark's own process.

Contenders take turns run by run, so machine noise hits them alike; medians.
Targets: deferred (worker with 2 threads, one per CPU of the machines these figures
come from) >= 1.5x Django one by one, and >= 0.9x Django's one-connection batch
(the server, in Python, is the floor both share). The 1-thread worker is shown too.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from typing import IO, Any

from bench._common import table

SENDER = "Bench Sender <sender@example.com>"
SUBJECT = "Your weekly report"
BODY = "Hello,\n\nthis is the weekly report you asked for. Nothing much happened.\n\n-- \nThe bench\n"
KEY = "bench-key-signing-key-for-the-test-suite"


class Sink:
    """The counting server: a child process; ``wait(n)`` returns once it has counted n more."""

    def __init__(self, every: int) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench._smtp_sink", str(every)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )
        assert self.proc.stdout is not None
        self.out: IO[str] = self.proc.stdout
        line = self.out.readline()
        self.port = int(line.split()[1])

    def wait(self) -> int:
        line = self.out.readline()
        if not line:
            raise RuntimeError("the SMTP sink exited")
        return int(line.split()[1])

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(10)


def _django(port: int) -> None:
    import django
    from django.conf import settings

    if not settings.configured:
        settings.configure(
            EMAIL_BACKEND="django.core.mail.backends.smtp.EmailBackend",
            EMAIL_HOST="127.0.0.1",
            EMAIL_PORT=port,
            DEFAULT_CHARSET="utf-8",
        )
        django.setup()


def django_one_by_one(sink: Sink, n: int) -> float:
    from django.core.mail import send_mail

    start = time.perf_counter()
    for i in range(n):
        send_mail(SUBJECT, BODY, SENDER, [f"reader{i}@example.com"])
    sink.wait()
    return n / (time.perf_counter() - start)


def django_batch(sink: Sink, n: int) -> float:
    from django.core.mail import EmailMessage, get_connection

    start = time.perf_counter()
    messages = [EmailMessage(SUBJECT, BODY, SENDER, [f"reader{i}@example.com"]) for i in range(n)]
    connection = get_connection()
    connection.send_messages(messages)
    sink.wait()
    return n / (time.perf_counter() - start)


class Deferred:
    """Our services and a worker process on a fresh SQLite file for each run."""

    def __init__(self, port: int, threads: int) -> None:
        from gaeservices import Services

        self.folder = tempfile.mkdtemp(prefix="bench-mail-")
        self.env = dict(
            os.environ,
            GAESERVICES_STORE=f"sqlite:///{self.folder}/store.sqlite3",
            GAESERVICES_QUEUE="local://",
            GAESERVICES_MAIL=f"smtp://127.0.0.1:{port}",
            GAESERVICES_SECRET_KEY=KEY,
            GAESERVICES_DATA_DIR=self.folder,
            EMAIL_QUEUE_NAME="mail",
        )
        self.services = Services(environ=self.env)
        self.services.queue  # the table exists before the worker looks
        self.worker = subprocess.Popen(
            [sys.executable, "-m", "gaeservices", "worker", "--queues", "mail", "--threads", str(threads),
             "--poll", "0.01", "--log-level", "WARNING"],
            env=self.env,
        )
        time.sleep(1.0)  # let it start and settle into polling

    def close(self) -> None:
        self.worker.terminate()
        self.worker.wait(30)
        self.services.close()
        shutil.rmtree(self.folder, ignore_errors=True)


def ours_deferred(sink: Sink, n: int, threads: int) -> tuple[float, float]:
    from gaeservices import send_mail

    deferred = Deferred(sink.port, threads)
    try:
        start = time.perf_counter()
        for i in range(n):
            send_mail(SENDER, [f"reader{i}@example.com"], SUBJECT, BODY, services=deferred.services)
        queued = time.perf_counter() - start
        sink.wait()
        elapsed = time.perf_counter() - start
    finally:
        deferred.close()
    return n / elapsed, n / queued


def ours_direct(sink: Sink, n: int) -> float:
    from gaeservices import Services, send_mail

    folder = tempfile.mkdtemp(prefix="bench-mail-")
    services = Services(secret_key=KEY, data_dir=folder, environ={}, mail=f"smtp://127.0.0.1:{sink.port}")
    try:
        start = time.perf_counter()
        for i in range(n):
            send_mail(SENDER, [f"reader{i}@example.com"], SUBJECT, BODY, defer=False, services=services)
        sink.wait()
        return n / (time.perf_counter() - start)
    finally:
        services.close()
        shutil.rmtree(folder, ignore_errors=True)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench mail", description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=1000, help="messages per run (default 1000)")
    parser.add_argument("--repeats", type=int, default=5)
    options = parser.parse_args(argv)
    n, repeats = options.n, options.repeats

    sink = Sink(n)
    _django(sink.port)
    runs: dict[str, list[float]] = {k: [] for k in ("dj1", "djb", "d1", "d2", "q1", "direct")}
    try:
        for _ in range(repeats):
            runs["dj1"].append(django_one_by_one(sink, n))
            runs["djb"].append(django_batch(sink, n))
            e2e, queued = ours_deferred(sink, n, threads=1)
            runs["d1"].append(e2e)
            runs["q1"].append(queued)
            runs["d2"].append(ours_deferred(sink, n, threads=2)[0])
            runs["direct"].append(ours_direct(sink, n))
    finally:
        sink.close()
    m = {k: statistics.median(v) for k, v in runs.items()}

    def ratios(value: float) -> list[str]:
        return [f"{value / m['dj1']:.2f}x", f"{value / m['djb']:.2f}x"]

    rows = [
        ["Django send_mail, one by one (a connection each)", f"{m['dj1']:,.0f}", *ratios(m["dj1"])],
        ["Django send_messages, one connection", f"{m['djb']:,.0f}", *ratios(m["djb"])],
        ["gaeservices send_mail, deferred, worker 1 thread", f"{m['d1']:,.0f}", *ratios(m["d1"])],
        ["gaeservices send_mail, deferred, worker 2 threads", f"{m['d2']:,.0f}", *ratios(m["d2"])],
        ["gaeservices send_mail(defer=False), in process", f"{m['direct']:,.0f}", *ratios(m["direct"])],
    ]
    print(f"{n} messages per run to a local aiosmtpd that only counts; medians of {repeats} runs, "
          f"Python {sys.version.split()[0]}\n")
    print(table(rows, ["contender", "mails/s (until the server has them all)", "vs Django 1 by 1",
                       "vs Django batch"]))
    print(f"\ngaeservices send_mail(defer=True) returned at {m['q1']:,.0f} calls/s "
          "(what a request handler pays per mail)\n")
    spread = {k: f"{min(v):,.0f}-{max(v):,.0f}" for k, v in runs.items()}
    print("ranges: " + ", ".join(f"{k} {v}" for k, v in spread.items()) + "\n")
    ours = m["d2"]
    checks: list[tuple[str, str, Any]] = [
        (">= 1.5x Django one by one (deferred, worker 2 threads)", f"{ours / m['dj1']:.2f}x", ours >= 1.5 * m["dj1"]),
        (">= 0.9x Django one-connection batch (deferred, worker 2 threads)", f"{ours / m['djb']:.2f}x",
         ours >= 0.9 * m["djb"]),
    ]
    for target, value, met in checks:
        print(f"target {target}: {value} -> {'met' if met else 'NOT met'}")
    return 0 if all(met for _, _, met in checks) else 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
