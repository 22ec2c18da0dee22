"""Task payloads: the call pickled with a pinned protocol, sealed in a signed envelope.

A body on the wire (POSTed to ``/_ah/queue/deferred``, or handed to a worker) is
``sign(envelope + kind + data)`` where the envelope binds the call to its task::

    b"T" name b"\n" queue b"\n" expires b"\n" nonce b"\n" flags b"\n"

- ``name``: the task's name (empty only for tasks the platform names, i.e.
  transactional App Engine tasks: such a body runs only where the platform's
  task headers are trusted);
- ``queue``: its queue;
- ``expires``: integer seconds since the epoch after which it is refused;
- ``nonce``: 16 random hex digits, so two identical calls never share a body,
  and the key of the body's tombstone;
- ``flags``: ``n`` when the application named the task (``_name``): its
  success leaves a tombstone in the store, so a replay of the body does not run.

``kind + data`` is ``b"P" + pickle`` (the call itself) or ``b"R" + key``, a
reference to a payload kept in the store (``sign(b"S" + key + b"\n" + pickle)``,
bound to its key), for calls larger than the queue backend carries.

Signatures are checked over the raw bytes *before* anything is unpickled: an
unsigned or altered body is refused without pickle ever seeing it. The signer
is the application's rotating key list (the newest key signs, every key
verifies), so keys can be rotated while tasks are in flight. The checks of the
envelope against the delivery (name, queue, expiry, tombstone) are the
endpoint's: see :meth:`gaeservices.tasks.endpoint.DeferredApp.execute`.

Callables are checked when they are deferred, not when the worker meets them:
a lambda, a nested function or a function of ``__main__`` cannot be imported by
another process, so ``defer`` refuses it with the reason and the remedy.
"""

from __future__ import annotations

import functools
import inspect
import io
import math
import os
import pickle
import time
import types
import uuid
from typing import Any

from ..exceptions import InvalidTaskError, TaskError

__all__ = [
    "PICKLE_PROTOCOL",
    "SALT",
    "MAX_ENVELOPE",
    "DEFAULT_LIFETIME",
    "ForgedPayload",
    "MalformedPayload",
    "ExpiredPayload",
    "Envelope",
    "PayloadCodec",
    "dumps",
    "loads",
    "check_callable",
    "new_task_name",
]

#: Pinned so that a worker on another Python (3.8+) reads what a web process wrote.
PICKLE_PROTOCOL = 5
SALT = "gaeservices.tasks"
VERSION = b"T"
INLINE = b"P"
REFERENCE = b"R"
STORED = b"S"
STORE_PREFIX = "gaeservices.tasks.payload:"
TOMBSTONE_PREFIX = "gaeservices.tasks.done:"
#: What a body carries besides the pickled call: the envelope (a name of up to 500
#: characters, a queue of up to 100, expiry, nonce, flags) and the signature. The
#: endpoint reads at most the inline payload limit plus this before verifying.
MAX_ENVELOPE = 1024
#: How long after its ETA a body stays valid unless the backend says otherwise.
DEFAULT_LIFETIME = 30 * 86400.0


class ForgedPayload(TaskError):
    """The signature does not verify (altered, unsigned, or signed with another key)."""


class MalformedPayload(TaskError, ValueError):
    """The body is not a payload at all (empty, no signature, unknown kind or format)."""


class ExpiredPayload(TaskError):
    """The body verifies but its signed expiry has passed: it must not run."""


def new_task_name() -> str:
    """A generated task name: the time first, so new rows append to a name index."""
    return f"{time.time_ns():016x}{os.urandom(5).hex()}"


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


# --- the envelope, signing and large payloads ------------------------------------


class Envelope:
    """What a verified body says about itself; ``kind`` + ``data`` is the call or a reference."""

    __slots__ = ("name", "queue", "expires", "nonce", "named", "kind", "data")

    def __init__(
        self, name: str, queue: str, expires: int, nonce: str, named: bool, kind: bytes, data: bytes
    ) -> None:
        self.name = name
        self.queue = queue
        self.expires = expires
        self.nonce = nonce
        self.named = named
        self.kind = kind
        self.data = data

    @property
    def stored_key(self) -> str | None:
        """The store key of the payload a reference body points to (None when inline)."""
        return self.data.decode() if self.kind == REFERENCE else None

    @property
    def tombstone_key(self) -> str:
        return f"{TOMBSTONE_PREFIX}{self.queue}:{self.name}:{self.nonce}"

    def __repr__(self) -> str:
        return f"<Envelope {self.name!r} queue={self.queue!r} expires={self.expires} named={self.named}>"


