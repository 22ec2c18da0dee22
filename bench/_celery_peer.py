"""What the Celery workers of ``python -m bench tasks`` import.

- :func:`noop`: the no-op function every contender runs (deferred through
  ``celery://``, and wrapped as a plain ``@app.task`` for Celery itself);
- ``app``: plain Celery's app, for ``celery -A bench._celery_peer worker``, from the
  ``BENCH_CELERY_*`` variables;
- a ``task_postrun`` handler counting finished tasks in Redis (``BENCH_DONE_KEY``):
  how the benchmark sees, from outside, that a worker ran the last task. Loaded by
  every Celery contender's worker (``--include bench._celery_peer``), so each pays
  the same one ``INCR`` per task.
"""

from __future__ import annotations

import os
from typing import Any

NOOP_TASK = "bench.noop"


def noop() -> None:
    """The task: nothing at all."""


def make_app(broker_url: str, queue: str, *, acks_late: bool, keyprefix: str = "") -> Any:
    from celery import Celery

    app = Celery("bench", broker=broker_url, set_as_current=False)
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        task_ignore_result=True,
        task_default_queue=queue,
        task_acks_late=acks_late,
        task_reject_on_worker_lost=acks_late,
        broker_connection_retry_on_startup=True,
        # namespacing only (so the benchmark can delete its keys); as on celery://
        broker_transport_options={"global_keyprefix": keyprefix} if keyprefix and broker_url.startswith("redis") else {},
    )
    app.task(name=NOOP_TASK, shared=False)(noop)
    return app


def __getattr__(name: str) -> Any:
    if name == "app":  # celery -A bench._celery_peer worker
        return make_app(
            os.environ["BENCH_CELERY_BROKER"],
            os.environ["BENCH_CELERY_QUEUE"],
            acks_late=os.environ.get("BENCH_ACKS_LATE") == "1",
            keyprefix=os.environ.get("BENCH_KEYPREFIX", ""),
        )
    raise AttributeError(name)


# --- counting finished tasks (in the workers) ------------------------------------------

_client: Any = None
_client_pid = 0


def _count(**_: Any) -> None:
    global _client, _client_pid
    if _client is None or _client_pid != os.getpid():  # one connection per pool process
        import redis

        _client = redis.Redis.from_url(os.environ["BENCH_COUNTER_URL"])
        _client_pid = os.getpid()
    _client.incr(os.environ["BENCH_DONE_KEY"])


if os.environ.get("BENCH_DONE_KEY"):
    from celery.signals import task_postrun

    task_postrun.connect(_count, weak=False)
