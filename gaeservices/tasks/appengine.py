"""``appengine://``: deferred tasks through App Engine's push queues (the services SDK).

Each task is a push task POSTed by the platform to ``/_ah/queue/deferred``,
where :class:`~gaeservices.tasks.endpoint.DeferredApp` runs it; route that URL
to ``gaeservices.wsgi.deferred:application`` with ``login: admin`` (examples/appengine).
Retries, backoff, rates and tombstones are the platform's (queue.yaml, or the
task's ``_retry_options``).

``_transactional=True`` is honoured as App Engine honours it: the task is
added if, and only if, the enclosing Datastore transaction commits. Unlike the
SDK's deferred library, a payload too large for a task keeps its
``_transactional``: only a reference travels in the task.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone
from typing import Any

from ..config import BackendURL
from ..exceptions import TaskAlreadyExistsError
from .api import Task, TaskHandle, to_datetime
from .payload import PayloadCodec

__all__ = ["AppEngineQueue"]

# The push-task limit is 100 KiB for the whole task; leave room for URL and headers.
DEFAULT_MAX_PAYLOAD = 100 * 1024 - 4096


class AppEngineQueue:
    """Adds deferred tasks to App Engine push queues."""

    #: Unnamed tasks are named by the platform (it must name transactional ones):
    #: their bodies are signed without a name, and the endpoint runs them only
    #: behind the platform's own task headers.
    assigns_names = True

    def __init__(self, services: Any, *, max_payload: int = DEFAULT_MAX_PAYLOAD) -> None:
        from google.appengine.api import taskqueue

        self.services = services
        self.max_payload = max_payload
        self.codec = PayloadCodec(services)
        self._taskqueue = taskqueue

    @classmethod
    def from_url(cls, url: BackendURL, services: Any) -> AppEngineQueue:
        return cls(services, max_payload=url.option("max_payload", DEFAULT_MAX_PAYLOAD, int))

    def add(self, task: Task) -> TaskHandle:
        taskqueue = self._taskqueue
        options: dict[str, Any] = {
            "url": task.url,
            "headers": {"Content-Type": "application/octet-stream", **task.headers},
        }
        if task.name and task.named:
            options["name"] = task.name
        if task.eta is not None:
            options["eta"] = datetime.fromtimestamp(task.eta, timezone.utc)
        if task.target:
            options["target"] = task.target
        if task.retry_options is not None:
            options["retry_options"] = taskqueue.TaskRetryOptions(
                **{k: v for k, v in task.retry_options.to_dict().items() if v is not None}
            )
        queued = taskqueue.Task(payload=task.body, **options)
        try:
            queued.add(queue_name=task.queue, transactional=bool(task.transactional))
        except (taskqueue.TaskAlreadyExistsError, taskqueue.TombstonedTaskError) as exc:
            raise TaskAlreadyExistsError(
                f"a task named {task.name!r} exists or was tombstoned ({type(exc).__name__})"
            ) from exc
        eta = queued.eta_posix if getattr(queued, "eta_posix", None) else (task.eta or time.time())
        return TaskHandle(queued.name, task.queue, to_datetime(eta))

    def close(self) -> None:
        pass
