"""``defer``: run a function later, in a worker, with App Engine's options.

``defer(fn, *args, **kwargs)`` pickles the call, signs it, and hands it to the
configured queue backend (``GAESERVICES_QUEUE``). Options use the names of App
Engine's deferred library, with a leading underscore so they never clash with
the function's own keyword arguments: ``_queue``, ``_countdown``, ``_eta``,
``_name``, ``_retry_options``, ``_headers``, ``_target``, ``_url``,
``_transactional``; and ``_services`` to use a :class:`~gaeservices.Services`
other than the process default.
"""

from __future__ import annotations

import functools
import re
import time
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from typing import Any

from ..config import get_services
from ..exceptions import (
    InvalidTaskError,
    PermanentTaskFailure,
    SingularTaskFailure,
    TaskAlreadyExistsError,
    UnsupportedTaskOptionError,
)
from . import payload
from .context import TaskContext, current_task

__all__ = [
    "defer",
    "RetryOptions",
    "Task",
    "TaskHandle",
    "PermanentTaskFailure",
    "SingularTaskFailure",
    "TaskAlreadyExistsError",
    "InvalidTaskError",
    "UnsupportedTaskOptionError",
    "TaskContext",
    "current_task",
    "DEFAULT_URL",
]

DEFAULT_URL = "/_ah/queue/deferred"
DEFAULT_QUEUE = "default"

# App Engine's rules, applied everywhere so that code moves between backends.
_TASK_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,500}$")
_QUEUE_NAME = re.compile(r"^[a-zA-Z0-9-]{1,100}$")
_OPTIONS = frozenset(
    (
        "_queue",
        "_countdown",
        "_eta",
        "_name",
        "_retry_options",
        "_headers",
        "_target",
        "_url",
        "_transactional",
        "_services",
    )
)


class RetryOptions:
    """When a failed task is tried again, and when it is given up (App Engine's names).

    The wait after the n-th failure starts at ``min_backoff_seconds``, doubles
    ``max_doublings`` times, then grows linearly, never beyond
    ``max_backoff_seconds``. A task is given up (dead-lettered) once it has been
    retried ``task_retry_limit`` times *and* is older than ``task_age_limit``
    seconds; a limit left None does not hold it back. With neither limit it is
    retried for ever, as on App Engine.
    """

    __slots__ = (
        "task_retry_limit",
        "task_age_limit",
        "min_backoff_seconds",
        "max_backoff_seconds",
        "max_doublings",
    )

    def __init__(
        self,
        *,
        task_retry_limit: int | None = None,
        task_age_limit: float | None = None,
        min_backoff_seconds: float = 0.1,
        max_backoff_seconds: float = 3600.0,
        max_doublings: int = 16,
    ) -> None:
        if task_retry_limit is not None and task_retry_limit < 0:
            raise InvalidTaskError("task_retry_limit must be >= 0")
        if min_backoff_seconds < 0 or max_backoff_seconds < min_backoff_seconds:
            raise InvalidTaskError("need 0 <= min_backoff_seconds <= max_backoff_seconds")
        if max_doublings < 0:
            raise InvalidTaskError("max_doublings must be >= 0")
        self.task_retry_limit = task_retry_limit
        self.task_age_limit = task_age_limit
        self.min_backoff_seconds = float(min_backoff_seconds)
        self.max_backoff_seconds = float(max_backoff_seconds)
        self.max_doublings = int(max_doublings)

    @classmethod
    def coerce(cls, value: Any) -> RetryOptions | None:
        """A RetryOptions from itself, a mapping, or the SDK's ``TaskRetryOptions``."""
        if value is None or isinstance(value, cls):
            return value
        if isinstance(value, Mapping):
            items = dict(value)
        else:  # the SDK's TaskRetryOptions keeps the same names as attributes
            items = {
                name: getattr(value, name) for name in cls.__slots__ if getattr(value, name, None) is not None
            }
        unknown = set(items) - set(cls.__slots__)
        if unknown:
            raise InvalidTaskError(f"unknown retry options {sorted(unknown)}; known: {list(cls.__slots__)}")
        return cls(**{k: v for k, v in items.items() if v is not None})

    def backoff(self, retry_count: int) -> float:
        """Seconds to wait before retry number ``retry_count + 1`` (0-based)."""
        if retry_count <= self.max_doublings:
            delay = self.min_backoff_seconds * (2 ** retry_count)
        else:
            top = self.min_backoff_seconds * (2 ** self.max_doublings)
            delay = top * (retry_count - self.max_doublings + 1)
        return min(delay, self.max_backoff_seconds)

    def gives_up(self, retry_count: int, age: float) -> bool:
        """True when a task that failed ``retry_count + 1`` times should not run again."""
        limit, age_limit = self.task_retry_limit, self.task_age_limit
        if limit is None and age_limit is None:
            return False
        return (limit is None or retry_count >= limit) and (age_limit is None or age >= age_limit)

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__slots__}

    def __repr__(self) -> str:
        return f"RetryOptions({', '.join(f'{k}={v!r}' for k, v in self.to_dict().items())})"


