"""A Django 6 ``django.tasks`` backend that enqueues through ``defer``.

.. code-block:: python

    TASKS = {
        "default": {
            "BACKEND": "gaeservices.django.tasks.TaskBackend",
            "QUEUES": ["default", "mail"],            # names defer() accepts
            "OPTIONS": {"result_ttl": 7 * 24 * 3600},  # how long results are kept
        }
    }

``my_task.enqueue(...)`` defers a call of the task through the configured queue
(``GAESERVICES_QUEUE``: the local SQL queue and its worker, App Engine push queues,
...), with the task's ``queue_name`` as the queue and ``run_after`` as its ETA.
Arguments are JSON, as Django requires. The task's result -- status, times,
return value, errors, worker ids -- is a small JSON record in the store
(``services.store``), so ``get_result(id)`` answers from any process and on any
queue backend. Django's signals are sent where the events happen:
``task_enqueued`` where the task is queued, ``task_started`` and
``task_finished`` in the worker.

Inside ``transaction.atomic()`` a task is queued when the transaction commits,
and not at all when it rolls back (``enqueue`` still returns its result at
once, READY). A task that raises fails, as with Django's own backends: it is
not retried. Priorities are not supported (no queue backend orders by them).
"""

from __future__ import annotations

from typing import Any

try:
    from ._tasks import DEFAULT_RESULT_TTL, TaskBackend, run
except ImportError as missing:  # Django 5.2: django.tasks does not exist
    if not (missing.name or "").startswith("django"):
        raise
    import django
    from django.core.exceptions import ImproperlyConfigured

    _WHY = f"TASKS needs django.tasks, which Django 6.0 brought; this is Django {django.get_version()}"
    DEFAULT_RESULT_TTL = 7 * 24 * 3600

    class TaskBackend:  # type: ignore[no-redef]
        """Stands in on Django 5.2, where ``TASKS`` is not read: refuses to be built."""

        def __init__(self, alias: str, params: dict[str, Any]) -> None:
            raise ImproperlyConfigured(_WHY)

    def run(alias: str, result_id: str, ttl: int) -> None:
        raise ImproperlyConfigured(_WHY)


__all__ = ["TaskBackend", "run", "DEFAULT_RESULT_TTL"]
