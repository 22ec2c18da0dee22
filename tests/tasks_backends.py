"""The queue backends under the core task suite (tests/test_tasks_contract.py).

Each backend is a *harness*: a ``Services`` whose ``GAESERVICES_QUEUE`` is that
backend, plus the way its tasks get run. The suite is written once against
``defer`` and this small interface, and runs unchanged on every backend listed in
:data:`HARNESSES`; a new backend adds a factory there -- the tests do not
change. ``celery://`` runs on RabbitMQ and on Redis, each with a real ``celery
worker`` started once for the module, which every test of the module shares
(each test defers under names of its own, into one store the worker reads).

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
from datetime import datetime
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


class Deliveries:
    """What a Celery worker did with each message, read from the events file it appends to.

    Every message of the ``gaeservices.run`` task is noted when published (by the
    test process, or by the worker: a retry, a task held until it is due) with its
    task id and ETA, and again when a delivery of it ended, with the outcome the
    backend's Celery task returned (``celery.OUTCOMES``).
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._offset = 0
        self._rest = b""
        self.published: dict[tuple[str, str], int] = {}
        self.ended: dict[tuple[str, str], int] = {}
        self.outcome: dict[str, str] = {}

    def read(self) -> None:
        try:
            with open(self.path, "rb") as f:
                f.seek(self._offset)
                data = f.read()
        except FileNotFoundError:
            return
        self._offset += len(data)
        *complete, self._rest = (self._rest + data).split(b"\n")
        for line in complete:
            kind, task_id, eta, *outcome = line.decode().split(" ", 3)
            key = (task_id, eta)
            if kind == "pub":
                self.published[key] = self.published.get(key, 0) + 1
            else:
                self.ended[key] = self.ended.get(key, 0) + 1
                self.outcome[task_id] = outcome[0] if outcome else "?"

    def due_and_unfinished(self, now: float) -> list[tuple[str, str]]:
        """Messages published with an ETA up to ``now`` (or none) whose delivery has not ended."""
        self.read()
        return [
            key for key, count in self.published.items()
            if self.ended.get(key, 0) < count
            and (key[1] == "-" or datetime.fromisoformat(key[1]).timestamp() <= now)
        ]


class CeleryWorkerSetup:
    """One broker under a prefix of its own, one `celery worker` on it, one store they share."""

    def __init__(self, kind: str, folder: Any) -> None:
        from celery_fixtures import Broker, CeleryWorker, watch, worker_env

        self.kind = kind
        self.broker = Broker(kind)
        self.broker.queues |= {"default", "mail"}
        self.store = f"sqlite:///{folder}/store.sqlite3"
        self.url = self.broker.url(max_payload=MAX_PAYLOAD)
        self.deliveries = Deliveries(str(folder / "events"))
        watch(self.broker.prefix, self.deliveries.path)
        env = worker_env(self.url, self.store, str(folder / "worker-data"), CELERY_TEST_EVENTS=self.deliveries.path)
        self.worker = CeleryWorker(
            env, [self.broker.prefix + "default", self.broker.prefix + "mail"], str(folder / "worker.log"),
            include=("celery_fixtures",),
        )

    def start(self) -> None:
        self.worker.start()

    def close(self) -> None:
        from celery_fixtures import unwatch

        try:
            self.worker.stop()
        finally:
            unwatch(self.broker.prefix)
            self.broker.cleanup()


def _celery_worker(kind: str, tmp_path_factory: Any) -> Iterator[CeleryWorkerSetup]:
    setup = CeleryWorkerSetup(kind, tmp_path_factory.mktemp(f"contract-celery-{kind}"))
    try:
        setup.start()
        yield setup
    finally:
        setup.close()


@pytest.fixture(scope="module")
def celery_amqp_worker(tmp_path_factory: Any) -> Iterator[CeleryWorkerSetup]:
    yield from _celery_worker("amqp", tmp_path_factory)


@pytest.fixture(scope="module")
def celery_redis_worker(tmp_path_factory: Any) -> Iterator[CeleryWorkerSetup]:
    yield from _celery_worker("redis", tmp_path_factory)


class CeleryHarness(Harness):
    """``celery://`` on a real broker, run by a real ``celery worker`` (a module's, shared).

    ``run()`` waits until every message that is due has been delivered and its
    delivery ended in the worker (ran, refused, retried or held: a retry or a held
    task is a new message, due later); ``state()`` is the outcome of a task's
    latest delivery, or pending while a message of it is on its way.
    """

    RUN_TIMEOUT = 60.0

    def __init__(self, services: Services, setup: CeleryWorkerSetup) -> None:
        super().__init__(services)
        self.name = f"celery-{setup.kind}"
        self.setup = setup

    def run(self) -> None:
        now = time.time()
        deadline = time.monotonic() + self.RUN_TIMEOUT
        while True:
            waiting = self.setup.deliveries.due_and_unfinished(now)
            if not waiting:
                return
            process = self.setup.worker.process
            if process is None or process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(
                    f"{self.name}: {len(waiting)} due message(s) not delivered ({waiting[:5]}); "
                    f"the worker's log:\n{self.setup.worker.log()[-4000:]}"
                )
            time.sleep(0.01)

    def state(self, name: str) -> str | None:
        deliveries = self.setup.deliveries
        deliveries.read()
        if any(task_id == name and deliveries.ended.get(key, 0) < count
               for key, count in deliveries.published.items() for task_id in (key[0],)):
            return "pending"
        outcome = deliveries.outcome.get(name)
        if outcome is None:
            return None
        return {"done": "done", "already done": "done", "failed": "failed", "refused": "failed"}.get(outcome, "pending")


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


def celery_amqp(request: Any, tmp_path: Any) -> Harness:
    setup = request.getfixturevalue("celery_amqp_worker")
    return CeleryHarness(_services(tmp_path, setup.url, setup.store), setup)


def celery_redis(request: Any, tmp_path: Any) -> Harness:
    setup = request.getfixturevalue("celery_redis_worker")
    return CeleryHarness(_services(tmp_path, setup.url, setup.store), setup)


#: Backend label -> factory(request, tmp_path) -> Harness.
HARNESSES: dict[str, Callable[[Any, Any], Harness]] = {
    "local-sqlite": local_sqlite,
    "local-postgresql": local_postgresql,
    "immediate": immediate,
    "appengine": appengine,
    "celery-amqp": celery_amqp,
    "celery-redis": celery_redis,
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
