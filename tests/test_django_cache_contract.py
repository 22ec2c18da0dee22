"""Django's own cache contract, run unchanged against ``gaeservices.django.cache.CacheBackend``.

``BaseCacheTests`` is the suite every Django cache backend passes (it comes from the
installed Django release's source, see ``django_source.py``). It runs here on the
three service backends behind the adapter: ``memory://``, ``memcache://`` (a real
memcached on a free loopback port) and ``appengine://`` (the SDK's testbed stub).
The culling tests skip themselves, as they do for Django's memcached backends:
``MAX_ENTRIES`` is not how memcached evicts.
"""

from __future__ import annotations

import importlib

import pytest
from django_fixtures import contract_dir, django_test_db  # noqa: F401  (the fixture)

contract_dir()  # configures Django and puts its contract tests on sys.path, or skips

from django.test import TestCase  # noqa: E402

from conftest import unavailable  # noqa: E402
from gaeservices.testing import MemcachedServer  # noqa: E402

contract = importlib.import_module("cache.tests")

pytestmark = pytest.mark.usefixtures("django_test_db")

BACKEND = "gaeservices.django.cache.CacheBackend"
# Django's own memcached tests leave these out: culling is a MAX_ENTRIES feature.
EXCLUDED = {"cull", "zero_cull"}


class _Contract(contract.BaseCacheTests):
    @classmethod
    def location(cls) -> str:
        raise NotImplementedError

    @classmethod
    def setUpClass(cls) -> None:
        cls._overridden_settings = {
            "CACHES": contract.caches_setting_for_tests(BACKEND=BACKEND, LOCATION=cls.location(), exclude=EXCLUDED)
        }
        super().setUpClass()


class MemoryCacheContractTests(_Contract, TestCase):
    @classmethod
    def location(cls) -> str:
        return "memory://"


class MemcacheCacheContractTests(_Contract, TestCase):
    server: MemcachedServer

    @classmethod
    def location(cls) -> str:
        try:
            cls.server = MemcachedServer().start()
        except (FileNotFoundError, TimeoutError) as exc:
            unavailable("memcached", f"{exc}; `make test` installs it when run as root")
        return f"memcache://{cls.server.host}:{cls.server.port}"

    @classmethod
    def tearDownClass(cls) -> None:
        super().tearDownClass()
        cls.server.stop()


class AppEngineCacheContractTests(_Contract, TestCase):
    @classmethod
    def location(cls) -> str:
        try:
            from google.appengine.ext import testbed
        except ImportError:
            unavailable("the App Engine SDK", "pip install 'gaeservices[appengine]'")
        import os

        cls._app = os.environ.get("GAE_APPLICATION")
        os.environ["GAE_APPLICATION"] = "testbed-test"
        cls.bed = testbed.Testbed()
        cls.bed.activate()
        cls.bed.init_memcache_stub()
        return "appengine://"

    @classmethod
    def tearDownClass(cls) -> None:
        import os

        super().tearDownClass()
        cls.bed.deactivate()
        if cls._app is None:
            os.environ.pop("GAE_APPLICATION", None)
        else:
            os.environ["GAE_APPLICATION"] = cls._app
