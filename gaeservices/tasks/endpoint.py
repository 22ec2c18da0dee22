"""``DeferredApp``: the WSGI endpoint that runs deferred tasks (``/_ah/queue/deferred``).

A request is checked in this order, and stops at the first refusal:

1. method: anything but POST is 405 with ``Allow: POST``;
2. on App Engine, the ``X-AppEngine-TaskName`` header must be present -- the
   platform strips it from outside traffic, so only the task queue can send it;
3. the body's signature (403 if it does not verify, 400 if there is no body or
   no signature) -- *nothing is unpickled before this point*;
4. the application's bootstrap, once per process (500 if it fails: retried);
5. the call is unpickled (a callable that cannot be imported any more is a
   permanent failure recording the real ImportError) and run.

Outcomes: success 200; :class:`PermanentTaskFailure` 200 (not retried,
recorded as failed); :class:`SingularTaskFailure` 408 (retried, no traceback);
any other exception 500 (retried, traceback logged). The outcome is also in
the ``X-Task-Outcome`` response header, which the local queue's HTTP dispatcher
reads to tell a permanent failure from a success.

The local dispatcher and ``immediate://`` call :meth:`DeferredApp.execute`, the
same code minus WSGI, so running in-process costs no environ building.
"""

from __future__ import annotations

import logging
import sys
import traceback
from collections.abc import Callable, Iterable
from typing import Any

from ..config import Services, get_services
from ..exceptions import PermanentTaskFailure, SingularTaskFailure
from . import payload
from .bootstrap import bootstrap_for
from .context import TaskContext, _current

__all__ = ["DeferredApp", "TaskResult", "SUCCESS", "PERMANENT_FAILURE", "RETRY", "REFUSED"]

logger = logging.getLogger("gaeservices.tasks")

SUCCESS = "success"
PERMANENT_FAILURE = "permanent-failure"
RETRY = "retry"
REFUSED = "refused"

OUTCOME_HEADER = "X-Task-Outcome"
RESULT_ENVIRON_KEY = "gaeservices.tasks.result"
MAX_BODY = 32 * 1024 * 1024  # App Engine's own request limit

_REASONS = {
    200: "200 OK",
    400: "400 Bad Request",
    403: "403 Forbidden",
    405: "405 Method Not Allowed",
    408: "408 Request Timeout",
    413: "413 Content Too Large",
    500: "500 Internal Server Error",
}


class TaskResult:
    """How one delivery went: HTTP ``status``, ``outcome``, ``error`` text and ``exception``."""

    __slots__ = ("status", "outcome", "error", "exception")

    def __init__(self, status: int, outcome: str, error: str = "", exception: BaseException | None = None):
        self.status = status
        self.outcome = outcome
        self.error = error
        self.exception = exception

    @property
    def done(self) -> bool:
        """True when the task must not run again (success or permanent failure)."""
        return self.outcome in (SUCCESS, PERMANENT_FAILURE)

    def __repr__(self) -> str:
        return f"<TaskResult {self.status} {self.outcome}{' ' + self.error[:60] if self.error else ''}>"


_OK = TaskResult(200, SUCCESS)


def _formatted(exc: BaseException) -> str:
    return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))


