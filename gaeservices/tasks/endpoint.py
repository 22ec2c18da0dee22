"""``DeferredApp``: the WSGI endpoint that runs deferred tasks (``/_ah/queue/deferred``).

A request is checked in this order, and stops at the first refusal:

1. method: anything but POST is 405 with ``Allow: POST``;
2. on App Engine, the ``X-AppEngine-TaskName`` header must be present -- the
   platform strips it from outside traffic, so only the task queue can send it;
3. size: a body longer than the queue's inline payload limit plus the envelope
   (:data:`~gaeservices.tasks.payload.MAX_ENVELOPE`) is 413 *before it is read*,
   so an unauthenticated client cannot make the endpoint hold more than that;
4. the body's signature (403 if it does not verify, 400 if there is no body,
   no signature, or a payload format that is not bound to its task) -- *nothing
   is unpickled before this point*;
5. the binding: the signed task name must be the ``X-AppEngine-TaskName`` header
   and the signed queue the ``X-AppEngine-QueueName`` header (when sent): 403
   otherwise. A body signed without a name (App Engine names transactional
   tasks itself) runs only where the platform's headers are trusted;
6. the signed expiry: an expired body is a permanent failure (200: not retried);
7. the tombstone: a body whose task already succeeded is not run again (200).
   Tasks the application named leave one in the store when they succeed; so
   does every task arriving over HTTP off App Engine, where whoever reaches the
   endpoint could replay a captured body;
8. the application's bootstrap, once per process (500 if it fails: retried);
9. the call is unpickled (a callable that cannot be imported any more is a
   permanent failure recording the real ImportError) and run.

Outcomes: success 200; :class:`PermanentTaskFailure` 200 (not retried,
recorded as failed); :class:`SingularTaskFailure` 408 (retried, no traceback);
any other exception 500 (retried, traceback logged); the queue's retry
limit decides whether a retry happens, and the queue logs that decision. A
store failure (the tombstone or a stored payload cannot be read) is 500 too;
anything else going wrong outside the task propagates. The SDK's own
``google.appengine.ext.deferred`` failures mean the same; they are recognised
when raised, whatever was imported first. The outcome is also in the
``X-Task-Outcome`` response header, which the local queue's HTTP dispatcher
reads to tell a permanent failure from a success.

The local dispatcher and ``immediate://`` call :meth:`DeferredApp.execute`, the
same code minus WSGI, so running in-process costs no environ building.

Migration from the SDK's deferred library: with ``accept_sdk_tasks=True`` (or
``GAESERVICES_ACCEPT_SDK_TASKS=1``), on App Engine only, a request carrying the
platform's task headers whose body is not one of ours is run as the SDK's
``deferred.run`` would run it (an unsigned pickle): tasks queued by
``google.appengine.ext.deferred.defer`` before a migration drain instead of
being refused for ever. Off by default; it trusts the platform's headers alone.
"""

from __future__ import annotations

import logging
import math
import threading
import time
import traceback
from collections.abc import Callable, Iterable
from typing import Any

from ..config import Services, get_services
from ..exceptions import PermanentTaskFailure, SingularTaskFailure, StoreError
from . import payload
from .bootstrap import bootstrap_for
from .context import TaskContext, _current
from .result import PERMANENT_FAILURE, REFUSED, RETRY, SUCCESS, TaskResult

__all__ = ["DeferredApp", "TaskResult", "SUCCESS", "PERMANENT_FAILURE", "RETRY", "REFUSED"]

logger = logging.getLogger("gaeservices.tasks")

OUTCOME_HEADER = "X-Task-Outcome"
RESULT_ENVIRON_KEY = "gaeservices.tasks.result"
MAX_BODY = 32 * 1024 * 1024  # App Engine's own request limit
DEFAULT_INLINE_LIMIT = 100 * 1024  # when the queue backend sets none
_SDK_MODULE = "google.appengine.ext.deferred.deferred"

_REASONS = {
    200: "200 OK",
    400: "400 Bad Request",
    403: "403 Forbidden",
    405: "405 Method Not Allowed",
    408: "408 Request Timeout",
    413: "413 Content Too Large",
    500: "500 Internal Server Error",
}


_OK = TaskResult(200, SUCCESS)


