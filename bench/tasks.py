"""Deferred tasks: the local queue on SQLite against huey's ``SqliteHuey``.

Measured side by side in one process, each on its own fresh SQLite file:

- enqueue rate: ``defer(noop)`` against huey's ``noop()`` (a task call);
- end to end: a dispatcher of one thread runs while N no-op tasks are queued,
  timed from the first enqueue until the last task has run (huey: its consumer
  with one worker thread, polling at its fastest);
- the endpoint's cost: ``DeferredApp`` per task (signature check, unpickling,
  context, outcome) over calling the function directly, in-process and as a
  full WSGI request.

Our engine runs SQLite with ``synchronous=NORMAL`` (durable across application
crashes in WAL mode); huey leaves SQLite's default ``FULL``. Both rows of ours
are printed: as configured, and forced to ``FULL`` like huey.

Our dispatcher runs as it does in production: a lease (here one second) checked
before each task starts and renewed by its heartbeat every third of it while
tasks are held; the run prints how many leases were renewed.

Targets: >= 1,000 tasks/s end to end; >= huey end to end; DeferredApp <= 150 us
per task over a direct call.

Then (``--celery yes``, the default; ``--celery only`` for this part alone) the
same 10,000 no-op tasks through ``local://``, ``celery://`` on RabbitMQ and on
Redis, and plain Celery's ``.delay()``: see ``bench/_tasks_celery.py``. Target:
``celery://`` >= 0.8x plain Celery end to end.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import tempfile
import threading
import time
from typing import Any

from bench._common import table

done_count = 0
_count_lock = threading.Lock()
LEASE = 1.0
renewals: list[int] = []  # leases the heartbeat renewed, per end-to-end run of ours


def noop() -> None:
    global done_count
    with _count_lock:
        done_count += 1


def _huey(path: str) -> tuple[Any, Any]:
    from huey import SqliteHuey

    huey = SqliteHuey("bench", filename=path, results=False)
    task = huey.task()(noop)
    return huey, task


def _services(folder: str, synchronous: str | None) -> Any:
    from gaeservices import Services

    services = Services(
        secret_key="bench-key-signing-key-for-the-test-suite", data_dir=folder, environ={}, queue="local://",
        store=f"sqlite:///{folder}/store.sqlite3",
    )
    queue = services.queue  # builds the engine and the table
    if synchronous:
        from sqlalchemy import event

        @event.listens_for(queue.engine, "connect")
        def _sync(dbapi_connection: Any, record: Any) -> None:
            dbapi_connection.execute(f"PRAGMA synchronous={synchronous}")

        queue.engine.dispose()  # reconnect with the pragma
    return services


def _wait_done(target: int, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while done_count < target:
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {done_count} of {target} tasks ran")
        time.sleep(0.0005)


def ours_enqueue(n: int, synchronous: str | None) -> float:
    from gaeservices import defer

    with tempfile.TemporaryDirectory() as folder:
        services = _services(folder, synchronous)
        start = time.perf_counter()
        for _ in range(n):
            defer(noop, _services=services)
        elapsed = time.perf_counter() - start
        services.close()
    return n / elapsed


def huey_enqueue(n: int) -> float:
    with tempfile.TemporaryDirectory() as folder:
        huey, task = _huey(os.path.join(folder, "huey.db"))
        start = time.perf_counter()
        for _ in range(n):
            task()
        elapsed = time.perf_counter() - start
        huey.storage.close()
    return n / elapsed


def ours_end_to_end(n: int, synchronous: str | None) -> float:
    global done_count
    from gaeservices import defer
    from gaeservices.tasks.worker import Dispatcher

    with tempfile.TemporaryDirectory() as folder:
        services = _services(folder, synchronous)
        # A one-second lease: the heartbeat renews the held leases every third of a
        # second during the run, and every task's lease is checked before it starts.
        dispatcher = Dispatcher(services, threads=1, poll=0.01, lease=LEASE).start()
        done_count = 0
        start = time.perf_counter()
        for _ in range(n):
            defer(noop, _services=services)
        _wait_done(n)
        elapsed = time.perf_counter() - start
        dispatcher.stop()
        renewals.append(dispatcher.renewed)
        services.close()
    return n / elapsed


def huey_end_to_end(n: int) -> float:
    global done_count
    with tempfile.TemporaryDirectory() as folder:
        huey, task = _huey(os.path.join(folder, "huey.db"))
        consumer = huey.create_consumer(
            workers=1, worker_type="thread", periodic=False, initial_delay=0.001, backoff=1.0, max_delay=0.01,
            check_worker_health=False,
        )
        consumer._set_signal_handlers = lambda: None  # it runs beside us, not as a process
        consumer.start()
        done_count = 0
        start = time.perf_counter()
        for _ in range(n):
            task()
        _wait_done(n)
        elapsed = time.perf_counter() - start
        consumer.stop(graceful=True)
        huey.storage.close()
    return n / elapsed


def endpoint_overhead(n: int) -> tuple[float, float, float, float]:
    """Seconds per task: direct call, DeferredApp.execute, DeferredApp over WSGI
    (tombstones for named tasks only, as on App Engine), and over WSGI with a
    tombstone for every task (off App Engine: one store read and write more)."""
    from gaeservices import Services
    from gaeservices.tasks import payload
    from gaeservices.tasks.context import TaskContext
    from gaeservices.tasks.endpoint import DeferredApp
    from gaeservices.tasks.immediate import ImmediateQueue

    with tempfile.TemporaryDirectory() as folder:
        services = Services(secret_key="bench-key-signing-key-for-the-test-suite", data_dir=folder, environ={}, queue="immediate://")
        app = DeferredApp(services, tombstones="named")
        body, _ = payload.PayloadCodec(services).seal(
            payload.dumps(noop, (), {}), name="t", queue="default", expires=time.time() + 3600
        )
        context = TaskContext("t", "default", 1)
        immediate: ImmediateQueue = services.queue

        start = time.perf_counter()
        for _ in range(n):
            noop()
        direct = (time.perf_counter() - start) / n
        start = time.perf_counter()
        for _ in range(n):
            app.execute(body, context)
        execute = (time.perf_counter() - start) / n
        immediate.app = app
        start = time.perf_counter()
        for _ in range(n):
            immediate.run(body, name="t")
        wsgi = (time.perf_counter() - start) / n
        immediate.app = DeferredApp(services, tombstones="all")
        codec = payload.PayloadCodec(services)
        few = max(1, n // 10)
        bodies = [
            codec.seal(payload.dumps(noop, (), {}), name=f"t{i}", queue="default", expires=time.time() + 3600)[0]
            for i in range(few)
        ]
        start = time.perf_counter()
        for i, each in enumerate(bodies):
            immediate.run(each, name=f"t{i}")
        wsgi_tombstoned = (time.perf_counter() - start) / few
        services.close()
    return direct, execute, wsgi, wsgi_tombstoned


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench tasks", description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=5000, help="tasks per run (default 5000)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--celery", choices=("yes", "no", "only"), default="yes",
                        help="also (or only) compare celery:// with plain Celery on RabbitMQ and Redis")
    parser.add_argument("--celery-n", type=int, default=10_000, help="tasks per Celery run (default 10000)")
    options = parser.parse_args(argv)
    if options.celery == "only":
        from bench import _tasks_celery

        return _tasks_celery.run(options.celery_n, options.repeats)
    logging.getLogger("huey").setLevel(logging.WARNING)
    n, repeats = options.n, options.repeats

    def median(fn: Any, *args: Any) -> float:
        return statistics.median(fn(*args) for _ in range(repeats))

    # Interleave the contenders so that machine noise hits them alike.
    results: dict[str, list[float]] = {k: [] for k in ("oe", "ofe", "he", "o2e", "of2e", "h2e")}
    for _ in range(repeats):
        results["oe"].append(ours_enqueue(n, None))
        results["ofe"].append(ours_enqueue(n, "FULL"))
        results["he"].append(huey_enqueue(n))
        results["o2e"].append(ours_end_to_end(n, None))
        results["of2e"].append(ours_end_to_end(n, "FULL"))
        results["h2e"].append(huey_end_to_end(n))
    m = {k: statistics.median(v) for k, v in results.items()}
    direct, execute, wsgi, wsgi_all = (
        statistics.median(x) for x in zip(*(endpoint_overhead(20_000) for _ in range(repeats)))
    )

    rows = [
        ["gaeservices local:// (SQLite, synchronous=NORMAL)", f"{m['oe']:,.0f}", f"{m['o2e']:,.0f}",
         f"{m['oe'] / m['he']:.2f}x", f"{m['o2e'] / m['h2e']:.2f}x"],
        ["gaeservices local:// (SQLite, synchronous=FULL)", f"{m['ofe']:,.0f}", f"{m['of2e']:,.0f}",
         f"{m['ofe'] / m['he']:.2f}x", f"{m['of2e'] / m['h2e']:.2f}x"],
        ["huey SqliteHuey (WAL, synchronous=FULL)", f"{m['he']:,.0f}", f"{m['h2e']:,.0f}", "1.00x", "1.00x"],
    ]
    print(f"no-op tasks, {n} per run, medians of {repeats} runs, one worker thread each")
    print(
        f"ours: lease {LEASE:g} s, checked before each task and renewed by the heartbeat every "
        f"{LEASE / 3:.2f} s ({statistics.median(renewals):.0f} leases renewed per run, median)\n"
    )
    print(table(rows, ["queue", "enqueue/s", "end to end/s", "enqueue vs huey", "end to end vs huey"]))
    print()
    rows = [
        ["direct call", f"{direct * 1e6:.2f}", "-"],
        ["DeferredApp.execute (in-process dispatch)", f"{execute * 1e6:.1f}", f"{(execute - direct) * 1e6:.1f}"],
        ["DeferredApp as a WSGI request", f"{wsgi * 1e6:.1f}", f"{(wsgi - direct) * 1e6:.1f}"],
        ["DeferredApp as a WSGI request, tombstone per task (SQLite store)", f"{wsgi_all * 1e6:.1f}",
         f"{(wsgi_all - direct) * 1e6:.1f}"],
    ]
    print(table(rows, ["per task", "us", "added us"]))
    print()
    worst = min(m["o2e"], m["of2e"])
    checks = [
        (">= 1,000 no-op tasks/s end to end", f"{worst:,.0f}/s", worst >= 1000),
        (">= huey end to end (like for like, synchronous=FULL)", f"{m['of2e'] / m['h2e']:.2f}x", m["of2e"] >= m["h2e"]),
        (">= huey end to end (as configured)", f"{m['o2e'] / m['h2e']:.2f}x", m["o2e"] >= m["h2e"]),
        ("DeferredApp adds <= 150 us per task (WSGI path)", f"{(wsgi - direct) * 1e6:.1f} us", wsgi - direct <= 150e-6),
    ]
    for target, value, met in checks:
        print(f"target {target}: {value} -> {'met' if met else 'NOT met'}")
    status = 0 if all(met for _, _, met in checks) else 1
    if options.celery == "yes":
        from bench import _tasks_celery

        status |= _tasks_celery.run(options.celery_n, options.repeats)
    return status


if __name__ == "__main__":
    import sys

    raise SystemExit(main(sys.argv[1:]))
