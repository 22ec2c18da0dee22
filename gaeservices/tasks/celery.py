"""``celery://``: deferred tasks through Celery, on RabbitMQ or Redis.

``GAESERVICES_QUEUE=celery://amqp://guest:guest@127.0.0.1:5672//`` or
``celery://redis://127.0.0.1:6379/0``: the broker's own URL follows the scheme.
``defer`` publishes one Celery task, ``gaeservices.run``, whose arguments are
the signed payload (base64 text) and a small JSON envelope; a Celery worker
started with ``celery -A gaeservices.tasks.celery worker`` runs the payload
through :meth:`DeferredApp.execute`, the same verification, bootstrap and
outcome code as the HTTP endpoint and the local queue. Celery's pickle
serializer is never used: the worker accepts JSON messages only, and the
payload's signature is checked before anything is unpickled.

What Celery does not do, this backend does:

- **Retries** follow the task's :class:`RetryOptions` (``task_retry_limit``,
  ``task_age_limit``, backoff from ``min_backoff_seconds`` doubling
  ``max_doublings`` times up to ``max_backoff_seconds``): a failed run is
  published again with its retry count and a countdown, then acknowledged.
  A :class:`PermanentTaskFailure` is never retried.
- **Names** (``_name``) are claimed in the durable store when the task is
  published (``TaskAlreadyExistsError`` if taken) and kept after success or a
  failure for good as a tombstone (``tombstone`` seconds, default a day), which
  the worker checks before running a named task: a redelivered or replayed
  message of a finished task does not run again. Every body is signed for its
  task's name (the Celery task id), queue and expiry, so a body published under
  another id or queue is refused, and an expired one is not run.
- **Late acknowledgement**: a message is acknowledged after its task ran, and a
  worker process that dies mid-task gives its message back
  (``acks_late`` + ``task_reject_on_worker_lost``). At least once: a task may
  run twice, so make it idempotent (or name it).
- **Long ETAs**: a worker holds a message unacknowledged until its ETA, which
  RabbitMQ cuts off after its ``consumer_timeout`` (30 min by default) and
  Redis gives to another worker after its ``visibility_timeout``. So a message
  is never held longer than ``hold`` seconds (default 600): a task due later
  is published again, still under its name, until it is due.

URL options (after the broker URL): ``prefix`` (put before every queue and
exchange name, and on Redis before every key, so applications can share a
broker); ``max_payload`` (bytes above which the payload goes to the store,
default 100 KiB); ``tombstone`` (seconds); ``hold`` (seconds);
``visibility_timeout`` (Redis: seconds before an unacknowledged message is
given to another worker, Celery's default an hour); the broker's ``ssl_*``.

A worker consumes the Celery queues named ``<prefix><queue>``: ``-Q default,mail``
(``task_default_queue`` is ``<prefix>default``).
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
import sys
import time
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from ..config import BackendURL, Services, get_services
from ..exceptions import (
    ConfigurationError,
    InvalidTaskError,
    QueueUnavailableError,
    TaskAlreadyExistsError,
    UnsupportedTaskOptionError,
)
from .api import RetryOptions, Task, TaskHandle, to_datetime
from .context import TaskContext
from .endpoint import DeferredApp
from .payload import Envelope, ForgedPayload, MalformedPayload, PayloadCodec
from .result import PERMANENT_FAILURE, REFUSED, SUCCESS

if TYPE_CHECKING:
    from celery import Celery

__all__ = ["CeleryQueue", "OUTCOMES", "TASK_NAME", "worker_app"]

logger = logging.getLogger("gaeservices.tasks.celery")

TASK_NAME = "gaeservices.run"
DEFAULT_MAX_PAYLOAD = 100 * 1024  # as the other backends, so code moves between them
DEFAULT_TOMBSTONE = 86400.0
DEFAULT_HOLD = 600.0
REQUEUE_PAUSE = 1.0
NAME_PREFIX = "gaeservices.tasks.name:"
QUEUED, DONE, FAILED = b"queued", b"done", b"failed"
#: What one delivery did, as the Celery task returns it: the task ran (``done``);
#: ran already, so this delivery (redelivered or replayed) did not run it
#: (``already done``); failed for good or was given up (``failed``); failed and
#: was published again for its retry (``retried``); is not due yet and was
#: published again (``held``); was refused unrun (``refused``: forged, altered,
#: not ours, or under another name or queue than signed for).
DONE_OUTCOME, ALREADY_DONE, GIVEN_UP, RETRIED, HELD, REFUSED_OUTCOME = (
    "done", "already done", "failed", "retried", "held", "refused",
)
OUTCOMES = (DONE_OUTCOME, ALREADY_DONE, GIVEN_UP, RETRIED, HELD, REFUSED_OUTCOME)
_DEFAULT_RETRY = RetryOptions()
_ENVELOPE_VERSION = 1


class CeleryQueue:
    """Publishes deferred tasks as Celery tasks; a Celery worker runs them."""

    def __init__(
        self,
        services: Services,
        broker_url: str,
        *,
        prefix: str = "",
        max_payload: int | None = DEFAULT_MAX_PAYLOAD,
        tombstone: float = DEFAULT_TOMBSTONE,
        hold: float = DEFAULT_HOLD,
        visibility_timeout: float | None = None,
    ) -> None:
        from celery import Celery

        self.services = services
        self.broker_url = broker_url
        self.prefix = prefix
        self.max_payload = max_payload
        self.tombstone = tombstone
        self.is_redis = broker_url.startswith(("redis://", "rediss://"))
        if visibility_timeout is not None and self.is_redis:
            # a held message must be acknowledged or republished well within it
            hold = min(hold, visibility_timeout / 2)
        self.hold = hold
        self.codec = PayloadCodec(services)
        self._endpoint: DeferredApp | None = None

        app = Celery("gaeservices", broker=broker_url, set_as_current=False)
        transport_options: dict[str, Any] = {}
        if self.is_redis:
            if prefix:
                transport_options["global_keyprefix"] = prefix
            if visibility_timeout is not None:
                transport_options["visibility_timeout"] = visibility_timeout
        app.conf.update(
            task_serializer="json",
            accept_content=["json"],  # a message that asks for pickle is refused unread
            task_ignore_result=True,
            task_acks_late=True,
            task_reject_on_worker_lost=True,
            task_default_queue=prefix + "default",
            task_default_exchange=prefix + "default",
            task_default_routing_key=prefix + "default",
            task_create_missing_queues=True,
            control_exchange=prefix + "celery",
            event_exchange=prefix + "celeryev",
            broker_connection_retry_on_startup=True,
            broker_transport_options=transport_options,
        )
        run_message = self._run_message

        def run(celery_task: Any, text: Any, envelope: Any) -> str:
            return run_message(celery_task, text, envelope)

        app.task(
            name=TASK_NAME,
            shared=False,  # this app's own: Celery would add a shared task to every app finalized later
            bind=True,
            acks_late=True,
            reject_on_worker_lost=True,
            ignore_result=True,
        )(run)
        self.app: Celery = app

    @classmethod
    def from_url(cls, url: BackendURL, services: Services) -> CeleryQueue:
        broker, _, _ = url.url[len("celery://"):].partition("?")
        passed = {name: value for name, value in url.options.items() if name.startswith("ssl_")}
        if passed:
            broker += "?" + urlencode(passed)
        visibility = url.option("visibility_timeout", None, float)
        return cls(
            services,
            broker,
            prefix=url.option("prefix", ""),
            max_payload=url.option("max_payload", DEFAULT_MAX_PAYLOAD, int) or None,
            tombstone=url.option("tombstone", DEFAULT_TOMBSTONE, float),
            hold=url.option("hold", DEFAULT_HOLD, float),
            visibility_timeout=visibility,
        )

    def celery_queue(self, queue: str) -> str:
        """The Celery queue that carries the tasks of ``queue``."""
        return self.prefix + queue

    # -- publishing -------------------------------------------------------------

    def add(self, task: Task) -> TaskHandle:
        """Publish ``task``; TaskAlreadyExistsError if its name is taken or tombstoned."""
        if task.transactional:
            raise UnsupportedTaskOptionError(
                "celery:// cannot join a transaction: a broker has none to join. Defer after "
                "the commit instead (Django: transaction.on_commit(lambda: defer(...)))"
            )
        name = task.name
        if not name:  # defer() names every task: its body is signed for that name
            raise InvalidTaskError("celery:// needs the task's name (the one its body is signed for)")
        now = time.time()
        key = NAME_PREFIX + name
        # The claim lapses when the body expires: after that it could never run.
        claim_for = None if task.expires is None else max(1.0, task.expires - now + 60.0)
        if task.named and not self.services.store.add(key, QUEUED, timeout=claim_for):
            raise TaskAlreadyExistsError(
                f"a task named {name!r} is queued, failed, or finished less than "
                f"{self.tombstone:g}s ago (its tombstone)"
            )
        # What the worker needs besides the body. Not signed: it steers retries
        # and holding only; the name, queue and expiry that matter are in the body.
        envelope: dict[str, Any] = {"v": _ENVELOPE_VERSION, "queue": task.queue, "created": now}
        if task.eta is not None:
            envelope["eta"] = task.eta
        if task.expires is not None:
            envelope["expires"] = task.expires
        if task.retry_options is not None:
            envelope["retry"] = task.retry_options.to_dict()
        if task.call:
            envelope["call"] = task.call  # shown in Celery's tools, never trusted
        text = base64.b64encode(task.body).decode("ascii")
        try:
            self._publish(name, text, envelope, retries=0, now=now)
        except BaseException:
            if task.named:
                try:
                    self.services.store.delete(key, expected=QUEUED)
                except Exception:
                    logger.exception("could not free the name %r of a task that was not queued", name)
            raise
        return TaskHandle(name, task.queue, to_datetime(task.eta if task.eta is not None else now))

    def _publish(self, name: str, text: str, envelope: dict[str, Any], *, retries: int, now: float) -> None:
        eta = envelope.get("eta")
        options: dict[str, Any] = {}
        if eta is not None and eta > now:
            options["eta"] = datetime.fromtimestamp(min(eta, now + self.hold), timezone.utc)
        if envelope.get("expires") is not None:
            # Only a task with an expiry (defer signs one, its ETA plus the body's
            # lifetime) has one in Celery: the broker and Celery drop it once the
            # body could not run anyway. Without one, nothing drops the message.
            options["expires"] = datetime.fromtimestamp(envelope["expires"], timezone.utc)
        call = envelope.get("call")
        try:
            self.app.send_task(
                TASK_NAME,
                args=[text, envelope],
                task_id=name,
                queue=self.celery_queue(envelope["queue"]),
                retries=retries,
                add_to_parent=False,
                # What Celery's logs, events and monitors show of the arguments: the
                # callable's name, never the payload (the call's arguments are in it).
                argsrepr=f"{call}(…)" if isinstance(call, str) else "(a signed task body)",
                kwargsrepr="{}",
                ignore_result=True,  # nothing is stored: no result backend is needed
                **options,
            )
        except self._connection_errors() as exc:
            raise QueueUnavailableError(
                f"could not publish task {name!r} to the Celery broker: {type(exc).__name__}: {exc}"
            ) from exc

    def _connection_errors(self) -> tuple[type[BaseException], ...]:
        from kombu.exceptions import OperationalError

        return (OperationalError, ConnectionError)

    # -- running (in the Celery worker) ------------------------------------------

    @property
    def endpoint(self) -> DeferredApp:
        endpoint = self._endpoint
        if endpoint is None:
            endpoint = self._endpoint = DeferredApp(self.services, require_task_header=False)
        return endpoint

    def _run_message(self, celery_task: Any, text: Any, envelope: Any) -> str:
        """The Celery task: one delivery of one deferred task.

        Returns (and so is acknowledged) once the task is done with, retried or
        held: each of those published what comes next first. If our own
        bookkeeping fails (store or broker away), the message is given back.
        The value returned says what this delivery did (one of :data:`OUTCOMES`):
        Celery logs it and hands it to ``task_postrun`` handlers and events;
        no result backend keeps it.
        """
        from celery.exceptions import Reject

        request = celery_task.request
        name = str(request.id)
        try:
            body = base64.b64decode(text, validate=True)
            queue = str(envelope["queue"])
            created = float(envelope["created"])
            eta = None if envelope.get("eta") is None else float(envelope["eta"])
            retry_dict = envelope.get("retry")
            retry = RetryOptions(**retry_dict) if retry_dict else _DEFAULT_RETRY
            retries = int(request.retries or 0)
        except (binascii.Error, TypeError, ValueError, KeyError, AttributeError) as exc:
            logger.warning("refused task %r: not a gaeservices message (%s: %s)", name, type(exc).__name__, exc)
            return REFUSED_OUTCOME
        try:
            return self._deliver(name, body, text, envelope, queue, created, eta, retry, retries)
        except Reject:
            raise
        except Exception as exc:
            logger.exception("task %r: could not be handled; giving its message back", name)
            time.sleep(REQUEUE_PAUSE)  # so a store that is away is not hammered
            raise Reject(exc, requeue=True) from exc

    def _deliver(
        self,
        name: str,
        body: bytes,
        text: str,
        envelope: dict[str, Any],
        queue: str,
        created: float,
        eta: float | None,
        retry: RetryOptions,
        retries: int,
    ) -> str:
        now = time.time()
        if eta is not None and eta > now + 0.001:
            # Held as long as a broker allows; published again until it is due.
            self._publish(name, text, envelope, retries=retries, now=now)
            return HELD
        try:
            sealed: Envelope | None = self.codec.open(body)
        except (ForgedPayload, MalformedPayload):
            sealed = None  # the endpoint refuses it, and says why
        named = sealed is not None and sealed.named and sealed.name == name
        key = NAME_PREFIX + name
        if named:
            state = self.services.store.get(key)
            if state in (DONE, FAILED):
                logger.warning(
                    "task %r %s already; this delivery (redelivered or replayed) does not run it again",
                    name, "ran" if state == DONE else "failed",
                )
                return ALREADY_DONE if state == DONE else GIVEN_UP
        result = self.endpoint.execute(body, TaskContext(name, queue, retries + 1, eta))
        if result.outcome == SUCCESS:
            if named:
                self._mark(key, DONE)
            return DONE_OUTCOME
        if result.outcome == REFUSED:
            # Forged, altered, or delivered under another name or queue than signed
            # for: it cannot get better. The name is not marked: a forger chose it.
            logger.error("task %r refused and dropped: %s", name, result.error)
            return REFUSED_OUTCOME
        if result.outcome == PERMANENT_FAILURE:
            if named:
                self._mark(key, FAILED)
            return GIVEN_UP
        now = time.time()
        if retry.gives_up(retries, now - created):
            logger.error(
                "task %r failed %d time(s) and is given up (%r):\n%s",
                name, retries + 1, retry, result.error,
            )
            if named:
                self._mark(key, FAILED)
            if sealed is not None and sealed.stored_key is not None:
                self._discard(sealed.stored_key, name)
            return GIVEN_UP
        delay = retry.backoff(retries)
        logger.info("task %r failed (attempt %d); retrying in %.3gs", name, retries + 1, delay)
        self._publish(name, text, dict(envelope, eta=now + delay), retries=retries + 1, now=now)
        return RETRIED

    def _mark(self, key: str, state: bytes) -> None:
        try:
            self.services.store.put(key, state, timeout=self.tombstone)
        except Exception:  # the run stands; only a replay of it is no longer refused
            logger.exception("could not record the tombstone %s", key)

    def _discard(self, stored: str, name: str) -> None:
        try:
            self.codec.discard(stored)
        except Exception:
            logger.exception("could not delete the stored payload %s of task %r", stored, name)

    def close(self) -> None:
        self.app.close()

    def __repr__(self) -> str:
        from ..config import _redact

        return f"<CeleryQueue {_redact(self.broker_url)} prefix={self.prefix!r}>"


# --- the worker's entry point: ``celery -A gaeservices.tasks.celery worker`` ---------


def worker_app(services: Services | None = None) -> Celery:
    """The Celery app of the configured ``celery://`` queue, for ``celery worker``.

    Also puts the current directory first on ``sys.path`` (as gunicorn and
    ``python -m`` do) for good, not only while the app is imported as Celery
    does: tasks are functions of the application, which the worker imports
    by name when it unpickles them. Run the worker from the application's
    directory, or give it ``--workdir``.
    """
    services = services or get_services()
    queue = services.queue
    if not isinstance(queue, CeleryQueue):
        raise ConfigurationError(
            "a Celery worker runs the celery:// queue, but GAESERVICES_QUEUE is "
            f"{type(queue).__name__}: set GAESERVICES_QUEUE=celery://amqp://... or celery://redis://..."
        )
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    return queue.app


def __getattr__(name: str) -> Any:
    # `celery -A gaeservices.tasks.celery` looks for an `app` attribute: built on
    # that first look, from the environment, so importing this module builds nothing.
    if name == "app":
        return worker_app()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