def _formatted(exc: BaseException) -> str:
    return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))


def _is_failure(exc: BaseException, ours: type[BaseException], sdk_name: str) -> bool:
    """``exc`` is our failure class or the SDK deferred library's of that name.

    Decided from the exception itself, so it holds whether the SDK's module was
    imported before or after the endpoint was built.
    """
    if isinstance(exc, ours):
        return True
    return any(c.__name__ == sdk_name and c.__module__ == _SDK_MODULE for c in type(exc).__mro__)


class DeferredApp:
    """The WSGI application that runs deferred tasks; mount it at ``/_ah/queue/deferred``.

    ``require_task_header`` (default: on App Engine only) refuses requests
    without ``X-AppEngine-TaskName`` and trusts the platform's headers (a body
    signed without a task name runs only then). ``max_body`` bounds what is
    read from a client before the signature is checked: by default the queue
    backend's inline payload limit (``max_payload``, 100 KiB) plus the envelope.
    ``tombstones`` is which successes leave a tombstone against replays of
    requests: ``"named"`` (tasks the application named) or ``"all"``; by
    default ``"all"`` off App Engine and ``"named"`` on it.
    ``accept_sdk_tasks`` runs tasks queued by the SDK's own deferred library
    (see the module's documentation).
    """

    def __init__(
        self,
        services: Services | None = None,
        *,
        require_task_header: bool | None = None,
        max_body: int | None = None,
        tombstones: str | None = None,
        accept_sdk_tasks: bool | None = None,
    ) -> None:
        self.services = services or get_services()
        self.require_task_header = (
            self.services.on_app_engine if require_task_header is None else require_task_header
        )
        self._max_body = max_body
        if tombstones is None:
            tombstones = "named" if self.require_task_header else "all"
        if tombstones not in ("named", "all"):
            raise ValueError("tombstones must be 'named' or 'all'")
        self.tombstones = tombstones
        if accept_sdk_tasks is None:
            flag = self.services.environ.get("GAESERVICES_ACCEPT_SDK_TASKS", "")
            accept_sdk_tasks = flag.lower() in ("1", "true", "yes", "on")
        self.accept_sdk_tasks = bool(accept_sdk_tasks)
        self.codec = payload.PayloadCodec(self.services)
        self.bootstrap = bootstrap_for(self.services.bootstrap, self.services.environ)
        self._lock = threading.Lock()

    @property
    def max_body(self) -> int:
        """The most bytes read before the signature is checked."""
        if self._max_body is None:
            with self._lock:
                if self._max_body is None:
                    limit = getattr(self.services.queue, "max_payload", None) or DEFAULT_INLINE_LIMIT
                    self._max_body = limit + payload.MAX_ENVELOPE
        return self._max_body

    @max_body.setter
    def max_body(self, value: int) -> None:
        self._max_body = value

    # -- the task, without WSGI ------------------------------------------------

    def execute(self, body: bytes, context: TaskContext, *, tombstone: bool = False) -> TaskResult:
        """Verify, bootstrap, unpickle and run one task body; never raises for the task.

        ``context`` is the delivery: the task's name and queue as the queue
        backend knows them (they must be those the body is signed for), its
        execution count (1 on the first) and ETA. ``tombstone=True`` makes a
        success leave a tombstone even for a task the application did not name.
        A store failure (:class:`StoreError`) reading the tombstone or a stored
        payload is a retry; anything else raised outside the task is a fault of
        this code and propagates.
        """
        try:
            envelope = self.codec.open(body)
        except payload.ForgedPayload as exc:
            logger.warning("refused task %r: %s", context.name, exc)
            return TaskResult(403, REFUSED, str(exc))
        except payload.MalformedPayload as exc:
            logger.warning("refused task %r: %s", context.name, exc)
            return TaskResult(400, REFUSED, str(exc))

        refusal = self._check_binding(envelope, context)
        if refusal is not None:
            logger.warning("refused task %r: %s", context.name, refusal)
            return TaskResult(403, REFUSED, refusal)
        if envelope.name:
            context.name = envelope.name
        context.queue = envelope.queue
        if envelope.expires < time.time():
            message = f"the payload expired at {envelope.expires} (its signed lifetime is over)"
            logger.warning("task %r not run: %s", context.name, message)
            self._discard(envelope.stored_key)
            return TaskResult(200, PERMANENT_FAILURE, message)
        keep_tombstone = envelope.named or tombstone
        if keep_tombstone:
            try:
                finished = self.services.store.get(envelope.tombstone_key) is not None
            except StoreError as exc:  # the store failed: try later
                logger.exception("task %r: cannot read its tombstone", context.name)
                return TaskResult(500, RETRY, _formatted(exc), exc)
            if finished:
                logger.warning("task %r already succeeded: this delivery (a replay?) is not run", context.name)
                return TaskResult(200, SUCCESS, "already succeeded (tombstone): not run again")

        failed = self._bootstrap()
        if failed is not None:
            return failed

        try:
            pickled = self.codec.call(envelope)
        except LookupError as exc:  # stored payload deleted: an earlier run finished it
            logger.warning("task %r: %s", context.name, exc)
            return TaskResult(200, PERMANENT_FAILURE, str(exc))
        except (payload.ForgedPayload, payload.MalformedPayload) as exc:
            logger.warning("refused task %r: its stored payload: %s", context.name, exc)
            return TaskResult(403, REFUSED, str(exc))
        except StoreError as exc:  # the store failed: try later
            logger.exception("task %r: cannot read its stored payload", context.name)
            return TaskResult(500, RETRY, _formatted(exc), exc)
        try:
            function, args, kwargs = payload.loads(pickled)
        except Exception as exc:
            # The code changed under the queue (renamed, removed): retrying cannot help.
            logger.error("task %r cannot be loaded, failing it permanently:\n%s", context.name, _formatted(exc))
            self._discard(envelope.stored_key)
            return TaskResult(200, PERMANENT_FAILURE, _formatted(exc), exc)

        result = self._run(function, args, kwargs, context)
        if result.outcome == SUCCESS and keep_tombstone:
            self._leave_tombstone(envelope, context)
        if result.done:
            self._discard(envelope.stored_key)
        return result

    def _bootstrap(self) -> TaskResult | None:
        """Run the application's bootstrap if it has not run; its failure is a retry."""
        if not self.bootstrap.done:
            try:
                self.bootstrap.ensure()
            except Exception as exc:
                return TaskResult(500, RETRY, f"bootstrap {self.bootstrap.description} failed:\n{_formatted(exc)}", exc)
        return None

    def _check_binding(self, envelope: payload.Envelope, context: TaskContext) -> str | None:
        if envelope.name:
            if context.name != envelope.name:
                return f"the body is signed for task {envelope.name!r}, not {context.name[:100]!r}"
        elif not self.require_task_header:
            return (
                "the body is signed without a task name, which only the App Engine platform's "
                "own task headers may vouch for"
            )
        if context.queue and context.queue != envelope.queue:
            return f"the body is signed for queue {envelope.queue!r}, not {context.queue[:100]!r}"
        return None

    def _run(self, function: Any, args: Any, kwargs: Any, context: TaskContext) -> TaskResult:
        token = _current.set(context)
        try:
            function(*args, **kwargs)
        except Exception as exc:
            if _is_failure(exc, PermanentTaskFailure, "PermanentTaskFailure"):
                logger.warning("task %r failed permanently: %r", context.name, exc)
                return TaskResult(200, PERMANENT_FAILURE, _formatted(exc), exc)
            # Whether it runs again is its queue's decision (retry limit, age limit).
            if _is_failure(exc, SingularTaskFailure, "SingularTaskFailure"):
                logger.info("task %r failed once (attempt %d): %r", context.name, context.execution_count, exc)
                return TaskResult(408, RETRY, _formatted(exc), exc)
            logger.exception("task %r failed (attempt %d)", context.name, context.execution_count)
            return TaskResult(500, RETRY, _formatted(exc), exc)
        finally:
            _current.reset(token)
        return _OK

    def _leave_tombstone(self, envelope: payload.Envelope, context: TaskContext) -> None:
        try:
            # kept until the body expires: after that the body is refused anyway
            lifetime = max(1.0, envelope.expires - time.time() + 60.0)
            self.services.store.put(envelope.tombstone_key, b"1", timeout=lifetime)
        except StoreError:  # the success stands; only a replay could now run it again
            logger.exception("task %r: could not write its tombstone", context.name)

    def _discard(self, key: str | None) -> None:
        if key is None:
            return
        try:
            self.codec.discard(key)
        except StoreError:  # the task's outcome stands; the payload is only garbage now
            logger.exception("could not delete the stored payload %s", key)

    # -- tasks of the SDK's deferred library (migration) -------------------------

    def _execute_sdk(self, body: bytes, context: TaskContext) -> TaskResult:
        """Run a body made by ``google.appengine.ext.deferred.defer`` (an unsigned pickle)."""
        logger.warning(
            "task %r: running an unsigned task of the SDK's deferred library (accept_sdk_tasks)", context.name
        )
        failed = self._bootstrap()
        if failed is not None:
            return failed
        try:
            from google.appengine.ext.deferred import deferred as sdk_deferred
        except Exception as exc:
            return TaskResult(500, RETRY, _formatted(exc), exc)
        return self._run(sdk_deferred.run, (body,), {}, context)

    def _is_sdk_request(self, environ: dict[str, Any], body: bytes) -> bool:
        return (
            self.accept_sdk_tasks
            and self.services.on_app_engine
            and body[:1] != payload.VERSION
            and "HTTP_X_APPENGINE_TASKNAME" in environ
            and "HTTP_X_APPENGINE_QUEUENAME" in environ
        )

    # -- WSGI ------------------------------------------------------------------

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("REQUEST_METHOD") != "POST":
            return _respond(start_response, 405, "only POST runs a task", [("Allow", "POST")])
        if self.require_task_header and "HTTP_X_APPENGINE_TASKNAME" not in environ:
            logger.warning("refused a request without X-AppEngine-TaskName")
            return _respond(start_response, 403, "not sent by the task queue")
        size = _count(environ.get("CONTENT_LENGTH") or "", None)
        if size is None:
            return _respond(start_response, 400, "a body with a Content-Length is required")
        if size > self.max_body:
            return _respond(start_response, 413, "body too large")
        body = environ["wsgi.input"].read(size) if size else b""
        if len(body) != size:
            return _respond(start_response, 400, "truncated body")
        context = _context_from(environ)
        if self._is_sdk_request(environ, body):
            result = self._execute_sdk(body, context)
        else:
            result = self.execute(body, context, tombstone=self.tombstones == "all")
        environ[RESULT_ENVIRON_KEY] = result
        text = result.outcome
        if result.outcome in (PERMANENT_FAILURE, REFUSED) and result.error:
            text = f"{result.outcome}: {result.error.strip().splitlines()[-1]}"
        return _respond(start_response, result.status, text, [(OUTCOME_HEADER, result.outcome)])


