"""Listing and acting on queued tasks, whatever the backend: one place for both
the admin page (:mod:`gaeservices.tasks.admin_app`) and ``gaeservices tasks``
(:mod:`gaeservices.tasks.admin`).

:func:`inspector_for` gives the configured queue's :class:`Inspector`. What each
backend allows:

==================  ======  ======  ===  =====  ======  =====
backend             queues  list    run  retry  delete  purge
==================  ======  ======  ===  =====  ======  =====
``local://``        yes     yes     yes  yes    yes     yes
``appengine://``    yes     --      --   --     yes     yes
``celery://``       depth   --      --   --     --      yes
``immediate://``    --      dead    --   --     --      --
==================  ======  ======  ===  =====  ======  =====

Backends that cannot list their queues (App Engine, Celery) show ``default``,
the mail queue (``EMAIL_QUEUE_NAME``) and the ``queue_names`` given.

An action a backend cannot do raises :class:`UnsupportedActionError`, whose
message says why and what to do instead; :attr:`Inspector.actions` tells a
caller beforehand.

Tasks are described without being unpickled (:mod:`gaeservices.tasks.preview`):
the body's signature is checked, then the pickle is read, not run.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, Protocol

from ..exceptions import TaskError
from .local import VIEWS
from .preview import CallPreview, describe_body
from .result import TaskResult

__all__ = [
    "ACTIONS",
    "VIEWS",
    "Inspector",
    "QueueRow",
    "TaskRow",
    "UnsupportedActionError",
    "inspector_for",
]

#: What can be done to tasks: list them, run one now (here, in this process),
#: retry one (make it due now), delete one, purge a queue.
ACTIONS = ("list", "run", "retry", "delete", "purge")


class UnsupportedActionError(TaskError):
    """The queue backend cannot do this; the message says why and what to do instead."""


class QueueRow:
    """One queue: tasks by view (see :data:`VIEWS`), what finished lately, its rate.

    ``depth`` is every task not finished. Counts a backend cannot know are None
    (shown as such, never as 0).
    """

    __slots__ = (
        "name", "depth", "queued", "scheduled", "running", "failed", "dead", "done",
        "done_last_minute", "done_last_hour", "dead_last_hour", "oldest_queued", "rate",
    )

    def __init__(
        self,
        name: str,
        *,
        depth: int | None = None,
        queued: int | None = None,
        scheduled: int | None = None,
        running: int | None = None,
        failed: int | None = None,
        dead: int | None = None,
        done: int | None = None,
        done_last_minute: int | None = None,
        done_last_hour: int | None = None,
        dead_last_hour: int | None = None,
        oldest_queued: float | None = None,
        rate: str | None = None,
    ) -> None:
        self.name = name
        self.depth = depth
        self.queued = queued
        self.scheduled = scheduled
        self.running = running
        self.failed = failed
        self.dead = dead
        self.done = done
        self.done_last_minute = done_last_minute
        self.done_last_hour = done_last_hour
        self.dead_last_hour = dead_last_hour
        self.oldest_queued = oldest_queued
        self.rate = rate

    def __repr__(self) -> str:
        return f"<QueueRow {self.name} depth={self.depth}>"


class TaskRow:
    """One task as the page and the command show it; ``call`` previews what it runs."""

    __slots__ = ("name", "queue", "view", "call", "attempts", "last_error", "eta", "created", "finished")

    def __init__(
        self,
        name: str,
        queue: str,
        view: str,
        call: CallPreview,
        *,
        attempts: int | None = None,
        last_error: str | None = None,
        eta: float | None = None,
        created: float | None = None,
        finished: float | None = None,
    ) -> None:
        self.name = name
        self.queue = queue
        self.view = view
        self.call = call
        self.attempts = attempts
        self.last_error = last_error
        self.eta = eta
        self.created = created
        self.finished = finished

    def __repr__(self) -> str:
        return f"<TaskRow {self.name!r} {self.queue} {self.view}>"


class Inspector(Protocol):
    """What the page and the command ask of a queue backend."""

    #: The backend as shown to the operator, e.g. ``local:// (SQLite)``.
    backend: str
    #: Which of :data:`ACTIONS` this backend does.
    actions: frozenset[str]
    #: Which of :data:`VIEWS` :meth:`tasks` can list.
    views: tuple[str, ...]
    #: What this backend cannot do, and where to do it instead (plain text; may be empty).
    limits: str

    def queues(self) -> list[QueueRow]: ...

    def tasks(
        self, *, queue: str | None = None, view: str | None = None, limit: int = 100, offset: int = 0
    ) -> list[TaskRow]: ...

    def run(self, name: str) -> TaskResult | None:
        """Run the task here and now, due or not; None when it is not there to run."""

    def retry(self, name: str) -> bool:
        """Make a failed or dead task due now (attempts kept); False when not possible."""

    def delete(self, name: str) -> bool: ...

    def purge(self, queue: str) -> int:
        """Delete the queue's unfinished and dead tasks; how many (None when the backend cannot count)."""


