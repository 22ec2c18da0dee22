"""Every registered backend, built from its URL, keeps the contract of its kind.

``tests/typed_contracts.py`` checks the classes statically (``make lint``); this
builds each one for real, through ``Services`` and the registry, and checks it at
run time. A kind added to ``BACKENDS`` must be added to ``CONTRACTS``, a scheme to
``URLS`` below.
"""

from __future__ import annotations

import pytest

from gaeservices.cache.api import Cache
from gaeservices.config import BACKENDS, Services
from gaeservices.mail.backend import MailBackend
from gaeservices.store.api import Store
from gaeservices.tasks.queue import Queue

CONTRACTS = {"cache": Cache, "store": Store, "queue": Queue, "mail": MailBackend}

# (kind, scheme) -> (URL or the fixture that gives it, the fixtures it needs);
# {tmp} in a URL is the test's temporary directory.
URLS = {
    ("cache", "memory"): ("memory://", ()),
    ("cache", "memcache"): ("memcached", ()),
    ("cache", "appengine"): ("appengine://", ("testbed",)),
    ("store", "sqlite"): ("sqlite_url", ()),
    ("store", "postgresql"): ("postgres_url", ()),
    ("store", "postgres"): ("postgres_url", ()),
    ("store", "datastore"): ("datastore://", ("testbed",)),
    ("queue", "local"): ("local://", ()),
    ("queue", "immediate"): ("immediate://", ()),
    ("queue", "appengine"): ("appengine://", ("testbed",)),
    ("queue", "celery"): ("celery://redis://127.0.0.1:6379/0", ()),  # built, not connected
    ("mail", "smtp"): ("smtp://127.0.0.1:1025", ()),  # built, not connected
    ("mail", "smtps"): ("smtps://127.0.0.1:1465", ()),
    ("mail", "appengine"): ("appengine://", ("testbed",)),
    ("mail", "console"): ("console://", ()),
    ("mail", "file"): ("file://{tmp}/mail", ()),
    ("mail", "memory"): ("memory://", ()),
}


def test_every_registered_backend_is_covered():
    assert set(CONTRACTS) == set(BACKENDS)  # a new kind of backend comes with its contract
    registered = {(kind, scheme) for kind in CONTRACTS for scheme in BACKENDS[kind]}
    assert registered == set(URLS)


@pytest.mark.parametrize("kind, scheme", [pytest.param(*key, id=":".join(key)) for key in sorted(URLS)])
def test_the_backend_keeps_its_contract(request, tmp_path, kind, scheme):
    url, needs = URLS[(kind, scheme)]
    for fixture in needs:
        request.getfixturevalue(fixture)
    url = url.replace("{tmp}", str(tmp_path))
    if "://" not in url:
        url = request.getfixturevalue(url)
        url = getattr(url, "url", url)  # a MemcachedServer gives its URL
    if scheme == "postgres":
        url = "postgres://" + url.split("://", 1)[1]
    services = Services(
        environ={},
        secret_key="k-signing-key-for-the-test-suite",
        data_dir=str(tmp_path),
        **{kind: url},
    )
    try:
        backend = getattr(services, kind)
        assert isinstance(backend, CONTRACTS[kind]), type(backend)
        assert type(backend).__module__ + ":" + type(backend).__name__ == BACKENDS[kind][scheme].path
    finally:
        services.close()
