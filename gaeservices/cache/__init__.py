"""The cache service: one API (:class:`~gaeservices.cache.api.Cache`), three backends.

``memory://`` (in-process, the embedded default), ``memcache://host:port[,…]``
(memcached through pymemcache) and ``appengine://`` (App Engine's memcache
through the services SDK). Get the configured one from ``services.cache``;
backends are imported only when used.
"""

from __future__ import annotations

from .api import DEFAULT_TIMEOUT, Cache

__all__ = ["Cache", "DEFAULT_TIMEOUT"]
