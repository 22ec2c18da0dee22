"""Real Celery workers on the machine's RabbitMQ and Redis, for the celery:// tests.

Each test run works under a prefix of its own (queue and exchange names, and on
Redis every key), so parallel runs never meet, and removes what it made.

The task functions at the bottom run in the worker's processes: they leave their
traces in files, which the test process reads. The worker is started in this
directory with no PYTHONPATH, so that it finds them only because the worker
puts its current directory on the import path.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from typing import Any

from gaeservices.exceptions import PermanentTaskFailure
from gaeservices.tasks.context import current_task

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
REDIS_HOST = os.environ.get("GAESERVICES_TEST_REDIS_HOST", "127.0.0.1")
REDIS_PORT = int(os.environ.get("GAESERVICES_TEST_REDIS_PORT", "6379"))
AMQP_HOST = os.environ.get("GAESERVICES_TEST_AMQP_HOST", "127.0.0.1")
AMQP_PORT = int(os.environ.get("GAESERVICES_TEST_AMQP_PORT", "5672"))
# Not 15: conftest's redis_url empties that one. Keys carry the run's prefix anyway.
REDIS_DB = int(os.environ.get("GAESERVICES_TEST_REDIS_DB", "11"))
SECRET_KEY = "k-signing-key-for-the-test-suite"


def wait_for(predicate: Callable[[], Any], timeout: float = 30.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


def lines(path: str) -> list[str]:
    try:
        with open(path) as f:
            return f.read().splitlines()
    except FileNotFoundError:
        return []


class Broker:
    """One broker (``amqp`` or ``redis``) under a prefix unique to this run."""

    def __init__(self, kind: str) -> None:
        # imported here: the workers import this module for its task functions
        from conftest import _listening, unavailable

        self.kind = kind
        self.prefix = f"gst-{os.getpid()}-{uuid.uuid4().hex[:8]}-"
        if kind == "amqp":
            if not _listening(AMQP_HOST, AMQP_PORT):
                unavailable("RabbitMQ", f"start rabbitmq-server on {AMQP_HOST}:{AMQP_PORT} (guest/guest)")
            self.broker_url = f"amqp://guest:guest@{AMQP_HOST}:{AMQP_PORT}//"
        else:
            if not _listening(REDIS_HOST, REDIS_PORT):
                unavailable("Redis", f"start redis-server on {REDIS_HOST}:{REDIS_PORT}")
            self.broker_url = f"redis://{REDIS_HOST}:{REDIS_PORT}/{REDIS_DB}"
        self.queues: set[str] = set()

    def url(self, **options: Any) -> str:
        """The celery:// URL of this run, with more URL options."""
        query = "&".join(f"{k}={v}" for k, v in {"prefix": self.prefix, **options}.items())
        return f"celery://{self.broker_url}?{query}"

    def cleanup(self) -> None:
        """Delete every queue, exchange and key this run made."""
        if self.kind == "redis":
            import redis

            client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=REDIS_DB)
            try:
                keys = list(client.scan_iter(match=self.prefix + "*", count=1000))
                if keys:
                    client.delete(*keys)
            finally:
                client.close()
            return
        from kombu import Connection

        names = {self.prefix + q for q in self.queues | {"default"}}
        exchanges = names | {f"{self.prefix}celery.pidbox", f"reply.{self.prefix}celery.pidbox", f"{self.prefix}celeryev"}
        with Connection(self.broker_url) as connection:
            channel = connection.channel()
            for name in names:
                channel.queue_delete(name)
            for name in exchanges:
                channel.exchange_delete(name)
            channel.close()