class Task:
    """A task on its way to a queue backend: the signed body and its options.

    ``name`` is always set, except on a backend that lets the platform name
    unnamed tasks (``assigns_names``); ``named`` tells whether the application
    chose it (``_name``), which is when names de-duplicate. ``expires`` is the
    body's signed expiry (seconds since the epoch). ``call`` names what the task
    calls (``module.qualname``), for display only: set by ``defer``, never signed.
    """

    __slots__ = (
        "name", "queue", "eta", "body", "url", "headers", "target",
        "retry_options", "transactional", "payload_key", "named", "expires", "call",
    )

    def __init__(
        self,
        *,
        body: bytes,
        name: str | None = None,
        queue: str = DEFAULT_QUEUE,
        eta: float | None = None,
        url: str = DEFAULT_URL,
        headers: dict[str, str] | None = None,
        target: str | None = None,
        retry_options: RetryOptions | None = None,
        transactional: Any = False,
        payload_key: str | None = None,
        named: bool = False,
        expires: float | None = None,
        call: str | None = None,
    ) -> None:
        self.body = body
        self.name = name
        self.queue = queue
        self.eta = eta  # seconds since the epoch; None means now
        self.url = url
        self.headers = headers or {}
        self.target = target
        self.retry_options = retry_options
        self.transactional = transactional
        self.payload_key = payload_key
        self.named = named
        self.expires = expires
        self.call = call


def callable_name(obj: Any) -> str:
    """``module.qualname`` of what ``defer`` was given (a partial's or a method's function)."""
    while isinstance(obj, functools.partial):
        obj = obj.func
    function = getattr(obj, "__func__", obj)  # a bound, static or class method
    qualname = getattr(function, "__qualname__", None)
    if not isinstance(qualname, str):  # an instance with __call__
        function = type(obj)
        qualname = function.__qualname__
    return f"{getattr(function, '__module__', None) or '?'}.{qualname}"


class TaskHandle:
    """What ``defer`` returns: the task's ``name``, ``queue`` and ``eta`` (UTC)."""

    __slots__ = ("name", "queue", "eta")

    def __init__(self, name: str, queue: str, eta: datetime) -> None:
        self.name = name
        self.queue = queue
        self.eta = eta

    def __repr__(self) -> str:
        return f"<TaskHandle {self.name!r} queue={self.queue!r} eta={self.eta.isoformat()}>"


def to_datetime(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, timezone.utc)


def _eta_seconds(eta: Any) -> float:
    if isinstance(eta, datetime):
        if eta.tzinfo is None:  # naive datetimes are UTC, as in the SDK
            eta = eta.replace(tzinfo=timezone.utc)
        return eta.timestamp()
    if isinstance(eta, (int, float)):
        return float(eta)
    raise InvalidTaskError(f"_eta must be a datetime or seconds since the epoch, not {eta!r}")


#: Frameworks that keep transactions of their own (Django's ``transaction.atomic``)
#: register a hook here. It receives the function that queues the task and returns
#: True when it has scheduled that function for the commit of the caller's open
#: transaction (and dropped it on rollback); False when no transaction is open.
#: ``defer(..., _transactional=True)`` asks them before the queue backend.
transaction_hooks: list[Callable[[Callable[[], object]], bool]] = []


