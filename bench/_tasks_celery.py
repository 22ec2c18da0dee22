"""Deferred tasks through Celery: ``celery://`` against plain Celery, ``local://`` beside them.

The same N no-op tasks (:func:`bench._celery_peer.noop`) through:

- ``local://`` on SQLite, run by ``gaeservices worker --threads 2`` in its own process;
- ``celery://`` on RabbitMQ and on Redis: ``defer(noop)``, run by
  ``celery -A gaeservices.tasks.celery worker -c 2`` (prefork);
- plain Celery on the same brokers: ``@app.task`` ``noop.delay()``, run by
  ``celery -A bench._celery_peer worker -c 2``, as Celery ships (acknowledged
  before the run) and with ``acks_late`` + ``task_reject_on_worker_lost``, which
  ``celery://`` always sets.

Each worker is started once, warmed up with a few tasks, and kept for all runs;
the contenders take turns run by run. Enqueue rate: N calls in a loop in this
process, while the worker consumes. End to end: from the first enqueue until the
worker has run the last task. Celery workers count finished tasks with one Redis
``INCR`` per task (a ``task_postrun`` handler, in every Celery contender alike);
the local queue's finished tasks are counted in its table. Workers log at WARNING.
"""

from __future__ import annotations

import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from typing import Any

from bench._common import table

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
AMQP_URL = os.environ.get("BENCH_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//")
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/12")
SECRET = "bench-key-signing-key-for-the-test-suite"
WARMUP = 50


def _celery_command() -> list[str]:
    script = os.path.join(os.path.dirname(sys.executable), "celery")
    return [script] if os.path.exists(script) else [sys.executable, "-m", "celery"]


class Contender:
    """One way of running the tasks: a worker process, how to enqueue, how to count."""

    def __init__(self, label: str, broker: str) -> None:
        self.label = label
        self.broker = broker
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = ""

    def start(self, folder: str) -> None:
        raise NotImplementedError

    def enqueue(self) -> None:
        raise NotImplementedError

    def finished(self) -> int:
        raise NotImplementedError

    def _spawn(self, command: list[str], env: dict[str, str], folder: str) -> None:
        self.log_path = os.path.join(folder, f"{uuid.uuid4().hex[:8]}.log")
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        self._wait(WARMUP, warm=True)

    def _wait(self, target: int, warm: bool = False, timeout: float = 300.0) -> None:
        if warm:
            for _ in range(target):
                self.enqueue()
        deadline = time.monotonic() + timeout
        while self.finished() < target:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"{self.label}: the worker exited:\n{open(self.log_path).read()[-3000:]}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.label}: {self.finished()} of {target} tasks ran")
            time.sleep(0.002)

    def run(self, n: int) -> tuple[float, float]:
        """(enqueue/s, end to end/s) for ``n`` tasks."""
        base = self.finished()
        start = time.perf_counter()
        for _ in range(n):
            self.enqueue()
        enqueued = time.perf_counter()
        self._wait(base + n)
        done = time.perf_counter()
        return n / (enqueued - start), n / (done - start)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def cleanup(self) -> None:
        pass


class _Counted(Contender):
    """A Celery worker whose finished tasks a task_postrun handler counts in Redis."""

    def __init__(self, label: str, broker: str, prefix: str) -> None:
        super().__init__(label, broker)
        self.prefix = prefix
        self.key = f"bench:{prefix}done"
        import redis

        self.counter = redis.Redis.from_url(REDIS_URL)

    def finished(self) -> int:
        return int(self.counter.get(self.key) or 0)

    def _env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("GAESERVICES_", "BENCH_"))}
        env.update(BENCH_DONE_KEY=self.key, BENCH_COUNTER_URL=REDIS_URL, **extra)
        return env

    def _worker(self, app: str, queue: str) -> list[str]:
        return _celery_command() + [
            "-A", app, "worker", "-Q", queue, "-c", "2", "-P", "prefork",
            "-n", f"bench-{uuid.uuid4().hex[:8]}@%h", "--include", "bench._celery_peer",
            "--without-heartbeat", "--without-mingle", "--without-gossip", "-l", "WARNING",
        ]

    def cleanup(self) -> None:
        self.counter.delete(self.key)
        _purge(self.broker, self.prefix, [self.queue_name])
        self.counter.close()

    @property
    def queue_name(self) -> str:
        raise NotImplementedError


