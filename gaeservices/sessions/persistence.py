"""Where session records live: the ``cache``, ``cached_db`` and ``db`` modes.

A record is the session's bytes (:mod:`gaeservices.sessions.session` says what
they hold); it begins with its *version*, a number the store raises by one in
every write (inside the store's atomic update), so of two copies of a record
the newer is decidable. Each mode implements four operations for the session:

``load(sid, seen) -> (raw, token)``
    The record (or None) and, when it came from the cache, the cache's
    compare-and-set token for the write that may follow. ``seen`` is the
    version the client's cookie says it last received: in ``cached_db`` mode a
    cache copy older than that is never returned (the store is read instead).
``save(sid, merge, raw, token, ttl) -> raw``
    Apply ``merge`` (stored record in, new record out; None means "the record
    is gone, write nothing") atomically, so overlapping requests that change
    different keys keep each other's changes.
``create(sid, raw, ttl)``
    Store a brand-new record under a fresh id.
``delete(sid)``
    End the session for good (logout, or the old id at login). Raises
    :class:`~gaeservices.exceptions.SessionError` unless the end is recorded
    where every process looks.

How ``cached_db`` keeps the store the truth whatever the cache does is in
docs/sessions.md ("Cache faults"); in short: the cache is only ever written
forwards (``add`` when a key is absent, ``cas`` over a copy known to be older,
a *tombstone* for an ended session that nothing overwrites), the cookie carries
the version its client last received so an older copy is bypassed, and an
ended session's tombstone is written even inside the cache's retry delay and
must be confirmed before the logout is acknowledged. A cache that is not
shared between processes (``memory://``) is never used for sessions in
``cached_db`` mode: the store is read instead.

The cache and store are looked up on the :class:`~gaeservices.config.Services`
once, on first use, not per request.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..exceptions import SessionError, StoreError

if TYPE_CHECKING:
    from ..cache.api import Cache
    from ..config import Services
    from ..store.api import Store

__all__ = ["MODES", "TOMBSTONE", "CacheMode", "CachedDBMode", "DBMode", "record_version"]

logger = logging.getLogger("gaeservices.sessions")

Merge = Callable[[bytes | None], bytes | None]

#: What the cache holds for a session that has ended: final, never replaced.
TOMBSTONE = b"-"

# Compare-and-set rounds before a cache-only save gives up; each failed round
# means another request wrote the same session in between.
_CAS_ATTEMPTS = 16
# Rounds of bringing the cache's copy forward after a store write.
_PUBLISH_ATTEMPTS = 4
# Records and tombstones outlive their cookie by a second or two: memcached's
# clock ticks in whole seconds.
_SLACK = 2


def record_version(raw: bytes) -> int:
    """The version a record begins with (0 for records written before versions).

    Raises ValueError when ``raw`` is not a record.
    """
    head = raw[: raw.index(b"\n")]
    fields = head.split(b" ")
    if len(fields) == 4:
        return int(fields[0])
    if len(fields) == 3:
        int(fields[0])
        return 0
    raise ValueError("not a session record")


class _Mode:
    __slots__ = ("services", "prefix", "max_age", "invalidate_wait", "_cache", "_store")

    def __init__(
        self, services: Services, *, prefix: str, max_age: int, invalidate_wait: float = 5.0
    ) -> None:
        self.services = services
        self.prefix = prefix
        self.max_age = max_age
        self.invalidate_wait = invalidate_wait
        self._cache: Cache | None = None
        self._store: Store | None = None

    @property
    def cache(self) -> Cache:
        cache = self._cache
        if cache is None:
            cache = self._cache = self.services.cache
        return cache

    @property
    def store(self) -> Store:
        store = self._store
        if store is None:
            store = self._store = self.services.store
        return store

    # -- what every mode does (see the module's docstring) -------------------

    def load(self, sid: str, seen: int = 0) -> tuple[bytes | None, Any]:
        raise NotImplementedError

    def save(self, sid: str, merge: Merge, raw: bytes | None, token: Any, ttl: int) -> bytes | None:
        raise NotImplementedError

    def create(self, sid: str, raw: bytes, ttl: int) -> None:
        raise NotImplementedError

    def delete(self, sid: str) -> None:
        raise NotImplementedError

    def _end_in_cache(self, key: str) -> None:
        """Put a tombstone where the session's record was, confirmed."""
        try:
            confirmed = self.cache.set_confirmed(
                key, TOMBSTONE, timeout=self.max_age + _SLACK, wait=self.invalidate_wait
            )
        except Exception:
            logger.warning("session cache failed to record a logout", exc_info=True)
            confirmed = False
        if not confirmed:
            raise SessionError(
                "the cache did not confirm the end of the session within "
                f"{self.invalidate_wait:g}s (is memcached stalled or unreachable?); "
                "the logout is not complete: try again"
            )


