"""``gaeservices.django.cache.CacheBackend``: Django's cache API over the cache service.

.. code-block:: python

    CACHES = {
        "default": {
            "BACKEND": "gaeservices.django.cache.CacheBackend",
            # "" (the default): the Services' cache (GAESERVICES_CACHE);
            # or a cache URL of its own: "memcache://10.0.0.5:11211", "memory://", "appengine://"
            "LOCATION": "",
            "TIMEOUT": 300,
            "KEY_PREFIX": "",
            "VERSION": 1,
        }
    }

Django's part -- ``TIMEOUT``, ``KEY_PREFIX``, ``VERSION``, ``KEY_FUNCTION`` and the
key warnings -- is Django's own code (``BaseCache``). The rest is the service's:
any key works on every backend (so keys memcached would refuse only warn, as on
Django's local-memory and database caches), ``incr``/``decr`` are atomic
memcached counters, and ``close()`` keeps the connections: Django calls it at the
end of every request, and the next request reuses the pool rather than reconnecting. ``MAX_ENTRIES`` and ``CULL_FREQUENCY`` do not apply (memcached
evicts by memory; ``memory://`` takes ``?max_bytes=``).
"""

from __future__ import annotations

import threading
from typing import Any

from django.core.cache.backends.base import DEFAULT_TIMEOUT, BaseCache

from ..config import BACKENDS, import_backend, parse_backend_url
from .conf import services

__all__ = ["CacheBackend"]

_MISSING: Any = object()

# Django builds a backend object per thread and alias; the service cache behind a
# LOCATION is built once per process and shared, as Django's LocMemCache shares
# its storage by name: an in-process cache must be one for every thread.
_shared: dict[str, Any] = {}
_lock = threading.Lock()


def _service_cache(location: Any) -> Any:
    if isinstance(location, (list, tuple)):
        location = ",".join(location)
    if not location:
        return services().cache
    cache = _shared.get(location)
    if cache is None:
        with _lock:
            cache = _shared.get(location)
            if cache is None:
                url = parse_backend_url("cache", location, "CACHES[...]['LOCATION']")
                cls = import_backend(BACKENDS["cache"][url.scheme].path)
                cache = _shared[location] = cls.from_url(url, None)
    return cache


class CacheBackend(BaseCache):
    """A complete Django cache backend over a :class:`gaeservices.cache.api.Cache`."""

    def __init__(self, location: Any, params: dict[str, Any]) -> None:
        super().__init__(params)
        self._cache = _service_cache(location)

    def _timeout(self, timeout: Any) -> float | None:
        return self.default_timeout if timeout is DEFAULT_TIMEOUT else timeout

    def add(self, key: Any, value: Any, timeout: Any = DEFAULT_TIMEOUT, version: int | None = None) -> bool:
        key = self.make_and_validate_key(key, version=version)
        return self._cache.add(key, value, timeout=self._timeout(timeout))

    def get(self, key: Any, default: Any = None, version: int | None = None) -> Any:
        key = self.make_and_validate_key(key, version=version)
        return self._cache.get(key, default)

    def set(self, key: Any, value: Any, timeout: Any = DEFAULT_TIMEOUT, version: int | None = None) -> None:
        key = self.make_and_validate_key(key, version=version)
        self._cache.set(key, value, timeout=self._timeout(timeout))

    def touch(self, key: Any, timeout: Any = DEFAULT_TIMEOUT, version: int | None = None) -> bool:
        key = self.make_and_validate_key(key, version=version)
        return self._cache.touch(key, timeout=self._timeout(timeout))

    def delete(self, key: Any, version: int | None = None) -> bool:
        key = self.make_and_validate_key(key, version=version)
        return self._cache.delete(key)

    def has_key(self, key: Any, version: int | None = None) -> bool:
        key = self.make_and_validate_key(key, version=version)
        return self._cache.get(key, _MISSING) is not _MISSING

    def get_many(self, keys: Any, version: int | None = None) -> dict[Any, Any]:
        made = {self.make_and_validate_key(key, version=version): key for key in keys}
        found = self._cache.get_many(made)
        return {made[key]: value for key, value in found.items()}

    def set_many(self, data: Any, timeout: Any = DEFAULT_TIMEOUT, version: int | None = None) -> list[Any]:
        made = {}
        originals = {}
        for key, value in data.items():
            server_key = self.make_and_validate_key(key, version=version)
            made[server_key] = value
            originals[server_key] = key
        failed = self._cache.set_many(made, timeout=self._timeout(timeout))
        return [originals[key] for key in failed]

    def delete_many(self, keys: Any, version: int | None = None) -> None:
        self._cache.delete_many([self.make_and_validate_key(key, version=version) for key in keys])

    def incr(self, key: Any, delta: int = 1, version: int | None = None) -> int:
        return self._step(self._cache.incr, key, delta, version)

    def decr(self, key: Any, delta: int = 1, version: int | None = None) -> int:
        return self._step(self._cache.decr, key, delta, version)

    def _step(self, step: Any, key: Any, delta: int, version: int | None) -> int:
        value = step(self.make_and_validate_key(key, version=version), delta)
        if value is None:
            raise ValueError("Key '%s' not found" % key)
        return int(value)

    def clear(self) -> None:
        self._cache.clear()

    def close(self, **kwargs: Any) -> None:
        """Keep the connections: Django calls this after every request."""
