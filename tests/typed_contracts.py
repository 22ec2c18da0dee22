"""Checked by mypy (``make lint``), never run: the contracts hold statically.

``Services`` hands out its backends as the contracts (``Cache``, ``Store``,
``Queue``), not as ``Any``, and every registered backend class satisfies the
contract of its kind. A backend that drops or changes a method fails here, in
``make lint``, before any test runs. A new backend (a mail backend, a Celery
queue) adds a line to the function of its kind.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from itsdangerous import Signer, TimestampSigner
    from typing_extensions import assert_type

    from gaeservices.cache.api import Cache
    from gaeservices.cache.appengine import AppEngineCache
    from gaeservices.cache.memcache import MemcacheCache
    from gaeservices.cache.memory import MemoryCache
    from gaeservices.config import Services
    from gaeservices.mail.appengine import AppEngineMailBackend
    from gaeservices.mail.backend import MailBackend
    from gaeservices.mail.console import ConsoleMailBackend
    from gaeservices.mail.file import FileMailBackend
    from gaeservices.mail.memory import MemoryMailBackend
    from gaeservices.mail.smtp import SMTPBackend
    from gaeservices.store.api import Store
    from gaeservices.store.datastore import DatastoreStore
    from gaeservices.store.sql import SQLStore
    from gaeservices.tasks.appengine import AppEngineQueue
    from gaeservices.tasks.celery import CeleryQueue
    from gaeservices.tasks.immediate import ImmediateQueue
    from gaeservices.tasks.local import LocalQueue
    from gaeservices.tasks.queue import Queue


def services_hand_out_the_contracts(services: Services) -> None:
    assert_type(services.cache, Cache)
    assert_type(services.store, Store)
    assert_type(services.queue, Queue)
    assert_type(services.mail, MailBackend)
    assert_type(services.signer("salt"), Signer)
    assert_type(services.signer("salt", timestamped=True), TimestampSigner)


def caches(memory: MemoryCache, memcache: MemcacheCache, appengine: AppEngineCache) -> list[Cache]:
    return [memory, memcache, appengine]


def stores(sql: SQLStore, datastore: DatastoreStore) -> list[Store]:
    return [sql, datastore]


def queues(
    local: LocalQueue, immediate: ImmediateQueue, appengine: AppEngineQueue, celery: CeleryQueue
) -> list[Queue]:
    return [local, immediate, appengine, celery]


def mail_backends(
    smtp: SMTPBackend,
    appengine: AppEngineMailBackend,
    console: ConsoleMailBackend,
    file: FileMailBackend,
    memory: MemoryMailBackend,
) -> list[MailBackend]:
    return [smtp, appengine, console, file, memory]