class Ours(_Counted):
    def __init__(self, broker: str) -> None:
        super().__init__(f"gaeservices celery:// ({_broker_name(broker)})", broker, f"bench-{uuid.uuid4().hex[:8]}-")
        self.url = f"celery://{broker}?prefix={self.prefix}"

    @property
    def queue_name(self) -> str:
        return self.prefix + "default"

    def start(self, folder: str) -> None:
        from gaeservices import Services, defer

        from bench._celery_peer import noop

        store = f"sqlite:///{folder}/ours-store.sqlite3"
        self.services = Services(secret_key=SECRET, data_dir=folder, store=store, queue=self.url, environ={})
        services = self.services

        def enqueue() -> None:
            defer(noop, _services=services)

        self.enqueue = enqueue  # type: ignore[method-assign]
        env = self._env(GAESERVICES_QUEUE=self.url, GAESERVICES_STORE=store, GAESERVICES_SECRET_KEY=SECRET,
                        GAESERVICES_DATA_DIR=folder)
        self._spawn(self._worker("gaeservices.tasks.celery", self.queue_name), env, folder)

    def stop(self) -> None:
        super().stop()
        self.services.close()


class Plain(_Counted):
    def __init__(self, broker: str, *, acks_late: bool) -> None:
        late = ", acks_late" if acks_late else ""
        super().__init__(f"Celery @app.task .delay() ({_broker_name(broker)}{late})", broker,
                         f"bench-{uuid.uuid4().hex[:8]}-")
        self.acks_late = acks_late

    @property
    def queue_name(self) -> str:
        return self.prefix + "plain"

    def start(self, folder: str) -> None:
        from bench._celery_peer import NOOP_TASK, make_app

        self.app = make_app(self.broker, self.queue_name, acks_late=self.acks_late, keyprefix=self.prefix)
        self.enqueue = self.app.tasks[NOOP_TASK].delay  # type: ignore[method-assign]
        env = self._env(
            BENCH_CELERY_BROKER=self.broker, BENCH_CELERY_QUEUE=self.queue_name,
            BENCH_ACKS_LATE="1" if self.acks_late else "0", BENCH_KEYPREFIX=self.prefix,
        )
        self._spawn(self._worker("bench._celery_peer", self.queue_name), env, folder)

    def stop(self) -> None:
        super().stop()
        self.app.close()


class Local(Contender):
    def __init__(self) -> None:
        super().__init__("gaeservices local:// (SQLite, gaeservices worker --threads 2)", "sqlite")

    def start(self, folder: str) -> None:
        import sqlite3

        from gaeservices import Services, defer

        from bench._celery_peer import noop

        store = f"sqlite:///{folder}/local-store.sqlite3"
        self.services = Services(secret_key=SECRET, data_dir=folder, store=store, queue="local://", environ={})
        services = self.services
        table_name = services.queue.table.name  # type: ignore[attr-defined]

        def enqueue() -> None:
            defer(noop, _services=services)

        self.enqueue = enqueue  # type: ignore[method-assign]
        self._db = sqlite3.connect(f"{folder}/local-store.sqlite3")
        self._count_sql = f"SELECT count(*) FROM {table_name} WHERE state = 1"
        env = {k: v for k, v in os.environ.items() if not k.startswith("GAESERVICES_")}
        env.update(GAESERVICES_QUEUE="local://", GAESERVICES_STORE=store, GAESERVICES_SECRET_KEY=SECRET,
                   GAESERVICES_DATA_DIR=folder)
        command = [sys.executable, "-m", "gaeservices", "worker", "--threads", "2", "--poll", "0.01",
                   "--log-level", "WARNING"]
        self._spawn(command, env, folder)

    def finished(self) -> int:
        return int(self._db.execute(self._count_sql).fetchone()[0])

    def stop(self) -> None:
        super().stop()
        self._db.close()
        self.services.close()


