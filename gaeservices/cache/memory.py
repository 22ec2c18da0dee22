"""``memory://``: an in-process cache, the embedded default.

Thread-safe (one lock, held only for dictionary work: encoding and decoding
happen outside it), least-recently-used eviction bounded by the total bytes of
keys and values, per-key expiry. Values are stored encoded, exactly as they
would be in memcached, so a value read back is a copy, size limits apply the
same way, and counters follow memcached's rules.

It lives in one process: each worker process of a server has its own.
"""

from __future__ import annotations

import itertools
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from ..exceptions import ConfigurationError, NotAnIntegerError
from .api import (
    DEFAULT_TIMEOUT,
    Cache,
    _EXPIRED,
    _NEVER,
    THIRTY_DAYS,
    common_options,
    decode,
    parse_size,
)

__all__ = ["MemoryCache"]

_U64 = 2**64


class MemoryCache(Cache):
    """An in-process LRU cache of at most ``max_bytes`` bytes of keys and values."""

    shared = False  # each process has its own

    def __init__(
        self,
        *,
        max_bytes: int = 64 * 1024 * 1024,
        key_prefix: str = "",
        default_timeout: float | None = 300,
        max_item_size: int = 1024 * 1024,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(
            key_prefix=key_prefix, default_timeout=default_timeout, max_item_size=max_item_size
        )
        if max_bytes <= 0:
            raise ConfigurationError("max_bytes must be positive")
        self.max_bytes = int(max_bytes)
        # Seconds that only move forwards (expiry deadlines); tests pass their own.
        self._clock = clock
        # key -> (data, flags, deadline or None, cas id); most recently used last.
        self._items: OrderedDict[bytes, tuple[bytes, int, float | None, int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self._cas_ids = itertools.count(1)

    @classmethod
    def from_url(cls, url: Any, services: Any = None) -> MemoryCache:
        options = common_options(url)
        if "max_bytes" in url.options:
            options["max_bytes"] = parse_size(url, "max_bytes", url.options["max_bytes"])
        return cls(**options)

    # -- internals (call with the lock held) -------------------------------

    def _deadline(self, timeout: Any) -> float | None:
        """Like :meth:`Cache._expire`, as a monotonic deadline (-inf: already expired)."""
        expire = self._expire(timeout)
        if expire == _NEVER:
            return None
        if expire == _EXPIRED:
            return -math.inf
        if expire > THIRTY_DAYS:  # an absolute time: see Cache._expire
            return self._clock() + (expire - time.time())
        return self._clock() + expire

    def _live(self, key: bytes) -> tuple[bytes, int, float | None, int] | None:
        item = self._items.get(key)
        if item is None:
            return None
        deadline = item[2]
        if deadline is not None and deadline <= self._clock():
            self._remove(key)
            return None
        return item

    def _remove(self, key: bytes) -> bool:
        item = self._items.pop(key, None)
        if item is None:
            return False
        self._bytes -= len(key) + len(item[0])
        return True

    def _store(self, key: bytes, data: bytes, flags: int, deadline: float | None) -> None:
        self._remove(key)
        if deadline == -math.inf:
            return  # stored and expired at once
        self._items[key] = (data, flags, deadline, next(self._cas_ids))
        self._bytes += len(key) + len(data)
        while self._bytes > self.max_bytes:
            oldest, item = self._items.popitem(last=False)
            self._bytes -= len(oldest) + len(item[0])

    # -- the API -----------------------------------------------------------

    def get(self, key: str, default: Any = None) -> Any:
        server_key = self._key(key)
        with self._lock:
            item = self._live(server_key)
            if item is None:
                return default
            self._items.move_to_end(server_key)
        return decode(item[0], item[1])

    def set(self, key: str, value: Any, *, timeout: Any = DEFAULT_TIMEOUT) -> bool:
        server_key = self._key(key)
        data, flags = self._encode(value)
        deadline = self._deadline(timeout)
        with self._lock:
            self._store(server_key, data, flags, deadline)
        return True

    def add(self, key: str, value: Any, *, timeout: Any = DEFAULT_TIMEOUT) -> bool:
        server_key = self._key(key)
        data, flags = self._encode(value)
        deadline = self._deadline(timeout)
        with self._lock:
            if self._live(server_key) is not None:
                return False
            self._store(server_key, data, flags, deadline)
        return True

    def replace(self, key: str, value: Any, *, timeout: Any = DEFAULT_TIMEOUT) -> bool:
        server_key = self._key(key)
        data, flags = self._encode(value)
        deadline = self._deadline(timeout)
        with self._lock:
            if self._live(server_key) is None:
                return False
            self._store(server_key, data, flags, deadline)
        return True

    def delete(self, key: str) -> bool:
        server_key = self._key(key)
        with self._lock:
            return self._live(server_key) is not None and self._remove(server_key)

    def get_many(self, keys: Iterable[str]) -> dict[str, Any]:
        found = []
        with self._lock:
            for key in keys:
                server_key = self._key(key)
                item = self._live(server_key)
                if item is not None:
                    self._items.move_to_end(server_key)
                    found.append((key, item))
        return {key: decode(item[0], item[1]) for key, item in found}

    def set_many(self, mapping: Mapping[str, Any], *, timeout: Any = DEFAULT_TIMEOUT) -> list[str]:
        encoded = [(self._key(key), self._encode(value)) for key, value in mapping.items()]
        deadline = self._deadline(timeout)
        with self._lock:
            for server_key, (data, flags) in encoded:
                self._store(server_key, data, flags, deadline)
        return []

    def delete_many(self, keys: Iterable[str]) -> None:
        server_keys = [self._key(key) for key in keys]
        with self._lock:
            for server_key in server_keys:
                self._remove(server_key)

    def gets(self, key: str, default: Any = None) -> tuple[Any, Any]:
        server_key = self._key(key)
        with self._lock:
            item = self._live(server_key)
            if item is None:
                return default, None
            self._items.move_to_end(server_key)
        return decode(item[0], item[1]), item[3]

    def cas(self, key: str, value: Any, token: Any, *, timeout: Any = DEFAULT_TIMEOUT) -> bool:
        server_key = self._key(key)
        data, flags = self._encode(value)
        deadline = self._deadline(timeout)
        with self._lock:
            item = self._live(server_key)
            if item is None or item[3] != token:
                return False
            self._store(server_key, data, flags, deadline)
        return True

    def touch(self, key: str, *, timeout: Any = DEFAULT_TIMEOUT) -> bool:
        server_key = self._key(key)
        deadline = self._deadline(timeout)
        with self._lock:
            item = self._live(server_key)
            if item is None:
                return False
            if deadline == -math.inf:
                self._remove(server_key)
            else:
                self._items[server_key] = (item[0], item[1], deadline, item[3])
                self._items.move_to_end(server_key)
        return True

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._bytes = 0

    def _incr(self, key: bytes, delta: int, decrement: bool) -> int | None:
        with self._lock:
            item = self._live(key)
            if item is None:
                return None
            data, flags, deadline, _ = item
            # memcached's rule: the stored bytes must be a decimal unsigned 64-bit number.
            digits = data.rstrip(b" ")
            if not digits.isdigit() or int(digits) >= _U64:
                raise NotAnIntegerError(
                    f"cannot increment or decrement a value that is not an unsigned integer "
                    f"(flags {flags})"
                )
            value = int(digits)
            value = max(value - delta, 0) if decrement else (value + delta) % _U64
            self._store(key, b"%d" % value, flags, deadline)
            return value

    def stats(self) -> dict[str, int]:
        """Item count and bytes used, for monitoring."""
        with self._lock:
            return {"items": len(self._items), "bytes": self._bytes, "max_bytes": self.max_bytes}