def inspector_for(services: Any, *, queue_names: Sequence[str] = ()) -> Inspector:
    """The inspector of ``services.queue``.

    ``queue_names``: queues to show on backends that cannot list their queues
    (App Engine); ``default`` and the mail queue are always shown.
    """
    queue = services.queue
    kind = type(queue).__module__.rsplit(".", 1)[-1]
    if kind == "local":
        return LocalInspector(services)
    if kind == "appengine":
        return AppEngineInspector(services, queue_names)
    if kind == "celery":
        return CeleryInspector(services, queue_names)
    if kind == "immediate":
        return ImmediateInspector(services)
    return _NoInspector(services)


class _Base:
    backend = ""
    actions: frozenset[str] = frozenset()
    views: tuple[str, ...] = ()
    limits = ""

    def __init__(self, services: Any) -> None:
        self.services = services

    def _refuse(self, action: str) -> UnsupportedActionError:
        return UnsupportedActionError(f"{self.backend} cannot {action} tasks from here. {self.limits}".strip())

    def queues(self) -> list[QueueRow]:
        return []

    def tasks(
        self, *, queue: str | None = None, view: str | None = None, limit: int = 100, offset: int = 0
    ) -> list[TaskRow]:
        raise self._refuse("list")

    def run(self, name: str) -> TaskResult | None:
        raise self._refuse("run")

    def retry(self, name: str) -> bool:
        raise self._refuse("retry")

    def delete(self, name: str) -> bool:
        raise self._refuse("delete")

    def purge(self, queue: str) -> int:
        raise self._refuse("purge")


class LocalInspector(_Base):
    """``local://``: everything, on the SQL table."""

    actions = frozenset(ACTIONS)
    views: tuple[str, ...] = VIEWS

    def __init__(self, services: Any) -> None:
        super().__init__(services)
        self.queue = services.queue
        names = {"sqlite": "SQLite", "postgresql": "PostgreSQL"}
        self.backend = f"local:// ({names.get(self.queue.dialect, self.queue.dialect)})"
        self._dispatcher: Any = None

    def queues(self) -> list[QueueRow]:
        rows = []
        for stats in self.queue.stats().values():
            values = {slot: getattr(stats, slot) for slot in stats.__slots__[1:]}
            rows.append(QueueRow(stats.queue, depth=stats.depth, rate=self.queue.limits_of(stats.queue), **values))
        return rows

    def tasks(
        self, *, queue: str | None = None, view: str | None = None, limit: int = 100, offset: int = 0
    ) -> list[TaskRow]:
        now = time.time()
        codec = self.queue.codec
        return [
            TaskRow(
                info.name, info.queue, info.view(now), describe_body(codec, info.body)
                if info.state != "done" else CallPreview(problem="finished (its payload is not kept)"),
                attempts=info.attempts, last_error=info.last_error,
                eta=info.eta if info.state == "pending" else None,
                created=info.created, finished=info.finished,
            )
            for info in self.queue.listing(queue=queue, view=view, limit=limit, offset=offset, now=now)
        ]

    def run(self, name: str) -> TaskResult | None:
        if self._dispatcher is None:
            from .worker import Dispatcher

            self._dispatcher = Dispatcher(self.services)
        ((_, result),) = self._dispatcher.run_now([name])
        return result

    def retry(self, name: str) -> bool:
        return bool(self.queue.retry(name))

    def delete(self, name: str) -> bool:
        return bool(self.queue.delete(name))

    def purge(self, queue: str) -> int:
        return int(self.queue.purge_queue(queue))


class AppEngineInspector(_Base):
    """``appengine://``: queue statistics, delete by name and purge, through the SDK.

    App Engine's task queue API lists no push tasks and cannot run one on demand:
    the platform runs them.
    """

    backend = "appengine://"
    actions = frozenset({"delete", "purge"})
    limits = (
        "App Engine's task queue API cannot list push tasks, run one on demand or retry a "
        "dead one: use the Cloud Tasks page of the Google Cloud console for those. Here: "
        "each queue's statistics, deleting a task by name, purging a queue."
    )

    def __init__(self, services: Any, queue_names: Sequence[str] = ()) -> None:
        super().__init__(services)
        from google.appengine.api import taskqueue

        self._taskqueue = taskqueue
        self.queue_names = list(dict.fromkeys(["default", services.email_queue_name, *queue_names]))

    def queues(self) -> list[QueueRow]:
        taskqueue = self._taskqueue
        stats = taskqueue.QueueStatistics.fetch([taskqueue.Queue(n) for n in self.queue_names])
        rows = []
        for name, s in zip(self.queue_names, stats):
            oldest = s.oldest_eta_usec / 1e6 if s.oldest_eta_usec else None
            rows.append(QueueRow(
                name, depth=s.tasks, running=s.in_flight, oldest_queued=oldest,
                done_last_minute=s.executed_last_minute,
                rate=f"{s.enforced_rate:g}/s" if s.enforced_rate is not None else None,
            ))
        return rows

    def delete(self, name: str) -> bool:
        # A task's queue is not known from its name alone: try each one shown.
        for queue_name in self.queue_names:
            try:
                (task,) = self._taskqueue.Queue(queue_name).delete_tasks_by_name([name])
            except self._taskqueue.UnknownQueueError:  # shown, but not in queue.yaml
                continue
            if task.was_deleted:
                return True
        return False

    def purge(self, queue: str) -> int:
        if queue not in self.queue_names:
            raise UnsupportedActionError(f"no queue {queue!r} is shown here")
        try:
            self._taskqueue.Queue(queue).purge()
        except self._taskqueue.UnknownQueueError:
            raise UnsupportedActionError(f"App Engine knows no queue {queue!r} (see queue.yaml)") from None
        return -1  # App Engine does not say how many


