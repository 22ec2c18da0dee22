"""Real servers for the test session, on loopback.

memcached is started by the session on a free port; PostgreSQL and Redis are the
machine's own (127.0.0.1:5432 database ``test``, 127.0.0.1:6379), each test working
in a schema of its own. The App Engine SDK's testbed provides its service stubs.

Outside CI a test whose server cannot be had is skipped with a message that says
how to enable it; with ``CI=true`` it fails instead, so CI never passes by skipping.
"""

from __future__ import annotations

import os
import socket
import uuid

import pytest

from gaeservices.config import Services
from gaeservices.testing import MemcachedServer

# Fixtures of their own modules, usable in every test by name.
pytest_plugins = ["browser_fixtures", "tasks_backends"]

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _sdk_threading_first() -> None:
    """Let the App Engine SDK patch threading now, before any test starts a thread.

    The SDK's ``wrap_wsgi_app`` (the App Engine examples' tests run it) patches
    ``start_new_thread`` and *reloads* ``threading`` and ``concurrent.futures.thread``,
    once per process. Executors created before that reload (asgiref's, from Django's
    async tests) keep idle non-daemon workers that the reloaded modules no longer
    know, so nothing wakes them at exit; on Python 3.13, which waits for every
    non-daemon thread, the test process then never ends. Done first, the reload
    finds no thread to lose.
    """
    try:
        from google.appengine.runtime import initialize
    except ImportError:
        return
    initialize.InitializeThreadingApis()


_sdk_threading_first()
POSTGRES_HOST = os.environ.get("GAESERVICES_TEST_PGHOST", "127.0.0.1")
POSTGRES_PORT = int(os.environ.get("GAESERVICES_TEST_PGPORT", "5432"))
POSTGRES_DB = os.environ.get("GAESERVICES_TEST_PGDATABASE", "test")
REDIS_HOST = os.environ.get("GAESERVICES_TEST_REDIS_HOST", "127.0.0.1")
REDIS_PORT = int(os.environ.get("GAESERVICES_TEST_REDIS_PORT", "6379"))


def unavailable(what: str, how: str) -> None:
    """Skip (outside CI) or fail (in CI) a test whose server cannot be had."""
    message = f"{what} is not available: {how}"
    if IN_CI:
        pytest.fail(message + " (CI=true: tests that need a server must run)", pytrace=False)
    pytest.skip(message)


def _listening(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


# --- memcached ---------------------------------------------------------------


@pytest.fixture(scope="session")
def memcached_server():
    """One memcached for the session, on a free loopback port."""
    try:
        server = MemcachedServer().start()
    except (FileNotFoundError, TimeoutError) as exc:
        unavailable("memcached", f"{exc}; `make test` installs it when run as root")
    yield server
    server.stop()


@pytest.fixture
def memcached(memcached_server):
    """The session's memcached, running and emptied for this test."""
    memcached_server.start()  # a previous test may have killed it
    memcached_server.flush()
    return memcached_server


@pytest.fixture
def private_memcached():
    """A memcached of this test's own, which the test may kill and restart."""
    try:
        server = MemcachedServer().start()
    except (FileNotFoundError, TimeoutError) as exc:
        unavailable("memcached", f"{exc}; `make test` installs it when run as root")
    yield server
    server.stop()


# --- PostgreSQL ---------------------------------------------------------------


@pytest.fixture(scope="session")
def postgres_available():
    try:
        import psycopg
    except ImportError:
        unavailable("psycopg", "pip install 'gaeservices[sql]'")
    if not _listening(POSTGRES_HOST, POSTGRES_PORT):
        unavailable("PostgreSQL", f"start a server on {POSTGRES_HOST}:{POSTGRES_PORT} with database {POSTGRES_DB!r}")
    return psycopg


POSTGRES_POOL = "pool_size=2&max_overflow=6"


def libpq_url(url: str) -> str:
    """A postgres_url as libpq takes it: without the pool's options, which are ours."""
    return url.replace(POSTGRES_POOL + "&", "")


@pytest.fixture
def postgres_url(postgres_available):
    """A postgresql:// URL whose connections work in a fresh schema, dropped afterwards."""
    psycopg = postgres_available
    schema = "t_" + uuid.uuid4().hex[:12]
    dsn = f"host={POSTGRES_HOST} port={POSTGRES_PORT} dbname={POSTGRES_DB}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    # At most 8 connections per engine, 2 kept idle: the server's 100 are shared by
    # make test's two passes and any other run on the machine, and a test racing
    # 16 threads needs no more than that to race in the database.
    yield (
        f"postgresql://{POSTGRES_HOST}:{POSTGRES_PORT}/{POSTGRES_DB}"
        f"?{POSTGRES_POOL}&options=-csearch_path%3D{schema}"
    )
    # The server is shared (max_connections) by every test run on the machine: give
    # back the pooled connections of this test's engines, not at the process's end.
    from gaeservices.store.engine import dispose_engines

    dispose_engines(schema)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


@pytest.fixture
def sqlite_url(tmp_path):
    return f"sqlite:///{tmp_path / 'store.sqlite3'}"


# --- Redis ---------------------------------------------------------------------


@pytest.fixture
def redis_url():
    if not _listening(REDIS_HOST, REDIS_PORT):
        unavailable("Redis", f"start redis-server on {REDIS_HOST}:{REDIS_PORT}")
    # a run of its own may go beside another (make test's two passes): its own db
    db = int(os.environ.get("GAESERVICES_TEST_REDIS_DB", "15"))
    try:
        import redis
    except ImportError:
        unavailable("redis", "pip install 'gaeservices[celery]'")
    client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=db)
    client.flushdb()
    yield f"redis://{REDIS_HOST}:{REDIS_PORT}/{db}"
    client.flushdb()
    client.close()


# --- App Engine SDK testbed ------------------------------------------------------


@pytest.fixture
def testbed(monkeypatch):
    """The SDK's testbed, activated with the stubs of every service we use."""
    try:
        from google.appengine.ext import testbed as gae_testbed
    except ImportError:
        unavailable("the App Engine SDK", "pip install 'gaeservices[appengine]'")
    monkeypatch.setenv("GAE_APPLICATION", "testbed-test")
    bed = gae_testbed.Testbed()
    bed.activate()
    bed.init_memcache_stub()
    bed.init_datastore_v3_stub()
    bed.init_app_identity_stub()
    bed.init_blobstore_stub()
    bed.init_taskqueue_stub()
    bed.init_mail_stub()
    bed.init_urlfetch_stub()
    try:
        from google.appengine.ext import ndb

        ndb.get_context().clear_cache()
    except Exception:
        pass
    yield bed
    bed.deactivate()


# --- configuration ----------------------------------------------------------------


@pytest.fixture
def services(tmp_path):
    """A Services object on embedded defaults, isolated in a temporary data dir."""
    svc = Services(secret_key="test-secret-key-signing-key-for-the-test-suite", data_dir=str(tmp_path / "data"), environ={})
    yield svc
    svc.close()


# --- process-wide state the App Engine SDK changes ------------------------------------


@pytest.fixture(autouse=True)
def _os_environ_given_back():
    """Give ``os.environ`` back after a test that ran the SDK's ``wrap_wsgi_app`` (the
    App Engine examples do): it replaces ``os.environ`` for the rest of the process with
    a per-thread view, which on Python 3.13 threads started later see empty -- and the
    Datastore race tests' threads then lose the testbed's application id."""
    environ = os.environ
    yield
    if os.environ is not environ:
        os.environ = environ

