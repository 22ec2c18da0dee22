"""``appengine://``: App Engine's memcache through the services SDK.

The SDK (``appengine-python-standard``) is imported only when this backend is
used. Its limits apply: keys of at most 250 bytes (ours are normalised to fit),
values of at most 1,000,000 bytes.

Integers are handed to the SDK as integers, so its ``incr`` works on them;
every other value is stored as bytes in this library's encoding (a flag byte,
then the data), so types, pickling and size limits behave exactly as on the
other backends. The SDK answers RPC failures itself with misses and False,
which is what the other backends do when their server is down.

The SDK has no ``touch``: it is done with ``gets``/``cas``, retried if the value
changes in between. The ``cas`` token of :meth:`AppEngineCache.gets` carries the
SDK client that remembers the compare-and-set id, as the SDK requires.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from google.appengine.api import memcache

from ..exceptions import ConfigurationError, NotAnIntegerError
from .api import DEFAULT_TIMEOUT, _EXPIRED, Cache, common_options, decode

__all__ = ["AppEngineCache"]

#: The SDK's value limit, less the flag byte.
MAX_ITEM_SIZE = memcache.MAX_VALUE_SIZE - 1


class _Token:
    """A compare-and-set token: the SDK client holding the item's cas id."""

    __slots__ = ("client",)

    def __init__(self, client: memcache.Client) -> None:
        self.client = client


class AppEngineCache(Cache):
    """App Engine's memcache service."""

    shared = True  # every instance of the application sees the same memcache

    def __init__(
        self,
        *,
        key_prefix: str = "",
        default_timeout: float | None = 300,
        max_item_size: int = MAX_ITEM_SIZE,
    ) -> None:
        if max_item_size > MAX_ITEM_SIZE:
            raise ConfigurationError(
                f"App Engine memcache stores values of at most {MAX_ITEM_SIZE} bytes here"
            )
        super().__init__(
            key_prefix=key_prefix, default_timeout=default_timeout, max_item_size=max_item_size
        )
        # The shared client serves everything but gets/cas, which need a
        # client of their own (it remembers cas ids and is not thread-safe).
        self._client = memcache.Client()

    @classmethod
    def from_url(cls, url: Any, services: Any = None) -> AppEngineCache:
        return cls(**common_options(url))

    # -- encoding to and from what the SDK stores ------------------------------

    def _stored(self, value: Any) -> Any:
        if type(value) is int:
            return value
        data, flags = self._encode(value)
        return bytes((flags,)) + data

    @staticmethod
    def _loaded(stored: Any) -> Any:
        if type(stored) is int:
            return stored
        return decode(stored[1:], stored[0])

    # -- the API ---------------------------------------------------------------

    def get(self, key: str, default: Any = None) -> Any:
        stored = self._client.get(self._key(key))
        return default if stored is None else self._loaded(stored)

    def _exists(self, server_key: bytes) -> bool:
        return self._client.get(server_key) is not None

    def set(self, key: str, value: Any, *, timeout: Any = DEFAULT_TIMEOUT) -> bool:
        server_key = self._key(key)
        stored = self._stored(value)
        expire = self._expire(timeout)
        if expire == _EXPIRED:  # the SDK refuses negative times: stored, then gone
            self._client.delete(server_key)
            return True
        return self._client.set(server_key, stored, time=expire)

    def add(self, key: str, value: Any, *, timeout: Any = DEFAULT_TIMEOUT) -> bool:
        server_key = self._key(key)
        stored = self._stored(value)
        expire = self._expire(timeout)
        if expire == _EXPIRED:
            return not self._exists(server_key)
        return self._client.add(server_key, stored, time=expire)

    def replace(self, key: str, value: Any, *, timeout: Any = DEFAULT_TIMEOUT) -> bool:
        server_key = self._key(key)
        stored = self._stored(value)
        expire = self._expire(timeout)
        if expire == _EXPIRED:
            return self._client.delete(server_key) == memcache.DELETE_SUCCESSFUL
        return self._client.replace(server_key, stored, time=expire)

    def delete(self, key: str) -> bool:
        return self._client.delete(self._key(key)) == memcache.DELETE_SUCCESSFUL

    def get_many(self, keys: Iterable[str]) -> dict[str, Any]:
        server_keys = {self._key(key): key for key in keys}
        if not server_keys:
            return {}
        found = self._client.get_multi(list(server_keys))
        return {server_keys[key]: self._loaded(stored) for key, stored in found.items()}

    def set_many(self, mapping: Mapping[str, Any], *, timeout: Any = DEFAULT_TIMEOUT) -> list[str]:
        originals = {}
        stored = {}
        for key, value in mapping.items():
            server_key = self._key(key)
            stored[server_key] = self._stored(value)
            originals[server_key] = key
        if not stored:
            return []
        expire = self._expire(timeout)
        if expire == _EXPIRED:
            self._client.delete_multi(list(stored))
            return []
        failed = self._client.set_multi(stored, time=expire)
        return [originals[key] for key in failed]

    def delete_many(self, keys: Iterable[str]) -> None:
        server_keys = [self._key(key) for key in keys]
        if server_keys:
            self._client.delete_multi(server_keys)

    def gets(self, key: str, default: Any = None) -> tuple[Any, Any]:
        client = memcache.Client()
        stored = client.gets(self._key(key))
        if stored is None:
            return default, None
        return self._loaded(stored), _Token(client)

    def cas(self, key: str, value: Any, token: Any, *, timeout: Any = DEFAULT_TIMEOUT) -> bool:
        if not isinstance(token, _Token):
            return False
        server_key = self._key(key)
        stored = self._stored(value)
        expire = self._expire(timeout)
        if expire == _EXPIRED:
            # Compare-and-set something short-lived, then remove it.
            if not token.client.cas(server_key, stored, time=1):
                return False
            self._client.delete(server_key)
            return True
        return token.client.cas(server_key, stored, time=expire)

    def touch(self, key: str, *, timeout: Any = DEFAULT_TIMEOUT) -> bool:
        server_key = self._key(key)
        expire = self._expire(timeout)
        if expire == _EXPIRED:
            return self._client.delete(server_key) == memcache.DELETE_SUCCESSFUL
        for _ in range(10):
            client = memcache.Client()
            stored = client.gets(server_key)
            if stored is None:
                return False
            if client.cas(server_key, stored, time=expire):
                return True
        return False  # the value kept changing: someone else is writing it

    def clear(self) -> None:
        self._client.flush_all()

    def _incr(self, key: bytes, delta: int, decrement: bool) -> int | None:
        offset = self._client.decr if decrement else self._client.incr
        for _ in range(3):
            result = offset(key, delta)
            if result is not None:
                return result
            # The SDK answers None both for a miss and for a value it cannot
            # count; a counter created since (by another thread) is neither.
            stored = self._client.get(key)
            if stored is None:
                return None
            if type(stored) is not int or not 0 <= stored < 2**64:
                raise NotAnIntegerError(
                    "cannot increment or decrement a value that is not an unsigned integer"
                )
        return None
