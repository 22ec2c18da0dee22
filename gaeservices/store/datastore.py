"""The store on App Engine's Datastore, through the services SDK's ndb.

Each key is one entity of kind ``GAEServicesStore`` (its own entity group), with
the value in an unindexed ``BlobProperty`` and the expiry time in an indexed
float (for :meth:`purge_expired`). ``add``, ``delete(expected=…)`` and ``update``
run in ndb transactions, which Datastore serialises per entity group.

ndb needs a context: on App Engine the SDK's WSGI middleware
(``google.appengine.api.wrap_wsgi_app``) provides one per request; in tests the
SDK's testbed does. Entities are kept out of ndb's own caches (in-context and
memcache): the session layer caches explicitly, and stale copies in a second
cache would break compare-and-delete.
"""

from __future__ import annotations

import contextlib
import random
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

from google.appengine.api import datastore_errors
from google.appengine.ext import ndb
from google.appengine.runtime import apiproxy_errors

from ..config import BackendURL
from ..exceptions import StoreError
from .api import Updater, check_value, expiry, storage_id

__all__ = ["DatastoreStore", "StoreEntry"]

T = TypeVar("T")

# ndb retries a contended transaction at once, without pausing; many writers
# racing for one key (a username claim) then starve each other. So each ndb
# attempt retries a little, and between attempts we back off with jitter.
_TRANSACTION_RETRIES = 2
_BACKOFF_ATTEMPTS = 12
_BACKOFF_BASE = 0.005
_BACKOFF_CAP = 0.5
_PURGE_BATCH = 500


def _transact(fn: Callable[[], T]) -> T:
    """Run ``fn`` in an ndb transaction, backing off with jitter under contention."""
    for attempt in range(_BACKOFF_ATTEMPTS):
        try:
            return ndb.transaction(fn, retries=_TRANSACTION_RETRIES)
        except datastore_errors.TransactionFailedError:
            if attempt == _BACKOFF_ATTEMPTS - 1:
                raise
            time.sleep(random.uniform(0, min(_BACKOFF_CAP, _BACKOFF_BASE * 2**attempt)))
    raise AssertionError("unreachable")


class StoreEntry(ndb.Model):
    """One stored value; the entity's key name is :func:`storage_id` of the key."""

    _use_cache = False
    _use_memcache = False

    value = ndb.BlobProperty(indexed=False, required=True)
    expires = ndb.FloatProperty()  # epoch seconds; None = never

    @classmethod
    def _get_kind(cls) -> str:
        return "GAEServicesStore"

    def live(self, now: float) -> bool:
        return self.expires is None or self.expires > now


class DatastoreStore:
    """The durable store in Datastore entities of kind ``GAEServicesStore``."""

    def __init__(self, *, namespace: str | None = None) -> None:
        self.namespace = namespace

    @classmethod
    def from_url(cls, url: BackendURL, services: Any = None) -> DatastoreStore:
        return cls(namespace=url.option("namespace"))

    def _key(self, key: str) -> ndb.Key:
        return ndb.Key(StoreEntry, storage_id(key), namespace=self.namespace)

    # -- contract ----------------------------------------------------------

    def get(self, key: str) -> bytes | None:
        with self._errors("get"):
            entity = self._key(key).get()
        return entity.value if entity is not None and entity.live(time.time()) else None

    def get_many(self, keys: Iterable[str]) -> dict[str, bytes]:
        keys = list(dict.fromkeys(keys))
        with self._errors("get_many"):
            entities = ndb.get_multi([self._key(k) for k in keys])
        now = time.time()
        return {k: e.value for k, e in zip(keys, entities) if e is not None and e.live(now)}

    def put(self, key: str, value: bytes, *, timeout: float | None = None) -> None:
        entity = StoreEntry(key=self._key(key), value=check_value(value), expires=expiry(timeout))
        with self._errors("put"):
            entity.put()

    def add(self, key: str, value: bytes, *, timeout: float | None = None) -> bool:
        value = check_value(value)
        entity_key = self._key(key)

        def insert_if_absent() -> bool:
            now = time.time()
            current = entity_key.get()
            if current is not None and current.live(now):
                return False
            StoreEntry(key=entity_key, value=value, expires=expiry(timeout, now)).put()
            return True

        with self._errors("add"):
            return _transact(insert_if_absent)

    def delete(self, key: str, *, expected: bytes | None = None) -> bool:
        entity_key = self._key(key)
        if expected is not None:
            expected = check_value(expected)

        def delete_if_live() -> bool:
            current = entity_key.get()
            if current is None or not current.live(time.time()):
                return False
            if expected is not None and current.value != expected:
                return False
            entity_key.delete()
            return True

        with self._errors("delete"):
            return _transact(delete_if_live)

    def update(self, key: str, fn: Updater, *, timeout: float | None = None) -> bytes | None:
        entity_key = self._key(key)

        def read_modify_write() -> bytes | None:
            now = time.time()
            current = entity_key.get()
            live = current is not None and current.live(now)
            new = fn(current.value if live else None)
            if new is None:
                if current is not None:
                    entity_key.delete()
                return None
            StoreEntry(key=entity_key, value=check_value(new), expires=expiry(timeout, now)).put()
            return new

        with self._errors("update"):
            return _transact(read_modify_write)

    def purge_expired(self) -> int:
        now = time.time()
        query = StoreEntry.query(
            StoreEntry.expires > 0.0,  # excludes None, which Datastore orders before numbers
            StoreEntry.expires <= now,
            namespace=self.namespace,
        )

        def delete_if_expired(entity_key: ndb.Key) -> bool:
            # The query's index may be stale and the row rewritten since: check again.
            current = entity_key.get()
            if current is None or current.live(time.time()):
                return False
            entity_key.delete()
            return True

        deleted = 0
        with self._errors("purge_expired"):
            for entity_key in query.iter(keys_only=True, batch_size=_PURGE_BATCH):
                deleted += _transact(lambda: delete_if_expired(entity_key))
        return deleted

    def close(self) -> None:
        """Nothing to release: the SDK owns its RPC channels."""

    @contextlib.contextmanager
    def _errors(self, operation: str) -> Iterator[None]:
        try:
            yield
        except (datastore_errors.Error, apiproxy_errors.Error) as exc:
            raise StoreError(f"store {operation} failed on Datastore: {exc!r}") from exc

    def __repr__(self) -> str:
        return f"<DatastoreStore namespace={self.namespace!r}>"