class CeleryWorker:
    """``celery -A gaeservices.tasks.celery worker`` in a process group of its own."""

    def __init__(
        self,
        env: dict[str, str],
        queues: list[str],
        log_path: str,
        *,
        concurrency: int = 2,
        cwd: str = TESTS_DIR,
        include: tuple[str, ...] = (),
    ) -> None:
        self.env = env
        self.queues = queues
        self.log_path = log_path
        self.concurrency = concurrency
        self.cwd = cwd
        self.include = include
        self.process: subprocess.Popen[bytes] | None = None
        self._log_start = 0

    def command(self) -> list[str]:
        script = os.path.join(os.path.dirname(sys.executable), "celery")
        # The installed script, as users run it: `python -m celery` would put the
        # current directory on the path itself and hide whether we do.
        launcher = [script] if os.path.exists(script) else [sys.executable, "-m", "celery"]
        return launcher + [
            "-A", "gaeservices.tasks.celery", "worker",
            "-Q", ",".join(self.queues),
            "-c", str(self.concurrency),
            "-n", f"gst-{uuid.uuid4().hex[:8]}@%h",
            "--without-mingle", "--without-gossip", "--without-heartbeat",
            "-l", "INFO",
        ] + (["--include", ",".join(self.include)] if self.include else [])

    def start(self, timeout: float = 60.0) -> CeleryWorker:
        self._log_start = os.path.getsize(self.log_path) if os.path.exists(self.log_path) else 0
        log = open(self.log_path, "ab")
        try:
            self.process = subprocess.Popen(
                self.command(), cwd=self.cwd, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        finally:
            log.close()
        try:
            wait_for(lambda: self.process.poll() is not None or " ready." in self.log(), timeout, "the worker to be ready")
        except AssertionError:
            self.kill()
            raise AssertionError(f"the Celery worker did not start:\n{self.log()}") from None
        if self.process.poll() is not None:
            raise AssertionError(f"the Celery worker exited with {self.process.returncode}:\n{self.log()}")
        return self

    def log(self) -> str:
        """What this worker (since its last start) has written."""
        try:
            with open(self.log_path, "rb") as f:
                f.seek(self._log_start)
                return f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def wait_log(self, text: str, timeout: float = 30.0) -> None:
        wait_for(lambda: text in self.log(), timeout, f"{text!r} in the worker's log")

    def stop(self, timeout: float = 30.0) -> None:
        """Warm shutdown (SIGTERM: running tasks finish); SIGKILL after ``timeout``."""
        process = self.process
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        """SIGKILL the worker and its pool processes at once: nothing gets to clean up."""
        process = self.process
        if process is None:
            return
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait(30)


def worker_env(url: str, store_url: str, data_dir: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GAESERVICES_") and k != "PYTHONPATH"}
    env.update(
        GAESERVICES_QUEUE=url,
        GAESERVICES_STORE=store_url,
        GAESERVICES_SECRET_KEY=SECRET_KEY,
        GAESERVICES_DATA_DIR=data_dir,
        **extra,
    )
    return env


# --- task functions (run in the worker) ---------------------------------------------


def _append(path: str, text: str) -> None:
    with open(path, "a") as f:
        f.write(text + "\n")


def record(path: str, text: str) -> None:
    """One line: the text, the task's name, queue, execution count, pid and time."""
    task = current_task()
    assert task is not None
    _append(path, f"{text} {task.name} {task.queue} {task.execution_count} {os.getpid()} {time.time()!r}")


def fail_until(path: str, attempts: int) -> None:
    task = current_task()
    assert task is not None
    _append(path, f"{task.execution_count} {time.time()!r}")
    if task.execution_count < attempts:
        raise RuntimeError(f"attempt {task.execution_count} fails")


def always_fails(path: str) -> None:
    _append(path, f"run {time.time()!r}")
    raise RuntimeError("boom")


def fail_permanently(path: str) -> None:
    _append(path, "run")
    raise PermanentTaskFailure("no such order")


def start_then_block(path: str, release_path: str) -> None:
    """Note the start, wait for ``release_path``, note the end."""
    _append(path, f"start {os.getpid()}")
    while not os.path.exists(release_path):
        time.sleep(0.02)
    _append(path, f"done {os.getpid()}")


def bootstrap() -> None:
    """GAESERVICES_BOOTSTRAP of the test workers: notes which process ran it."""
    path = os.environ.get("CELERY_TEST_BOOTSTRAP_LOG")
    if path:
        _append(path, str(os.getpid()))


class Trap:
    """Unpickling it writes ``path``: proof that a body reached pickle."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (_sprung, (self.path,))


def _sprung(path: str) -> str:
    _append(path, f"unpickled in {os.getpid()}")
    return path


# --- what every delivery did, for the core suite's harness (tests/tasks_backends.py) --------
#
# One line per message of the ``gaeservices.run`` task published (by the test process or
# by a worker: retries, held tasks) and per delivery that ended in a worker:
#   pub <task id> <eta or ->
#   end <task id> <eta or -> <outcome the task returned>
# Appended by every process to one file (short O_APPEND writes do not interleave).

EVENTS_VARIABLE = "CELERY_TEST_EVENTS"
_watched: dict[str, str] = {}  # queue prefix -> events file, in the test process
_connected = False


def _note(path: str, line: str) -> None:
    with open(path, "a") as f:
        f.write(line + "\n")


def _published(sender: Any = None, headers: Any = None, routing_key: Any = None, **_: Any) -> None:
    from gaeservices.tasks.celery import TASK_NAME

    if sender != TASK_NAME or not headers:
        return
    path = os.environ.get(EVENTS_VARIABLE)
    if path is None:
        path = next((p for prefix, p in _watched.items() if str(routing_key).startswith(prefix)), None)
    if path is not None:
        _note(path, f"pub {headers['id']} {headers.get('eta') or '-'}")


def _ended(sender: Any = None, task_id: Any = None, task: Any = None, retval: Any = None, **_: Any) -> None:
    path = os.environ.get(EVENTS_VARIABLE)
    if path is None or task is None or getattr(task, "name", None) != "gaeservices.run":
        return
    _note(path, f"end {task_id} {task.request.eta or '-'} {retval}")


def _connect() -> None:
    global _connected
    if not _connected:
        from celery import signals

        signals.after_task_publish.connect(_published, weak=False)
        signals.task_postrun.connect(_ended, weak=False)
        _connected = True


def watch(prefix: str, path: str) -> None:
    """In the test process: note the messages published under ``prefix`` in ``path``."""
    _watched[prefix] = path
    _connect()


def unwatch(prefix: str) -> None:
    _watched.pop(prefix, None)


if os.environ.get(EVENTS_VARIABLE):  # a worker started with --include celery_fixtures
    _connect()