class CeleryInspector(_Base):
    """``celery://``: the messages waiting in the broker, per queue, and purging them.

    A broker is a queue of messages, not a table: it cannot list, run or delete
    one task, and what a worker has taken (running, or held until its ETA) is
    no longer in the broker's count.
    """

    actions = frozenset({"purge"})
    limits = (
        "A Celery broker cannot list its messages, nor run, retry or delete one of them: "
        "use Celery's own tools (celery inspect, celery purge, Flower) for more. Here: the "
        "messages waiting in each queue, and purging them. A message a worker has already "
        "taken (running, or held until its ETA) is neither counted nor purged; a purged "
        "named task's name stays taken until its claim lapses."
    )

    def __init__(self, services: Any, queue_names: Sequence[str] = ()) -> None:
        super().__init__(services)
        self.queue = services.queue
        kind = "Redis" if self.queue.is_redis else "RabbitMQ" if self.queue.broker_url.startswith("amqp") else ""
        self.backend = f"celery:// ({kind})" if kind else "celery://"
        self.queue_names = list(dict.fromkeys(["default", services.email_queue_name, *queue_names]))

    def _channel_call(self, method: str, queue: str) -> Any:
        # A passive declare tells the count without creating the queue. Not on
        # Redis: kombu (5.7) does not prefix the EXISTS of its passive check with
        # the global key prefix, so it never finds a prefixed queue; there a
        # queue is only a binding key, which declaring it (as a worker does) adds.
        options = {"passive": not self.queue.is_redis} if method == "queue_declare" else {}
        # a channel each: RabbitMQ closes a channel that asked for a missing queue
        with self.queue.app.connection_for_write() as connection:
            channel = connection.channel()
            try:
                return getattr(channel, method)(self.queue.celery_queue(queue), **options)
            finally:
                try:
                    channel.close()
                except Exception:  # already closed by the broker
                    pass

    def queues(self) -> list[QueueRow]:
        rows = []
        for name in self.queue_names:
            try:
                _, waiting, _ = self._channel_call("queue_declare", name)
            except Exception as exc:
                if not _not_found(exc):
                    raise
                waiting = 0  # never declared: nothing was ever sent to it
            rows.append(QueueRow(name, depth=waiting, queued=waiting))
        return rows

    def purge(self, queue: str) -> int:
        if queue not in self.queue_names:
            raise UnsupportedActionError(f"no queue {queue!r} is shown here")
        try:
            return int(self._channel_call("queue_purge", queue) or 0)
        except Exception as exc:
            if not _not_found(exc):
                raise
            return 0


def _not_found(exc: BaseException) -> bool:
    """A broker's "no such queue" (RabbitMQ's 404, kombu's virtual transports)."""
    return getattr(exc, "code", None) == 404 or "NOT_FOUND" in str(exc) or "no queue" in str(exc).lower()


class ImmediateInspector(_Base):
    """``immediate://``: nothing waits; this process's permanent failures are listed."""

    backend = "immediate://"
    actions = frozenset({"list"})
    views: tuple[str, ...] = ("dead",)
    limits = (
        "immediate:// runs every task inside defer(): nothing ever waits in a queue, so there "
        "is nothing to run, retry, delete or purge. The permanent failures of this process "
        "are listed as dead."
    )

    def tasks(
        self, *, queue: str | None = None, view: str | None = None, limit: int = 100, offset: int = 0
    ) -> list[TaskRow]:
        if view not in (None, "dead"):
            return []
        failures = list(reversed(self.services.queue.failures))[offset:offset + limit]
        return [
            TaskRow(name, "", "dead", CallPreview(problem="ran inside defer()"),
                    attempts=1, last_error=result.error)
            for name, result in failures
        ]


class _NoInspector(_Base):
    def __init__(self, services: Any) -> None:
        super().__init__(services)
        queue = services.queue
        url = services.backend_url("queue")
        self.backend = url.url.split("://")[0] + "://" if url is not None else type(queue).__name__
        self.limits = f"{self.backend} offers nothing to inspect or act on from here."
