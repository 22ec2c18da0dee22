"""Task payloads: the call pickled with a pinned protocol, then always signed.

A payload on the wire (the body POSTed to ``/_ah/queue/deferred``) is one of:

- ``sign(b"P" + pickle)`` -- the call itself;
- ``sign(b"R" + key)`` -- a reference to the signed ``b"P"`` payload kept in the
  store, for calls larger than the queue backend accepts.

Signatures are checked over the raw bytes *before* anything is unpickled: an
unsigned or altered body is refused without pickle ever seeing it. The signer
is the application's rotating key list (the newest key signs, every key
verifies), so keys can be rotated while tasks are in flight.

Callables are checked when they are deferred, not when the worker meets them:
a lambda, a nested function or a function of ``__main__`` cannot be imported by
another process, so ``defer`` refuses it with the reason and the remedy.
"""

from __future__ import annotations

import functools
import inspect
import io
import pickle
import types
import uuid
from typing import Any

from ..exceptions import InvalidTaskError, TaskError

__all__ = [
    "PICKLE_PROTOCOL",
    "SALT",
    "ForgedPayload",
    "MalformedPayload",
    "PayloadCodec",
    "dumps",
    "loads",
    "check_callable",
]

#: Pinned so that a worker on another Python (3.8+) reads what a web process wrote.
PICKLE_PROTOCOL = 5
SALT = "gaeservices.tasks"
INLINE = b"P"
REFERENCE = b"R"
STORE_PREFIX = "gaeservices.tasks.payload:"


class ForgedPayload(TaskError):
    """The signature does not verify (altered, unsigned, or signed with another key)."""


class MalformedPayload(TaskError, ValueError):
    """The body is not a payload at all (empty, no signature, unknown kind)."""


# --- the call ------------------------------------------------------------------


def check_callable(obj: Any) -> None:
    """Raise InvalidTaskError when another process could not import ``obj``."""
    if isinstance(obj, functools.partial):
        check_callable(obj.func)
        return
    if inspect.ismethod(obj):
        owner = obj.__self__
        check_callable(owner if isinstance(owner, type) else type(owner))
        check_callable(obj.__func__)
        return
    if isinstance(obj, (types.FunctionType, type)):
        _check_named(obj)
        return
    if isinstance(obj, (types.BuiltinFunctionType, types.BuiltinMethodType)):
        return
    if not callable(obj):
        raise InvalidTaskError(f"{obj!r} is not callable")
    _check_named(type(obj))  # a callable instance: its class must be importable


def _check_named(obj: Any) -> None:
    qualname = getattr(obj, "__qualname__", "") or ""
    module = getattr(obj, "__module__", None)
    if getattr(obj, "__name__", "") == "<lambda>":
        raise InvalidTaskError(
            f"cannot defer a lambda ({module}.{qualname}): the worker finds a task's "
            "callable by module and name, and a lambda has none. Define a module-level "
            "function and defer it (arguments go after it: defer(fn, arg, key=value))."
        )
    if "<locals>" in qualname:
        raise InvalidTaskError(
            f"cannot defer {module}.{qualname}: it is defined inside another function, "
            "so the worker cannot import it. Move it to the top level of a module."
        )
    if module == "__main__":
        raise InvalidTaskError(
            f"cannot defer __main__.{qualname}: it is defined in the script being run, "
            "which the worker process does not have under that name. Move it into a "
            "module that both the application and the worker import."
        )


class _StrictPickler(pickle.Pickler):
    """Refuses functions and classes of ``__main__`` anywhere in the arguments."""

    def reducer_override(self, obj: Any) -> Any:
        if isinstance(obj, (types.FunctionType, type)) and getattr(obj, "__module__", None) == "__main__":
            _check_named(obj)
        return NotImplemented


def dumps(obj: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bytes:
    """Pickle a call; InvalidTaskError says why it cannot be run elsewhere."""
    check_callable(obj)
    call = (obj, args, kwargs)
    try:
        data = pickle.dumps(call, PICKLE_PROTOCOL)
    except Exception as exc:
        raise InvalidTaskError(
            f"cannot defer {obj!r}: the call cannot be pickled ({type(exc).__name__}: {exc}). "
            "Pass module-level functions, classes and plain data, or instances that pickle."
        ) from exc
    if b"__main__" in data:  # rare: only then pay for the precise check
        _StrictPickler(io.BytesIO(), PICKLE_PROTOCOL).dump(call)
    return data


def loads(data: bytes) -> tuple[Any, tuple[Any, ...], dict[str, Any]]:
    """The call back from :func:`dumps`. Only ever given verified bytes."""
    obj, args, kwargs = pickle.loads(data)
    return obj, args, kwargs


# --- signing and large payloads ---------------------------------------------------


class PayloadCodec:
    """Seals pickled calls into signed bodies and opens them again."""

    __slots__ = ("_signer", "_services", "_sep")

    def __init__(self, services: Any) -> None:
        self._services = services
        self._signer = services.signer(SALT)
        self._sep = self._signer.sep.encode() if isinstance(self._signer.sep, str) else self._signer.sep

    def seal(self, pickled: bytes, *, max_size: int | None = None) -> tuple[bytes, str | None]:
        """The body for ``pickled``, and the store key if it had to go to the store."""
        body = self._signer.sign(INLINE + pickled)
        if max_size is None or len(body) <= max_size:
            return body, None
        key = STORE_PREFIX + uuid.uuid4().hex
        self._services.store.put(key, body)
        return self._signer.sign(REFERENCE + key.encode()), key

    def open(self, body: bytes) -> tuple[bytes, str | None]:
        """Verify ``body``; return the pickled call and its store key (or None).

        Raises ForgedPayload or MalformedPayload; nothing is unpickled here.
        """
        inner = self._verify(body)
        if inner[:1] == INLINE:
            return inner[1:], None
        key = inner[1:].decode()
        stored = self._services.store.get(key)
        if stored is None:
            raise LookupError(f"the stored payload {key} is gone (deleted after an earlier run?)")
        inner = self._verify(stored)
        if inner[:1] != INLINE:
            raise MalformedPayload("a stored payload refers to another")
        return inner[1:], key

    def stored_key(self, body: bytes) -> str | None:
        """The store key a body refers to, or None (bodies that do not verify: None)."""
        try:
            inner = self._verify(body)
        except (ForgedPayload, MalformedPayload):
            return None
        return inner[1:].decode() if inner[:1] == REFERENCE else None

    def discard(self, key: str | None) -> None:
        """Delete a stored payload once its task has succeeded or failed for good."""
        if key is not None:
            self._services.store.delete(key)

    def _verify(self, body: bytes) -> bytes:
        if not body or self._sep not in body:
            raise MalformedPayload("the body is empty or unsigned")
        from itsdangerous import BadSignature

        try:
            inner = self._signer.unsign(body)
        except BadSignature:
            raise ForgedPayload("the signature does not verify") from None
        if inner[:1] not in (INLINE, REFERENCE):
            raise MalformedPayload("unknown payload kind")
        return inner