def _count(text: str, default: int | None) -> int | None:
    """A non-negative decimal header value, or ``default`` (also for absurdly long ones)."""
    # "\xb2".isdigit() is true, yet int() refuses it; 5,000 digits exceed int()'s limit
    if text.isascii() and text.isdigit() and len(text) <= 15:
        return int(text)
    return default


def _context_from(environ: dict[str, Any]) -> TaskContext:
    get = environ.get
    eta = get("HTTP_X_APPENGINE_TASKETA") or ""
    eta_value: float | None = None
    if len(eta) <= 40:
        try:
            eta_value = float(eta)
        except ValueError:
            pass
        if eta_value is not None and not (math.isfinite(eta_value) and 0 <= eta_value < 1e11):
            eta_value = None
    retries = _count(get("HTTP_X_APPENGINE_TASKRETRYCOUNT") or "0", 0) or 0
    return TaskContext(
        name=get("HTTP_X_APPENGINE_TASKNAME", ""),
        queue=get("HTTP_X_APPENGINE_QUEUENAME", ""),
        execution_count=retries + 1,
        eta=eta_value,
    )


def _respond(
    start_response: Callable[..., Any], status: int, text: str, extra: list[tuple[str, str]] | None = None
) -> list[bytes]:
    body = (text + "\n").encode("utf-8", "replace")
    headers = [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body)))]
    start_response(_REASONS[status], headers + (extra or []))
    return [body]