class CacheMode(_Mode):
    """Records in the cache only: fast, and lost when the cache evicts or restarts."""

    __slots__ = ()

    def load(self, sid: str, seen: int = 0) -> tuple[bytes | None, Any]:
        cache = self._cache
        if cache is None:
            cache = self.cache
        raw, token = cache.gets(self.prefix + sid)
        if raw is None or raw == TOMBSTONE:
            return None, None
        return raw, token

    def save(self, sid: str, merge: Merge, raw: bytes | None, token: Any, ttl: int) -> bytes | None:
        cache, key = self._cache, self.prefix + sid
        if cache is None:
            cache = self.cache
        for _ in range(_CAS_ATTEMPTS):
            if token is None:
                raw, token = cache.gets(key)
            if raw is None or raw == TOMBSTONE:
                return None  # the record is gone: evicted, expired or ended meanwhile
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
        self._end_in_cache(self.prefix + sid)


class DBMode(_Mode):
    """Records in the store only."""

    __slots__ = ()

    def load(self, sid: str, seen: int = 0) -> tuple[bytes | None, Any]:
        return self._get(self.prefix + sid), None

    def _get(self, key: str) -> bytes | None:
        try:
            return self.store.get(key)
        except StoreError as exc:
            raise SessionError(f"the session store failed: {exc}") from exc

    def save(self, sid: str, merge: Merge, raw: bytes | None, token: Any, ttl: int) -> bytes | None:
        return self._update(self.prefix + sid, merge, ttl)

    def _update(self, key: str, merge: Merge, ttl: int) -> bytes | None:
        try:
            return self.store.update(key, merge, timeout=ttl)
        except StoreError as exc:
            raise SessionError(f"the session could not be saved; nothing was written: {exc}") from exc

    def create(self, sid: str, raw: bytes, ttl: int) -> None:
        self._add(self.prefix + sid, raw, ttl)

    def _add(self, key: str, raw: bytes, ttl: int) -> None:
        try:
            added = self.store.add(key, raw, timeout=ttl)
        except StoreError as exc:
            raise SessionError(f"the session could not be saved; nothing was written: {exc}") from exc
        if not added:  # 144 random bits collided: never in practice, but never overwrite
            raise SessionError("a new session id was already taken")

    def delete(self, sid: str) -> None:
        self._delete(self.prefix + sid)

    def _delete(self, key: str) -> None:
        try:
            self.store.delete(key)
        except StoreError as exc:
            raise SessionError(f"the session could not be deleted: {exc}") from exc


