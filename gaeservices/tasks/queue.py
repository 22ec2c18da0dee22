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
    """What every task queue backend provides, and what it must do.

    - **add** (:meth:`add`): keep ``task.body`` unchanged under ``task.name`` in
      ``task.queue``, due at ``task.eta`` (None: now), and return its handle. A
      task the application named (``task.named``) whose name is queued, or
      finished within the backend's tombstone period, raises
      :class:`~gaeservices.exceptions.TaskAlreadyExistsError`.
      ``task.retry_options`` and ``task.transactional`` are honoured, or refused
      with :class:`~gaeservices.exceptions.UnsupportedTaskOptionError` -- never
      ignored. ``defer`` names every task (``task.name``) and signs the body for
      that name and queue, unless the backend sets ``assigns_names = True`` (App
      Engine, which must name transactional tasks itself).
    - **deliver** each due task, in a worker, to
      ``DeferredApp.execute(body, TaskContext(name, queue, execution_count, eta))``
      (or POST the body to the endpoint with ``X-AppEngine-TaskName``,
      ``X-AppEngine-QueueName`` and ``X-AppEngine-TaskRetryCount``). The name and
      queue must be the task's own: the body is signed for them, and the endpoint
      refuses it under any other. ``execution_count`` is 1 on the first delivery.
    - **act on the result** (:class:`~gaeservices.tasks.result.TaskResult`):
      ``result.done`` (success or permanent failure) means never deliver it again,
      recording a permanent failure as failed with ``result.error``; ``refused``
      cannot get better either (keep it as failed); otherwise retry after
      ``RetryOptions.backoff`` until ``RetryOptions.gives_up``, then keep it as
      failed (dead).
    - **lose nothing**: a worker that dies mid-task must leave the task to be
      delivered again (acknowledge after the result, not before).

    Optional attributes: ``payload_lifetime`` (seconds after its ETA a body stays
    valid; default :data:`gaeservices.tasks.payload.DEFAULT_LIFETIME`, 30 days) and
    ``assigns_names``.
    """

    @property
    def max_payload(self) -> int | None:
        """Bytes of pickled call above which ``defer`` moves it to the store and
        queues a signed reference instead; None for no limit. The endpoint reads
        at most this plus :data:`~gaeservices.tasks.payload.MAX_ENVELOPE` before
        it checks a body's signature."""

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