class PayloadCodec:
    """Seals pickled calls into signed bodies and opens them again."""

    __slots__ = ("_signer", "_services", "_sep")

    def __init__(self, services: Any) -> None:
        self._services = services
        self._signer = services.signer(SALT)
        self._sep = self._signer.sep.encode() if isinstance(self._signer.sep, str) else self._signer.sep

    def seal(
        self,
        pickled: bytes,
        *,
        name: str,
        queue: str,
        expires: float,
        named: bool = False,
        max_size: int | None = None,
    ) -> tuple[bytes, str | None]:
        """The body for ``pickled`` bound to its task, and the store key if it went to the store.

        A call of more than ``max_size`` bytes is written to the store and the
        body carries a signed reference to it.
        """
        if "\n" in name or "\n" in queue or not (name.isascii() and queue.isascii()):
            raise InvalidTaskError(f"task and queue names are ASCII without line breaks: {name!r}, {queue!r}")
        header = b"".join(
            (
                VERSION, name.encode("ascii"), b"\n", queue.encode("ascii"), b"\n",
                str(math.ceil(expires)).encode(), b"\n", os.urandom(8).hex().encode(), b"\n",
                b"n" if named else b"", b"\n",
            )
        )
        if max_size is None or len(pickled) <= max_size:
            return self._signer.sign(header + INLINE + pickled), None
        key = STORE_PREFIX + uuid.uuid4().hex
        stored = self._signer.sign(STORED + key.encode() + b"\n" + pickled)
        self._services.store.put(key, stored, timeout=max(1.0, expires - time.time()) + 86400)
        return self._signer.sign(header + REFERENCE + key.encode()), key

    def open(self, body: bytes) -> Envelope:
        """Verify ``body`` and read its envelope. Raises ForgedPayload or MalformedPayload.

        Nothing is unpickled and the store is not read: :meth:`call` does that.
        """
        inner = self._verify(body)
        if inner[:1] != VERSION:
            if inner[:1] in (INLINE, REFERENCE):
                raise MalformedPayload(
                    "a body in the first payload format (not bound to a task name, queue and "
                    "expiry) is no longer run: defer the call again"
                )
            raise MalformedPayload("unknown payload format")
        parts = inner[1:].split(b"\n", 5)
        if len(parts) != 6:
            raise MalformedPayload("the envelope is incomplete")
        name, queue, expires, nonce, flags, rest = parts
        if not expires.isdigit() or rest[:1] not in (INLINE, REFERENCE):
            raise MalformedPayload("the envelope is malformed")
        try:
            return Envelope(
                name.decode("ascii"), queue.decode("ascii"), int(expires), nonce.decode("ascii"),
                flags == b"n", rest[:1], rest[1:],
            )
        except (UnicodeDecodeError, ValueError):
            raise MalformedPayload("the envelope is malformed") from None

    def call(self, envelope: Envelope) -> bytes:
        """The pickled call of a verified envelope, read from the store for a reference.

        LookupError when a stored payload is gone (deleted after an earlier run).
        """
        if envelope.kind == INLINE:
            return envelope.data
        key = envelope.data
        stored = self._services.store.get(key.decode())
        if stored is None:
            raise LookupError(f"the stored payload {key.decode()} is gone (deleted after an earlier run?)")
        inner = self._verify(stored)
        prefix = STORED + key + b"\n"
        if not inner.startswith(prefix):
            raise MalformedPayload("the stored payload belongs to another task")
        return inner[len(prefix):]

    def stored_key(self, body: bytes) -> str | None:
        """The store key a body refers to, or None (bodies that do not verify: None)."""
        try:
            return self.open(body).stored_key
        except (ForgedPayload, MalformedPayload):
            return None

    def discard(self, key: str | None) -> None:
        """Delete a stored payload once its task has succeeded or failed for good."""
        if key is not None:
            self._services.store.delete(key)

    def _verify(self, body: bytes) -> bytes:
        if not body or self._sep not in body:
            raise MalformedPayload("the body is empty or unsigned")
        from itsdangerous import BadSignature

        try:
            return self._signer.unsign(body)
        except BadSignature:
            raise ForgedPayload("the signature does not verify") from None