def _on_commit(
    obj: Any, args: Any, kwargs: Any, options: dict[str, Any], services: Any,
    name: str | None, queue: str, eta: float | None, url: str, headers: dict[str, str] | None,
) -> TaskHandle | None:
    """Queue the task when a framework's transaction commits; None if none is open."""
    payload.dumps(obj, args, kwargs)  # refuse what cannot be queued now, not at commit
    name = name or payload.new_task_name()  # the handle names the task before it exists
    plain = dict(options, _transactional=False, _name=name, _queue=queue, _url=url, _services=services)
    plain.pop("_countdown", None)
    plain["_eta"] = eta
    if headers is not None:
        plain["_headers"] = headers

    def add() -> object:
        return defer(obj, *args, **kwargs, **plain)

    for hook in transaction_hooks:
        if hook(add):
            return TaskHandle(name, queue, to_datetime(eta if eta is not None else time.time()))
    return None  # no framework transaction open: the queue backend decides (App Engine joins its own)


def defer(obj: Any, *args: Any, **kwargs: Any) -> TaskHandle:
    """Run ``obj(*args, **kwargs)`` later in a worker; return the task's handle.

    ``obj`` may be a module-level function, a static or class method, a method of
    a picklable instance, or a ``functools.partial`` of these. Anything a worker
    could not import is refused here with :class:`InvalidTaskError`. A named task
    that exists already raises :class:`TaskAlreadyExistsError`.
    """
    options = {key: kwargs.pop(key) for key in _OPTIONS.intersection(kwargs)}
    services = options.get("_services") or get_services()
    queue = options.get("_queue") or DEFAULT_QUEUE
    if not _QUEUE_NAME.match(queue):
        raise InvalidTaskError(f"bad queue name {queue!r}: letters, digits and hyphens, 1-100 of them")
    name = options.get("_name")
    if name is not None and not _TASK_NAME.match(name):
        raise InvalidTaskError(f"bad task name {name!r}: letters, digits, _ and -, 1-500 of them")
    countdown, eta = options.get("_countdown"), options.get("_eta")
    if countdown is not None and eta is not None:
        raise InvalidTaskError("give _countdown or _eta, not both")
    if countdown is not None:
        if countdown < 0:
            raise InvalidTaskError("_countdown must be >= 0")
        eta_seconds: float | None = time.time() + countdown
    else:
        eta_seconds = None if eta is None else _eta_seconds(eta)
    url = options.get("_url") or DEFAULT_URL
    if not url.startswith("/"):
        raise InvalidTaskError(f"_url must be a path starting with '/', not {url!r}")
    headers = options.get("_headers")
    if headers is not None:
        headers = {str(k): str(v) for k, v in dict(headers).items()}

    retry_options = RetryOptions.coerce(options.get("_retry_options"))
    backend = services.queue
    if options.get("_transactional") is True and transaction_hooks:
        handle = _on_commit(obj, args, kwargs, options, services, name, queue, eta_seconds, url, headers)
        if handle is not None:
            return handle
    named = name is not None
    if name is None and not getattr(backend, "assigns_names", False):
        name = payload.new_task_name()
    now = time.time()
    lifetime = float(getattr(backend, "payload_lifetime", payload.DEFAULT_LIFETIME))
    if retry_options is not None and retry_options.task_age_limit:
        lifetime = max(lifetime, retry_options.task_age_limit + 86400.0)
    expires = max(now if eta_seconds is None else eta_seconds, now) + lifetime
    pickled = payload.dumps(obj, args, kwargs)
    codec = backend.codec if hasattr(backend, "codec") else payload.PayloadCodec(services)
    body, payload_key = codec.seal(
        pickled, name=name or "", queue=queue, expires=expires, named=named, max_size=backend.max_payload
    )
    task = Task(
        body=body,
        name=name,
        queue=queue,
        eta=eta_seconds,
        url=url,
        headers=headers,
        target=options.get("_target"),
        retry_options=retry_options,
        transactional=options.get("_transactional") or False,
        payload_key=payload_key,
        named=named,
        expires=expires,
        call=callable_name(obj),
    )
    try:
        return backend.add(task)
    except BaseException:
        codec.discard(payload_key)  # the task was not queued: do not keep its payload
        raise
