"""``immediate://``: each deferred task runs at once, inside ``defer``, for tests.

The task goes through :class:`~gaeservices.tasks.endpoint.DeferredApp` as a
real WSGI request (signature check, bootstrap, outcome rules), so a test sees
what a worker would do. What a test needs to see differently:

- a task that would be retried (any exception, :class:`SingularTaskFailure`)
  re-raises its exception from ``defer``; a :class:`PermanentTaskFailure`, or a
  body the endpoint refuses, is logged and recorded in
  :attr:`ImmediateQueue.failures`, as a worker would dead-letter it;
- ``_countdown`` and ``_eta`` are recorded on the handle but not waited for;
- names the application gives de-duplicate (for the queue object's lifetime);
- ``_transactional`` is refused: there is no transaction to join.
"""

from __future__ import annotations

import io
import threading
import time
from typing import Any

from ..config import BackendURL
from ..exceptions import TaskAlreadyExistsError, UnsupportedTaskOptionError
from .api import Task, TaskHandle, to_datetime
from .endpoint import MAX_BODY, RESULT_ENVIRON_KEY, DeferredApp, TaskResult

__all__ = ["ImmediateQueue"]


class ImmediateQueue:
    """Runs every task inline through :class:`DeferredApp`."""

    max_payload: int | None = None

    def __init__(self, services: Any, *, max_payload: int | None = None) -> None:
        self.services = services
        self.max_payload = max_payload
        # Its own deliveries: replays are not a concern, so only named tasks keep tombstones.
        self.app = DeferredApp(services, require_task_header=False, max_body=MAX_BODY, tombstones="named")
        self.codec = self.app.codec
        self.names: set[str] = set()
        self.failures: list[tuple[str, TaskResult]] = []
        self._lock = threading.Lock()

    @classmethod
    def from_url(cls, url: BackendURL, services: Any) -> ImmediateQueue:
        return cls(services, max_payload=url.option("max_payload", None, int))

    def add(self, task: Task) -> TaskHandle:
        if task.transactional:
            raise UnsupportedTaskOptionError(
                "immediate:// cannot honour _transactional: it has no transaction to join "
                "(appengine:// can; elsewhere enqueue after your transaction commits)"
            )
        name = task.name or ""
        if task.named:
            with self._lock:
                if name in self.names:
                    raise TaskAlreadyExistsError(f"a task named {name!r} was already added")
                self.names.add(name)
        eta = task.eta if task.eta is not None else time.time()
        result = self.run(task.body, name=name, queue=task.queue, eta=eta, url=task.url, headers=task.headers)
        if not result.done and result.exception is not None:
            raise result.exception
        if result.outcome != "success":  # a permanent failure, or a body the endpoint refused
            self.failures.append((name, result))
        return TaskHandle(name, task.queue, to_datetime(eta))

    def run(
        self,
        body: bytes,
        *,
        name: str,
        queue: str = "default",
        eta: float | None = None,
        url: str = "/_ah/queue/deferred",
        headers: dict[str, str] | None = None,
        retry_count: int = 0,
    ) -> TaskResult:
        """POST ``body`` to the endpoint as the task queue would; return the result."""
        environ: dict[str, Any] = {
            "HTTP_" + key.upper().replace("-", "_"): value for key, value in (headers or {}).items()
        }
        environ |= {
            "REQUEST_METHOD": "POST",
            "SCRIPT_NAME": "",
            "PATH_INFO": url,
            "QUERY_STRING": "",
            "SERVER_NAME": "localhost",
            "SERVER_PORT": "80",
            "SERVER_PROTOCOL": "HTTP/1.1",
            "CONTENT_TYPE": "application/octet-stream",
            "CONTENT_LENGTH": str(len(body)),
            "HTTP_X_APPENGINE_TASKNAME": name,
            "HTTP_X_APPENGINE_QUEUENAME": queue,
            "HTTP_X_APPENGINE_TASKRETRYCOUNT": str(retry_count),
            "HTTP_X_APPENGINE_TASKEXECUTIONCOUNT": str(retry_count),
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": "http",
            "wsgi.input": io.BytesIO(body),
            "wsgi.errors": io.StringIO(),
            "wsgi.multithread": True,
            "wsgi.multiprocess": False,
            "wsgi.run_once": False,
        }
        if eta is not None:
            environ["HTTP_X_APPENGINE_TASKETA"] = repr(eta)
        b"".join(self.app(environ, lambda status, headers, exc_info=None: None))
        return environ[RESULT_ENVIRON_KEY]

    def close(self) -> None:
        pass