class CachedDBMode(DBMode):
    """Records in the store, the truth, with a shared cache in front for reads.

    Reads: one cache ``gets``. A hit is used when its version is at least the
    one the client's cookie has seen; an older copy, a miss or a dead cache
    send the read to the store, and the cache is brought forward (``add`` on
    a miss, ``cas`` over the older copy). A tombstone means the session ended.

    Writes: an atomic merge in the store, then the merged record goes to the
    cache by ``cas`` over the copy this request read; if another request
    changed it meanwhile, it is read again and replaced only if older. A cache
    that fails or is in its retry delay is simply not written: its copy is
    older than the client's cookie from then on, so it is never served to
    that client again.

    Ends (logout, login's old id): the store's record is deleted, then a
    tombstone is set in the cache, even inside its retry delay, and confirmed
    (``Cache.set_confirmed``); without confirmation the logout raises
    :class:`SessionError`.

    A cache that is not shared between processes is not used at all.
    """

    __slots__ = ("_shared",)

    def __init__(
        self, services: Services, *, prefix: str, max_age: int, invalidate_wait: float = 5.0
    ) -> None:
        super().__init__(services, prefix=prefix, max_age=max_age, invalidate_wait=invalidate_wait)
        self._shared: bool | None = None

    @property
    def shared(self) -> bool:
        shared = self._shared
        if shared is None:
            shared = self._shared = bool(getattr(self.cache, "shared", False))
            if not shared:
                logger.info(
                    "sessions: %r is not shared between processes; cached_db reads the store",
                    self.cache,
                )
        return shared

    def load(self, sid: str, seen: int = 0) -> tuple[bytes | None, Any]:
        key = self.prefix + sid
        if not (self._shared or self.shared):
            return self._get(key), None
        try:
            raw, token = self.cache.gets(key)
        except Exception:  # any cache failure: the store still has the session
            logger.warning("session cache read failed; reading the store", exc_info=True)
            raw = token = None
        if raw is not None:
            if raw == TOMBSTONE:
                return None, None
            try:
                if record_version(raw) >= seen:
                    return raw, token
            except ValueError:
                pass  # not a record: replaced below with the store's
            # Older than what this client has seen: a write the cache missed.
        stored = self._get(key)
        if raw is None:
            if stored is not None:
                self._cache_call("add", key, stored, timeout=self.max_age + _SLACK)
        elif token is not None:
            self._cache_call(
                "cas", key, TOMBSTONE if stored is None else stored, token, timeout=self.max_age + _SLACK
            )
        return stored, None

    def save(self, sid: str, merge: Merge, raw: bytes | None, token: Any, ttl: int) -> bytes | None:
        key = self.prefix + sid
        new = self._update(key, merge, ttl)
        if new is not None and (self._shared or self.shared):
            self._publish(key, new, token, ttl + _SLACK)
        return new

    def _publish(self, key: str, new: bytes, token: Any, ttl: int) -> None:
        """Bring the cache's copy forward to ``new``, never back."""
        cache = self.cache
        try:
            version = record_version(new)
            for _ in range(_PUBLISH_ATTEMPTS):
                if token is not None and cache.cas(key, new, token, timeout=ttl):
                    return
                current, token = cache.gets(key)
                if current is None or current == TOMBSTONE:
                    return  # absent: the next read fills it; a tombstone is final
                try:
                    if record_version(current) >= version:
                        return  # a newer write got there first
                except ValueError:
                    pass  # not a record: replace it
        except Exception:
            logger.warning("session cache write failed; the store has the session", exc_info=True)

    def create(self, sid: str, raw: bytes, ttl: int) -> None:
        key = self.prefix + sid
        self._add(key, raw, ttl)
        if self._shared or self.shared:
            self._cache_call("add", key, raw, timeout=ttl + _SLACK)

    def delete(self, sid: str) -> None:
        key = self.prefix + sid
        self._delete(key)
        if self._shared or self.shared:
            self._end_in_cache(key)

    def _cache_call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        try:
            return getattr(self.cache, name)(*args, **kwargs)
        except Exception:
            logger.warning("session cache %s failed; the store has the session", name, exc_info=True)
            return False


MODES: dict[str, type[_Mode]] = {"cache": CacheMode, "cached_db": CachedDBMode, "db": DBMode}
