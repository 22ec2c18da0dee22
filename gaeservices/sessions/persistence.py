"""Where session records live: the ``cache``, ``cached_db`` and ``db`` modes.

A record is the session's JSON document as bytes. Each mode implements four
operations for the session object:

``load(sid) -> (raw, token)``
    The stored record (or None) and, when it came from the cache, the cache's
    compare-and-set token, which lets the write that follows detect that
    another request changed the record in between.
``save(sid, merge, raw, token, ttl) -> raw``
    Apply ``merge`` (stored record in, new record out; None means "the record
    is gone, write nothing") atomically, so overlapping requests that change
    different keys keep each other's changes.
``create(sid, raw, ttl)``
    Store a brand-new record under a fresh id.
``delete(sid)``

The cache and store are looked up on the :class:`~gaeservices.config.Services`
once, on first use, not per request.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from ..exceptions import SessionError, StoreError

__all__ = ["MODES", "CacheMode", "CachedDBMode", "DBMode"]

logger = logging.getLogger("gaeservices.sessions")

Merge = Callable[[bytes | None], bytes | None]

# Compare-and-set rounds before a cache-only save gives up; each failed round
# means another request wrote the same session in between.
_CAS_ATTEMPTS = 16


class _Mode:
    __slots__ = ("services", "prefix", "max_age", "_cache", "_store")

    def __init__(self, services: Any, *, prefix: str, max_age: int) -> None:
        self.services = services
        self.prefix = prefix
        self.max_age = max_age
        self._cache: Any = None
        self._store: Any = None

    @property
    def cache(self) -> Any:
        cache = self._cache
        if cache is None:
            cache = self._cache = self.services.cache
        return cache

    @property
    def store(self) -> Any:
        store = self._store
        if store is None:
            store = self._store = self.services.store
        return store


class CacheMode(_Mode):
    """Records in the cache only: fast, and lost when the cache evicts or restarts."""

    __slots__ = ()

    def load(self, sid: str) -> tuple[bytes | None, Any]:
        cache = self._cache
        if cache is None:
            cache = self.cache
        return cache.gets(self.prefix + sid)

    def save(self, sid: str, merge: Merge, raw: bytes | None, token: Any, ttl: int) -> bytes | None:
        cache, key = self._cache, self.prefix + sid
        if cache is None:
            cache = self.cache
        for _ in range(_CAS_ATTEMPTS):
            if token is None:
                raw, token = cache.gets(key)
            if raw is None:
                return None  # the record is gone: evicted, expired or invalidated meanwhile
            new = merge(raw)
            if new is None:
                return None
            if cache.cas(key, new, token, timeout=ttl):
                return new
            token = None
        raise SessionError(f"session could not be saved: {_CAS_ATTEMPTS} concurrent writers won")

    def create(self, sid: str, raw: bytes, ttl: int) -> None:
        if not self.cache.add(self.prefix + sid, raw, timeout=ttl):
            raise SessionError("the cache refused the new session (is memcached down?)")

    def delete(self, sid: str) -> None:
        self.cache.delete(self.prefix + sid)


class CachedDBMode(_Mode):
    """Records in the store, with the cache in front for reads.

    The store is the truth: a write is an atomic merge in the store, then the
    cache gets the merged record by compare-and-set. When that fails (another
    request wrote the cache since this one read it) or there is no token (the
    record came from the store), the cache entry is deleted instead, so the
    next read refills it from the store rather than serve a stale copy. A dead
    cache costs speed, never data: reads fall back to the store.
    """

    __slots__ = ()

    def load(self, sid: str) -> tuple[bytes | None, Any]:
        key = self.prefix + sid
        try:
            raw, token = self.cache.gets(key)
        except Exception:  # any cache failure: the store still has the session
            logger.warning("session cache read failed; reading the store", exc_info=True)
            raw = token = None
        if raw is not None:
            return raw, token
        try:
            raw = self.store.get(key)
        except StoreError as exc:
            raise SessionError(f"the session store failed: {exc}") from exc
        if raw is not None:
            self._cache_call("add", key, raw, timeout=self.max_age)
        return raw, None

    def save(self, sid: str, merge: Merge, raw: bytes | None, token: Any, ttl: int) -> bytes | None:
        key = self.prefix + sid
        try:
            new = self.store.update(key, merge, timeout=ttl)
        except StoreError as exc:
            raise SessionError(f"the session could not be saved; nothing was written: {exc}") from exc
        if new is None or token is None or not self._cache_call("cas", key, new, token, timeout=ttl):
            self._cache_call("delete", key)
        return new

    def create(self, sid: str, raw: bytes, ttl: int) -> None:
        key = self.prefix + sid
        try:
            added = self.store.add(key, raw, timeout=ttl)
        except StoreError as exc:
            raise SessionError(f"the session could not be saved; nothing was written: {exc}") from exc
        if not added:  # 144 random bits collided: never in practice, but never overwrite
            raise SessionError("a new session id was already taken")
        self._cache_call("set", key, raw, timeout=ttl)

    def delete(self, sid: str) -> None:
        key = self.prefix + sid
        try:
            self.store.delete(key)
        except StoreError as exc:
            raise SessionError(f"the session could not be deleted: {exc}") from exc
        self._cache_call("delete", key)

    def _cache_call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        try:
            return getattr(self.cache, name)(*args, **kwargs)
        except Exception:
            logger.warning("session cache %s failed; the store has the session", name, exc_info=True)
            return False


class DBMode(_Mode):
    """Records in the store only."""

    __slots__ = ()

    def load(self, sid: str) -> tuple[bytes | None, Any]:
        try:
            return self.store.get(self.prefix + sid), None
        except StoreError as exc:
            raise SessionError(f"the session store failed: {exc}") from exc

    def save(self, sid: str, merge: Merge, raw: bytes | None, token: Any, ttl: int) -> bytes | None:
        try:
            return self.store.update(self.prefix + sid, merge, timeout=ttl)
        except StoreError as exc:
            raise SessionError(f"the session could not be saved; nothing was written: {exc}") from exc

    def create(self, sid: str, raw: bytes, ttl: int) -> None:
        try:
            added = self.store.add(self.prefix + sid, raw, timeout=ttl)
        except StoreError as exc:
            raise SessionError(f"the session could not be saved; nothing was written: {exc}") from exc
        if not added:
            raise SessionError("a new session id was already taken")

    def delete(self, sid: str) -> None:
        try:
            self.store.delete(self.prefix + sid)
        except StoreError as exc:
            raise SessionError(f"the session could not be deleted: {exc}") from exc


MODES: dict[str, type[_Mode]] = {"cache": CacheMode, "cached_db": CachedDBMode, "db": DBMode}