def _broker_name(url: str) -> str:
    return "RabbitMQ" if url.startswith("amqp") else "Redis"


def _purge(broker: str, prefix: str, queues: list[str]) -> None:
    if broker.startswith("redis"):
        import redis

        client = redis.Redis.from_url(broker)
        keys = list(client.scan_iter(match=prefix + "*", count=1000))
        if keys:
            client.delete(*keys)
        client.close()
        return
    from kombu import Connection

    with Connection(broker) as connection:
        channel = connection.channel()
        for name in queues:
            channel.queue_delete(name)
            channel.exchange_delete(name)
        for name in (f"{prefix}celery.pidbox", f"reply.{prefix}celery.pidbox", f"{prefix}celeryev"):
            channel.exchange_delete(name)
        channel.close()


def run(n: int = 10_000, repeats: int = 5, log: Callable[[str], Any] = print) -> int:
    """Measure every contender; print the table and the target; 0 when it is met."""
    import logging

    logging.getLogger("celery").setLevel(logging.WARNING)
    contenders: list[Contender] = [Local()]
    for broker in (AMQP_URL, REDIS_URL):
        contenders += [Ours(broker), Plain(broker, acks_late=False), Plain(broker, acks_late=True)]
    results: dict[str, list[tuple[float, float]]] = {c.label: [] for c in contenders}
    with tempfile.TemporaryDirectory() as folder:
        try:
            for contender in contenders:
                contender.start(folder)
            for repeat in range(repeats):
                for contender in contenders:  # in turns, so noise hits them alike
                    results[contender.label].append(contender.run(n))
                log(f"  run {repeat + 1} of {repeats} done")
        finally:
            for contender in contenders:
                try:
                    contender.stop()
                finally:
                    contender.cleanup()
    median = {
        label: (statistics.median(e for e, _ in runs), statistics.median(t for _, t in runs))
        for label, runs in results.items()
    }
    rows = []
    checks = []
    for broker in (AMQP_URL, REDIS_URL):
        ours, plain, late = (c.label for c in contenders if c.broker == broker)
        for label in (ours, plain, late):
            e, t = median[label]
            rows.append([label, f"{e:,.0f}", f"{t:,.0f}",
                         f"{e / median[plain][0]:.2f}x", f"{t / median[plain][1]:.2f}x", f"{t / median[late][1]:.2f}x"])
        ratio = median[ours][1] / median[plain][1]
        checks.append((f"celery:// >= 0.8x plain Celery end to end ({_broker_name(broker)})", f"{ratio:.2f}x", ratio >= 0.8))
    local = contenders[0].label
    e, t = median[local]
    rows.insert(0, [local, f"{e:,.0f}", f"{t:,.0f}", "-", "-", "-"])
    log(f"\nthe same no-op tasks through each queue: {n} per run, medians of {repeats} runs; "
        "workers in their own processes (Celery: prefork -c 2)\n")
    log(table(rows, ["queue", "enqueue/s", "end to end/s", "enqueue vs plain", "end to end vs plain",
                     "end to end vs plain acks_late"]))
    log("")
    log("per run (enqueue/s, end to end/s): " + "; ".join(
        f"{label}: " + ", ".join(f"{e:,.0f}/{t:,.0f}" for e, t in runs) for label, runs in results.items()))
    log("")
    for target, value, met in checks:
        log(f"target {target}: {value} -> {'met' if met else 'NOT met'}")
    return 0 if all(met for _, _, met in checks) else 1
