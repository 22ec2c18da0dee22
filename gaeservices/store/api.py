"""The durable store's contract, shared by every backend.

A key-value store with expiry: keys are ``str`` of any length, values are
``bytes``, timeouts are seconds (``None`` = never expires). An expired row
behaves as absent for every operation; :meth:`Store.purge_expired` reclaims the
space. Every backend runs the same contract test suite.

Operations that must be atomic are atomic in the database itself (``add`` is an
insert-if-absent, ``delete(expected=…)`` a compare-and-delete, ``update`` one
transaction holding the row's write lock), so several processes on several
machines can share one store safely. A database failure raises
:class:`~gaeservices.exceptions.StoreError` with the cause chained, after the
transaction was rolled back: nothing is half-written.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterable
from typing import Protocol, runtime_checkable

__all__ = ["Store", "Updater", "storage_id", "expiry", "MAX_PLAIN_KEY_BYTES"]

#: ``update``'s callback: the live value (or None) in, the new value (None deletes) out.
Updater = Callable[[bytes | None], bytes | None]

#: Keys up to this many UTF-8 bytes are stored as they are; longer ones by digest,
#: which keeps every row's key within index limits (PostgreSQL btree, Datastore key names).
MAX_PLAIN_KEY_BYTES = 250


@runtime_checkable
class Store(Protocol):
    """What every store backend provides."""

    def get(self, key: str) -> bytes | None:
        """The live value of ``key``, or None."""

    def get_many(self, keys: Iterable[str]) -> dict[str, bytes]:
        """The live values of those ``keys`` that have one."""

    def put(self, key: str, value: bytes, *, timeout: float | None = None) -> None:
        """Store ``value`` under ``key``, replacing any value."""

    def add(self, key: str, value: bytes, *, timeout: float | None = None) -> bool:
        """Insert ``value`` only if ``key`` has no live value; True for the one caller that did."""

    def delete(self, key: str, *, expected: bytes | None = None) -> bool:
        """Delete ``key`` (only if its value equals ``expected``, when given); True if deleted."""

    def update(self, key: str, fn: Updater, *, timeout: float | None = None) -> bytes | None:
        """Replace ``key``'s value by ``fn(live value or None)`` in one transaction.

        ``fn`` may run more than once (when a concurrent writer forces a retry),
        so it must not have side effects. Returning None deletes the key.
        Returns what ``fn`` returned.
        """

    def purge_expired(self) -> int:
        """Delete expired rows; the number deleted."""

    def close(self) -> None:
        """Release connections."""


def storage_id(key: str) -> str:
    """The row id of ``key``: the key itself when short, a SHA-256 digest when long.

    The two forms carry different prefixes, so a short key can never collide with
    a long key's digest.
    """
    if not isinstance(key, str):
        raise TypeError(f"store keys are str, not {type(key).__name__}")
    try:
        encoded = key.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates: no database text column takes them
        encoded = b""
        plain = False
    else:
        # PostgreSQL text cannot hold NUL
        plain = len(encoded) <= MAX_PLAIN_KEY_BYTES and "\x00" not in key
    if plain:
        return "k:" + key
    encoded = encoded or key.encode("utf-8", "surrogatepass")
    return "h:" + hashlib.sha256(encoded).hexdigest()


def expiry(timeout: float | None, now: float | None = None) -> float | None:
    """The absolute expiry time (epoch seconds) for ``timeout`` seconds from now."""
    if timeout is None:
        return None
    if timeout < 0:
        raise ValueError(f"timeout must be >= 0 or None, not {timeout!r}")
    return (time.time() if now is None else now) + timeout


def check_value(value: bytes) -> bytes:
    if not isinstance(value, (bytes, bytearray, memoryview)):
        raise TypeError(f"store values are bytes, not {type(value).__name__}")
    return bytes(value)
