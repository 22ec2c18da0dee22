"""The queue backends under the core task suite (tests/test_tasks_contract.py).

Each backend is a *harness*: a ``Services`` whose ``GAESERVICES_QUEUE`` is that
backend, plus the way its tasks get run. The suite is written once against
``defer`` and this small interface, and runs unchanged on every backend listed in
:data:`HARNESSES`; a new backend (``celery://``) adds a factory there -- the
tests do not change.

A harness provides:

- ``services``: the ``Services`` to pass as ``_services``;
- ``run()``: run every task that is due now, and return once they have run
  (retries that come due later need another ``run()``);
- ``run_until(predicate, timeout)``: ``run()`` again and again until
  ``predicate()`` holds (retries, backoffs);
- ``state(name)``: ``"pending"``, ``"done"`` or ``"failed"`` when the backend can
  tell, else None;
- ``tasks``: every :class:`~gaeservices.tasks.api.Task` handed to the backend,
  by name (the bodies a replaying attacker could have captured);
- ``inline``: True when ``defer`` runs the task itself (``immediate://``):
  countdowns are not waited for, and a failure that would be retried raises from
  ``defer`` instead.

Task functions write their evidence to files (``tasks_fixtures.note`` and
friends), so a backend whose workers are other processes reads them as well.
"""

from __future__ import annotations

import io
import os
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from gaeservices import Services
from gaeservices.tasks.api import RetryOptions, Task

SECRET_KEY = "k-signing-key-for-the-test-suite"
#: Small, so the suite's large-payload test goes through the store on every backend.
MAX_PAYLOAD = 2048


class Harness:
    """What every backend's harness shares: the services, and the tasks it was handed."""

    name = "?"
    inline = False

    def __init__(self, services: Services) -> None:
        self.services = services
        self.tasks: dict[str, Task] = {}
        queue = services.queue
        add = queue.add

        def capturing_add(task: Task) -> Any:
            handle = add(task)
            self.tasks[handle.name] = task
            return handle

        queue.add = capturing_add  # type: ignore[method-assign]

    def run(self) -> None:
        raise NotImplementedError

    def run_until(self, predicate: Callable[[], Any], timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            self.run()
            if predicate():
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.name}: timed out after {timeout}s")
            time.sleep(0.02)

    def state(self, name: str) -> str | None:
        return None

    def close(self) -> None:
        self.services.close()


class LocalHarness(Harness):
    """``local://`` on SQLite or PostgreSQL, run by an in-process dispatcher (drained)."""

    def __init__(self, services: Services, label: str) -> None:
        super().__init__(services)
        self.name = label

    def run(self) -> None:
        from gaeservices.tasks.worker import Dispatcher

        Dispatcher(self.services, drain=True, poll=0.05).run()

    def state(self, name: str) -> str | None:
        info = self.services.queue.get(name)
        if info is None:
            return None
        return {"pending": "pending", "done": "done", "failed": "failed"}[info.state]


class ImmediateHarness(Harness):
    """``immediate://``: ``defer`` runs the task through the endpoint before it returns."""

    name = "immediate"
    inline = True

    def run(self) -> None:
        pass

    def state(self, name: str) -> str | None:
        if any(failed == name for failed, _ in self.services.queue.failures):
            return "failed"
        return "done" if name in self.tasks else None


