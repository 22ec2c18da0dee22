"""The contract every task queue backend keeps (``services.queue``).

``defer`` builds a :class:`~gaeservices.tasks.api.Task` -- the signed body and
App Engine's options -- and hands it to the configured backend's :meth:`Queue.add`.
What runs the task afterwards is the backend's business (a dispatcher on a SQL
table, App Engine's push queues, a Celery worker, or ``defer`` itself); every
backend delivers the body to :class:`~gaeservices.tasks.endpoint.DeferredApp` or
its :meth:`~gaeservices.tasks.endpoint.DeferredApp.execute`, so signature checks
and outcomes are the same everywhere.

A backend is a class registered by URL scheme in :data:`gaeservices.config.BACKENDS`
with a ``from_url(url, services)`` class method; it need not inherit from anything.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from .api import Task, TaskHandle
    from .payload import PayloadCodec

__all__ = ["Queue"]


@runtime_checkable
class Queue(Protocol):
    """What every task queue backend provides."""

    @property
    def max_payload(self) -> int | None:
        """Bytes of signed body above which ``defer`` moves the payload to the store
        and queues a signed reference instead; None for no limit."""

    @property
    def codec(self) -> PayloadCodec:
        """Seals pickled calls into signed bodies (and opens them), with this backend's keys."""

    def add(self, task: Task) -> TaskHandle:
        """Queue ``task``; return its handle (name, queue, ETA).

        Raises :class:`~gaeservices.exceptions.TaskAlreadyExistsError` when a task of
        that name exists or is tombstoned, and
        :class:`~gaeservices.exceptions.UnsupportedTaskOptionError` for an option the
        backend cannot honour (never silently dropped).
        """

    def close(self) -> None:
        """Release what the backend holds (connections, waiting threads)."""
