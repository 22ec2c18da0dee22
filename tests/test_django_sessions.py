"""``SESSION_ENGINE = "gaeservices.django.sessions"``: Django's own session contract, and the service's guarantees.

``SessionTestsMixin`` (from the installed Django release's source, see
``django_source.py``) is the suite Django's own engines pass; it runs here unchanged
against our engine on a real memcached and a SQLite store, so ``cached_db`` really
goes through the cache. The tests after it break the guarantees on purpose:
overlapping requests changing different keys, a memcached that stalls.
"""

from __future__ import annotations

import importlib
import shutil
import time

import pytest
from django_fixtures import SECRET_KEY, contract_dir, django_test_db  # noqa: F401  (the fixture)

contract_dir()

from django.contrib.sessions.backends.base import UpdateError  # noqa: E402
from django.test import TestCase, override_settings  # noqa: E402

from conftest import unavailable  # noqa: E402
from gaeservices.config import Services, set_services  # noqa: E402
from gaeservices.django.sessions import SessionStore  # noqa: E402
from gaeservices.testing import MemcachedServer  # noqa: E402

contract = importlib.import_module("sessions_tests.tests")

pytestmark = pytest.mark.usefixtures("django_test_db")


def _memcached() -> MemcachedServer:
    try:
        return MemcachedServer().start()
    except (FileNotFoundError, TimeoutError) as exc:
        unavailable("memcached", f"{exc}; `make test` installs it when run as root")
        raise


class SessionContractTests(contract.SessionTestsMixin, TestCase):
    """Django's SessionTestsMixin, unchanged, on memcached + SQLite."""

    backend = SessionStore

    @classmethod
    def setUpClass(cls) -> None:
        import tempfile

        cls.server = _memcached()
        cls.data = tempfile.mkdtemp(prefix="gaeservices-sessions-")
        cls.services = Services(
            secret_key=SECRET_KEY,
            data_dir=cls.data,
            cache=f"memcache://{cls.server.host}:{cls.server.port}?timeout=0.5",
            environ={},
        )
        cls.previous = set_services(cls.services)
        cls._overridden_settings = {"SESSION_ENGINE": "gaeservices.django.sessions"}
        super().setUpClass()

    @classmethod
    def tearDownClass(cls) -> None:
        super().tearDownClass()
        set_services(cls.previous)
        cls.services.close()
        cls.server.stop()
        shutil.rmtree(cls.data, ignore_errors=True)


@pytest.fixture
def on_memcached(tmp_path, private_memcached):
    services = Services(
        secret_key=SECRET_KEY,
        data_dir=str(tmp_path),
        cache=f"memcache://{private_memcached.host}:{private_memcached.port}?timeout=0.3&retry_delay=0.2",
        environ={},
    )
    previous = set_services(services)
    with override_settings(SESSION_ENGINE="gaeservices.django.sessions"):
        yield services, private_memcached
    set_services(previous)
    services.close()


def test_overlapping_requests_changing_different_keys_keep_both(on_memcached):
    first = SessionStore()
    first["cart"] = ["book"]
    first["theme"] = "dark"
    first.save()
    key = first.session_key
    a, b = SessionStore(key), SessionStore(key)
    a["cart"].append("pen")  # an in-place change counts
    assert a["theme"] == b["theme"] == "dark"  # both loaded before either saved
    b["theme"] = "light"
    del b["cart"]  # b deletes cart, a changed it: the later save of that key wins
    a.save()
    b.save()
    c = SessionStore(b.session_key)
    assert c["theme"] == "light" and "cart" not in c
    d = SessionStore(a.session_key)
    d["note"] = "x"
    d.save()
    e = SessionStore(d.session_key)
    assert dict(e.items()) == {"theme": "light", "note": "x"}


def test_the_key_carries_the_version_its_client_last_received(on_memcached):
    session = SessionStore()
    session["n"] = 1
    session.save()
    sid, version = session.session_key.split(".")
    session["n"] = 2
    session.save()
    assert session.session_key == f"{sid}.{int(version) + 1}"
    assert SessionStore(f"{sid}.{version}")["n"] == 2  # an older key still reads the newest data


def test_a_write_the_stalled_cache_missed_is_never_served_from_its_older_copy(on_memcached):
    from gaeservices.cache.memcache import MemcacheCache

    services, server = on_memcached
    session = SessionStore()
    session["balance"] = 100
    session.save()
    key = session.session_key
    cache_key = "djsession:" + key.split(".")[0]
    assert SessionStore(key)["balance"] == 100
    direct = MemcacheCache([(server.host, server.port)])
    old_copy = direct.get(cache_key)
    assert b'"balance":100' in old_copy  # what the cache serves reads from
    server.pause()  # a stall: the next write cannot reach the cache
    try:
        writer = SessionStore(key)
        writer["balance"] = 40
        writer.save()  # acknowledged: it is in the store
    finally:
        server.resume()
    # A partition that healed with the cache still holding the old copy:
    direct.set(cache_key, old_copy, timeout=600)
    time.sleep(0.25)  # past the cache's retry delay (0.2 s): it is read again
    assert SessionStore(key)["balance"] == 100  # the cache serves reads: the old key gets its copy
    assert SessionStore(writer.session_key)["balance"] == 40  # the new key has seen more: the store answers
    again = SessionStore(writer.session_key)
    again["seen"] = True
    again.save()
    assert dict(SessionStore(again.session_key).items()) == {"balance": 40, "seen": True}
    direct.close()


def test_a_logout_elsewhere_is_not_undone_by_a_later_save(on_memcached):
    session = SessionStore()
    session["user"] = 7
    session.save()
    other = SessionStore(session.session_key)
    other.flush()
    session["user"] = 8
    with pytest.raises(UpdateError):
        session.save()
    assert SessionStore(session.session_key).load() == {}


def test_the_serializer_setting_is_honoured(on_memcached):
    class Tagged:
        """A serializer that is not JSON: values come back as it wrote them."""

        def dumps(self, obj):
            import pickle

            return pickle.dumps(obj)

        def loads(self, data):
            import pickle

            return pickle.loads(data)

    import sys
    import types

    module = types.ModuleType("django_test_serializers")
    module.Tagged = Tagged
    sys.modules["django_test_serializers"] = module
    with override_settings(SESSION_SERIALIZER="django_test_serializers.Tagged"):
        session = SessionStore()
        session["when"] = {1, 2, 3}  # a set: JSON could not keep it
        session.save()
        assert SessionStore(session.session_key)["when"] == {1, 2, 3}