class AppEngineHarness(Harness):
    """``appengine://`` through the SDK's taskqueue stub; this harness plays the platform.

    App Engine POSTs each due push task to its URL with the ``X-AppEngine-*``
    headers, deletes it (leaving a tombstone) on a 2xx answer, and otherwise
    retries it after the backoff of its retry options until they give up. The
    stub keeps the tasks but runs none, so ``run()`` does that delivery: it reads
    the tasks from the stub and POSTs them to the application's ``DeferredApp``.
    """

    name = "appengine"

    def __init__(self, services: Services, testbed: Any) -> None:
        super().__init__(services)
        from gaeservices.tasks.endpoint import DeferredApp

        self.stub = testbed.get_stub("taskqueue")
        self.app = DeferredApp(services, require_task_header=True)
        self.retries: dict[str, int] = {}
        self.due: dict[str, float] = {}
        self.outcomes: dict[str, str] = {}

    def _queues(self) -> list[str]:
        return [q["name"] for q in self.stub.GetQueues()]

    def run(self) -> None:
        from google.appengine.api import taskqueue

        delivered = True
        while delivered:
            delivered = False
            for queue in self._queues():
                for task in self.stub.get_filtered_tasks(queue_names=[queue]):
                    now = time.time()
                    if self.due.get(task.name, task.eta_posix) > now:
                        continue
                    delivered = True
                    status = self._post(task, queue, self.retries.get(task.name, 0))
                    ours = self.tasks.get(task.name)
                    if 200 <= status < 300:
                        # the platform deletes it: success and permanent failure look alike there
                        self.outcomes[task.name] = "finished"
                    else:
                        count = self.retries.get(task.name, 0)
                        retry = (ours.retry_options if ours else None) or RetryOptions()
                        created = ours.eta if ours and ours.eta else now
                        if not retry.gives_up(count, now - created):
                            self.retries[task.name] = count + 1
                            self.due[task.name] = now + retry.backoff(count)
                            self.outcomes[task.name] = "pending"
                            continue
                        self.outcomes[task.name] = "failed"
                    taskqueue.Queue(queue).delete_tasks_by_name(task.name)  # leaves the name's tombstone

    def _post(self, task: Any, queue: str, retries: int) -> int:
        environ = {
            "REQUEST_METHOD": "POST", "SCRIPT_NAME": "", "PATH_INFO": task.url, "QUERY_STRING": "",
            "SERVER_NAME": "localhost", "SERVER_PORT": "80", "SERVER_PROTOCOL": "HTTP/1.1",
            "CONTENT_TYPE": "application/octet-stream", "CONTENT_LENGTH": str(len(task.payload)),
            "HTTP_X_APPENGINE_TASKNAME": task.name, "HTTP_X_APPENGINE_QUEUENAME": queue,
            "HTTP_X_APPENGINE_TASKRETRYCOUNT": str(retries),
            "HTTP_X_APPENGINE_TASKEXECUTIONCOUNT": str(retries),
            "wsgi.input": io.BytesIO(task.payload), "wsgi.errors": io.StringIO(),
            "wsgi.version": (1, 0), "wsgi.url_scheme": "https", "wsgi.multithread": True,
            "wsgi.multiprocess": False, "wsgi.run_once": False,
        }
        statuses: list[str] = []
        b"".join(self.app(environ, lambda status, headers, exc_info=None: statuses.append(status)))
        return int(statuses[0][:3])

    def state(self, name: str) -> str | None:
        state = self.outcomes.get(name, "pending" if name in self.tasks else None)
        return None if state == "finished" else state


def _services(tmp_path: Any, queue: str, store: str) -> Services:
    return Services(
        secret_key=SECRET_KEY, data_dir=str(tmp_path / "data"), environ={}, queue=queue, store=store
    )


def local_sqlite(request: Any, tmp_path: Any) -> Harness:
    store = f"sqlite:///{tmp_path}/store.sqlite3"
    return LocalHarness(_services(tmp_path, f"local://?max_payload={MAX_PAYLOAD}", store), "local-sqlite")


def local_postgresql(request: Any, tmp_path: Any) -> Harness:
    store = request.getfixturevalue("postgres_url")
    return LocalHarness(_services(tmp_path, f"local://?max_payload={MAX_PAYLOAD}", store), "local-postgresql")


def immediate(request: Any, tmp_path: Any) -> Harness:
    store = f"sqlite:///{tmp_path}/store.sqlite3"
    return ImmediateHarness(_services(tmp_path, f"immediate://?max_payload={MAX_PAYLOAD}", store))


def appengine(request: Any, tmp_path: Any) -> Harness:
    testbed = request.getfixturevalue("testbed")
    # The platform's queues come from queue.yaml: "default" and "mail", as an app declares them.
    folder = tmp_path / "app"
    folder.mkdir()
    (folder / "queue.yaml").write_text("queue:\n- name: default\n  rate: 100/s\n- name: mail\n  rate: 100/s\n")
    testbed.init_taskqueue_stub(root_path=str(folder))
    store = f"sqlite:///{tmp_path}/store.sqlite3"
    return AppEngineHarness(_services(tmp_path, f"appengine://?max_payload={MAX_PAYLOAD}", store), testbed)


#: Backend label -> factory(request, tmp_path) -> Harness. The celery backend adds its
#: own entries here (a real broker and worker behind ``run()``).
HARNESSES: dict[str, Callable[[Any, Any], Harness]] = {
    "local-sqlite": local_sqlite,
    "local-postgresql": local_postgresql,
    "immediate": immediate,
    "appengine": appengine,
}


@pytest.fixture(params=sorted(HARNESSES))
def backend(request: Any, tmp_path: Any) -> Iterator[Harness]:
    harness = HARNESSES[request.param](request, tmp_path)
    try:
        yield harness
    finally:
        harness.close()


@pytest.fixture
def evidence(tmp_path: Any) -> str:
    """A file the suite's task functions append their lines to."""
    return os.path.join(str(tmp_path), "evidence.txt")


def lines(path: str) -> list[str]:
    try:
        with open(path) as f:
            return f.read().splitlines()
    except FileNotFoundError:
        return []