class DeferredApp:
    """The WSGI application that runs deferred tasks; mount it at ``/_ah/queue/deferred``.

    ``require_task_header`` (default: on App Engine only) refuses requests
    without ``X-AppEngine-TaskName``. ``max_body`` bounds what is read from an
    unauthenticated client before the signature is checked.
    """

    def __init__(
        self,
        services: Services | None = None,
        *,
        require_task_header: bool | None = None,
        max_body: int = MAX_BODY,
    ) -> None:
        self.services = services or get_services()
        self.require_task_header = (
            self.services.on_app_engine if require_task_header is None else require_task_header
        )
        self.max_body = max_body
        self.codec = payload.PayloadCodec(self.services)
        self.bootstrap = bootstrap_for(self.services.bootstrap, self.services.environ)
        self._permanent, self._singular = _failure_classes()

    # -- the task, without WSGI ------------------------------------------------

    def execute(self, body: bytes, context: TaskContext) -> TaskResult:
        """Verify, bootstrap, unpickle and run one task body; never raises for the task."""
        try:
            pickled, stored_key = self.codec.open(body)
        except payload.ForgedPayload as exc:
            logger.warning("refused task %r: %s", context.name, exc)
            return TaskResult(403, REFUSED, str(exc))
        except payload.MalformedPayload as exc:
            logger.warning("refused task %r: %s", context.name, exc)
            return TaskResult(400, REFUSED, str(exc))
        except LookupError as exc:  # stored payload deleted: an earlier run finished it
            logger.warning("task %r: %s", context.name, exc)
            return TaskResult(200, PERMANENT_FAILURE, str(exc))
        except Exception as exc:  # the store is unreachable: try later
            logger.exception("task %r: cannot read its stored payload", context.name)
            return TaskResult(500, RETRY, _formatted(exc), exc)

        if not self.bootstrap.done:
            try:
                self.bootstrap.ensure()
            except Exception as exc:
                return TaskResult(500, RETRY, f"bootstrap {self.bootstrap.description} failed:\n{_formatted(exc)}", exc)

        try:
            function, args, kwargs = payload.loads(pickled)
        except Exception as exc:
            # The code changed under the queue (renamed, removed): retrying cannot help.
            logger.error("task %r cannot be loaded, failing it permanently:\n%s", context.name, _formatted(exc))
            self._discard(stored_key)
            return TaskResult(200, PERMANENT_FAILURE, _formatted(exc), exc)

        token = _current.set(context)
        try:
            function(*args, **kwargs)
        except self._permanent as exc:
            logger.warning("task %r failed permanently: %r", context.name, exc)
            self._discard(stored_key)
            return TaskResult(200, PERMANENT_FAILURE, _formatted(exc), exc)
        except self._singular as exc:
            logger.info("task %r failed once and will be retried: %r", context.name, exc)
            return TaskResult(408, RETRY, _formatted(exc), exc)
        except Exception as exc:
            logger.exception("task %r failed and will be retried", context.name)
            return TaskResult(500, RETRY, _formatted(exc), exc)
        finally:
            _current.reset(token)
        self._discard(stored_key)
        return _OK

    def _discard(self, key: str | None) -> None:
        if key is None:
            return
        try:
            self.codec.discard(key)
        except Exception:  # the task's outcome stands; the payload is only garbage now
            logger.exception("could not delete the stored payload %s", key)

    # -- WSGI ------------------------------------------------------------------

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("REQUEST_METHOD") != "POST":
            return _respond(start_response, 405, "only POST runs a task", [("Allow", "POST")])
        if self.require_task_header and "HTTP_X_APPENGINE_TASKNAME" not in environ:
            logger.warning("refused a request without X-AppEngine-TaskName")
            return _respond(start_response, 403, "not sent by the task queue")
        length = environ.get("CONTENT_LENGTH") or ""
        if not (length.isascii() and length.isdigit()):  # "\xb2".isdigit(), yet int() refuses it
            return _respond(start_response, 400, "a body with a Content-Length is required")
        size = int(length)
        if size > self.max_body:
            return _respond(start_response, 413, "body too large")
        body = environ["wsgi.input"].read(size) if size else b""
        if len(body) != size:
            return _respond(start_response, 400, "truncated body")
        result = self.execute(body, _context_from(environ))
        environ[RESULT_ENVIRON_KEY] = result
        text = result.outcome
        if result.outcome in (PERMANENT_FAILURE, REFUSED) and result.error:
            text = f"{result.outcome}: {result.error.strip().splitlines()[-1]}"
        return _respond(start_response, result.status, text, [(OUTCOME_HEADER, result.outcome)])


def _context_from(environ: dict[str, Any]) -> TaskContext:
    get = environ.get
    retries = get("HTTP_X_APPENGINE_TASKRETRYCOUNT", "0")
    eta = get("HTTP_X_APPENGINE_TASKETA")
    try:
        eta_value = float(eta) if eta else None
    except ValueError:
        eta_value = None
    return TaskContext(
        name=get("HTTP_X_APPENGINE_TASKNAME", ""),
        queue=get("HTTP_X_APPENGINE_QUEUENAME", "default"),
        execution_count=(int(retries) if retries.isascii() and retries.isdigit() else 0) + 1,
        eta=eta_value,
    )


def _respond(
    start_response: Callable[..., Any], status: int, text: str, extra: list[tuple[str, str]] | None = None
) -> list[bytes]:
    body = (text + "\n").encode("utf-8", "replace")
    headers = [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body)))]
    start_response(_REASONS[status], headers + (extra or []))
    return [body]


def _failure_classes() -> tuple[tuple[type[BaseException], ...], tuple[type[BaseException], ...]]:
    """Ours, plus the SDK's deferred-library failures when that library is loaded,
    so tasks written against ``google.appengine.ext.deferred`` keep their meaning."""
    permanent: list[type[BaseException]] = [PermanentTaskFailure]
    singular: list[type[BaseException]] = [SingularTaskFailure]
    sdk = sys.modules.get("google.appengine.ext.deferred.deferred")
    if sdk is not None:
        permanent.append(sdk.PermanentTaskFailure)
        singular.append(sdk.SingularTaskFailure)
    return tuple(permanent), tuple(singular)
