"""The store's contract, run unchanged against SQLite, PostgreSQL and Datastore."""

from __future__ import annotations

import threading
import time
import uuid

import pytest

from gaeservices.config import BackendURL, Services
from gaeservices.exceptions import StoreError
from gaeservices.store.api import MAX_PLAIN_KEY_BYTES, Store, storage_id


@pytest.fixture(params=["sqlite", "postgresql", "datastore"])
def store(request):
    if request.param == "datastore":
        request.getfixturevalue("testbed")
        from gaeservices.store.datastore import DatastoreStore

        yield DatastoreStore.from_url(BackendURL("datastore://"), None)
        return
    from gaeservices.store.engine import dispose_engine
    from gaeservices.store.sql import SQLStore

    url = BackendURL(request.getfixturevalue({"sqlite": "sqlite_url", "postgresql": "postgres_url"}[request.param]))
    backend = SQLStore.from_url(url, None)
    yield backend
    backend.close()
    dispose_engine(url)


def race(n: int, target) -> list:
    """Run ``target(i)`` in ``n`` threads released at once; their results in order."""
    barrier = threading.Barrier(n)
    results: list = [None] * n
    errors: list = []

    def run(i: int) -> None:
        barrier.wait()
        try:
            results[i] = target(i)
        except BaseException as exc:  # surfaced below, with the thread's own traceback
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    if errors:
        raise errors[0]
    return results


def test_is_a_store(store):
    assert isinstance(store, Store)


def test_get_absent(store):
    assert store.get("nothing") is None


def test_put_get_overwrite(store):
    store.put("k", b"one")
    assert store.get("k") == b"one"
    store.put("k", b"two")
    assert store.get("k") == b"two"


def test_values_are_bytes_exactly(store):
    every_byte = bytes(range(256)) * 4
    store.put("bin", every_byte)
    store.put("empty", b"")
    assert store.get("bin") == every_byte
    assert store.get("empty") == b""


def test_large_value(store):
    value = bytes(range(256)) * 2000  # 512 KB
    store.put("large", value)
    assert store.get("large") == value


@pytest.mark.parametrize(
    "key",
    [
        "",
        "x" * MAX_PLAIN_KEY_BYTES,
        "x" * (MAX_PLAIN_KEY_BYTES + 1),
        "y" * 20_000,
        "ünïcødé 键 🙂",
        "with\x00nul",
        "lone \ud800 surrogate",
        "h:" + "0" * 64,  # looks like a digest id
        "sp ace/slash?query=1&x#frag",
    ],
)
def test_keys_of_any_length_and_content(store, key):
    store.put(key, b"v:" + key.encode("utf-8", "surrogatepass"))
    assert store.get(key) == b"v:" + key.encode("utf-8", "surrogatepass")
    assert store.get_many([key]) == {key: b"v:" + key.encode("utf-8", "surrogatepass")}
    assert store.delete(key)
    assert store.get(key) is None


def test_long_keys_with_a_common_prefix_do_not_collide(store):
    base = "p" * 5000
    store.put(base + "a", b"a")
    store.put(base + "b", b"b")
    assert store.get(base + "a") == b"a"
    assert store.get(base + "b") == b"b"


def test_digest_ids_cannot_collide_with_plain_keys():
    long_key = "z" * 1000
    digest_id = storage_id(long_key)
    assert digest_id.startswith("h:")
    assert storage_id(digest_id[2:]) != digest_id
    assert storage_id(digest_id) != digest_id


def test_wrong_types(store):
    with pytest.raises(TypeError):
        store.put("k", "text")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        store.put(b"k", b"v")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        store.put("k", b"v", timeout=-1)
    assert store.get("k") is None


def past(moment):
    """Wait until the clock is past ``moment`` (a loaded machine may be later, never earlier)."""
    while time.time() <= moment:
        time.sleep(max(0.005, moment - time.time()))


def test_expiry(store):
    before = time.time()
    store.put("short", b"s", timeout=0.3)
    put = time.time()
    got = store.get("short")
    if time.time() < before + 0.3:  # read before it could have expired
        assert got == b"s"
    store.put("long", b"l", timeout=3600)
    store.put("forever", b"f")
    past(put + 0.3)
    assert store.get("short") is None
    assert store.get("long") == b"l"
    assert store.get("forever") == b"f"
    assert store.get_many(["short", "long", "forever"]) == {"long": b"l", "forever": b"f"}


def test_zero_timeout_is_already_expired(store):
    store.put("k", b"v", timeout=0)
    assert store.get("k") is None


def test_put_without_timeout_clears_expiry(store):
    store.put("k", b"v", timeout=0.2)
    store.put("k", b"w")
    time.sleep(0.3)
    assert store.get("k") == b"w"


def test_get_many(store):
    store.put("a", b"1")
    store.put("b", b"2")
    store.put("gone", b"x", timeout=0)
    assert store.get_many([]) == {}
    assert store.get_many(["a", "b", "c", "gone", "a"]) == {"a": b"1", "b": b"2"}
    assert store.get_many(iter(["b"])) == {"b": b"2"}


def test_get_many_beyond_one_batch(store):
    keys = [f"key-{i}" for i in range(1200)]
    for key in keys[::3]:
        store.put(key, key.encode())
    assert store.get_many(keys) == {key: key.encode() for key in keys[::3]}


def test_add(store):
    assert store.add("k", b"first") is True
    assert store.add("k", b"second") is False
    assert store.get("k") == b"first"


def test_add_replaces_an_expired_row(store):
    store.put("k", b"old", timeout=0)
    assert store.add("k", b"new", timeout=3600) is True
    assert store.get("k") == b"new"
    assert store.add("k", b"newer") is False


def test_add_with_expiry(store):
    assert store.add("k", b"v", timeout=0.2)
    time.sleep(0.3)
    assert store.get("k") is None
    assert store.add("k", b"w")


def test_delete(store):
    store.put("k", b"v")
    assert store.delete("k") is True
    assert store.get("k") is None
    assert store.delete("k") is False
    assert store.delete("never") is False


def test_delete_expired_is_false(store):
    store.put("k", b"v", timeout=0)
    assert store.delete("k") is False


def test_delete_expected(store):
    store.put("k", b"mine")
    assert store.delete("k", expected=b"theirs") is False
    assert store.get("k") == b"mine"
    assert store.delete("k", expected=b"mine") is True
    assert store.get("k") is None
    assert store.delete("k", expected=b"mine") is False


def test_update(store):
    seen = []

    def append(current):
        seen.append(current)
        return (current or b"") + b"+"

    assert store.update("k", append) == b"+"
    assert store.update("k", append) == b"++"
    assert seen == [None, b"+"]
    assert store.get("k") == b"++"


def test_update_sees_an_expired_row_as_absent(store):
    store.put("k", b"stale", timeout=0)
    assert store.update("k", lambda current: b"fresh" if current is None else b"wrong") == b"fresh"
    assert store.get("k") == b"fresh"


def test_update_returning_none_deletes(store):
    store.put("k", b"v")
    assert store.update("k", lambda current: None) is None
    assert store.get("k") is None
    assert store.update("absent", lambda current: None) is None
    assert store.get("absent") is None


def test_update_sets_the_expiry(store):
    store.put("k", b"v")
    before = time.time()
    store.update("k", lambda current: current + b"w", timeout=0.2)
    updated = time.time()
    got = store.get("k")
    if time.time() < before + 0.2:  # read before it could have expired
        assert got == b"vw"
    past(updated + 0.2)
    assert store.get("k") is None


def test_update_that_raises_writes_nothing(store):
    store.put("k", b"before")

    def fail(current):
        raise RuntimeError("changed my mind")

    with pytest.raises(RuntimeError):
        store.update("k", fail)
    with pytest.raises(TypeError):
        store.update("k", lambda current: "not bytes")
    assert store.get("k") == b"before"


def test_purge_expired(store):
    store.put("a", b"1", timeout=0)
    store.put("b", b"2", timeout=0)
    store.put("c", b"3", timeout=3600)
    store.put("d", b"4")
    assert store.purge_expired() == 2
    assert store.purge_expired() == 0
    assert store.get_many(["a", "b", "c", "d"]) == {"c": b"3", "d": b"4"}


def test_add_race_has_exactly_one_winner(store):
    results = race(12, lambda i: store.add("race", str(i).encode()))
    assert results.count(True) == 1
    winner = results.index(True)
    assert store.get("race") == str(winner).encode()


def test_add_race_on_an_expired_row_has_exactly_one_winner(store):
    store.put("race", b"expired", timeout=0)
    results = race(12, lambda i: store.add("race", str(i).encode()))
    assert results.count(True) == 1
    assert store.get("race") == str(results.index(True)).encode()


def test_concurrent_updates_lose_nothing(store):
    def increment(i):
        for _ in range(5):
            store.update("counter", lambda current: str(int(current or b"0") + 1).encode())

    race(8, increment)
    assert store.get("counter") == b"40"


def test_delete_expected_race_has_exactly_one_winner(store):
    store.put("lock", b"token")
    results = race(10, lambda i: store.delete("lock", expected=b"token"))
    assert results.count(True) == 1


def test_services_build_the_store_from_urls(tmp_path, sqlite_url):
    services = Services(store=sqlite_url, secret_key="k-signing-key-for-the-test-suite", environ={}, data_dir=str(tmp_path))
    try:
        from gaeservices.store.sql import SQLStore

        assert isinstance(services.store, SQLStore)
        services.store.put("k", b"v")
        assert services.store.get("k") == b"v"
    finally:
        services.close()


def test_embedded_default_is_sqlite_in_the_data_dir(services):
    services.store.put("k", b"v")
    assert services.store.get("k") == b"v"
    assert services.backend_url("store").url.endswith("/data/store.sqlite3")


# --- failures surface as StoreError, with the cause chained --------------------


def test_unreachable_postgresql_raises_store_error(postgres_available):
    from gaeservices.store.sql import SQLStore
    from gaeservices.testing import free_port

    url = BackendURL(f"postgresql://127.0.0.1:{free_port()}/test?connect_timeout=2")
    with pytest.raises(StoreError) as info:
        SQLStore.from_url(url, None)
    assert info.value.__cause__ is not None


def test_a_file_that_is_not_a_database_raises_store_error(tmp_path):
    from gaeservices.store.sql import SQLStore

    path = tmp_path / "garbage.sqlite3"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreError) as info:
        SQLStore.from_url(BackendURL(f"sqlite:///{path}"), None)
    assert "not a database" in str(info.value.__cause__)


def test_postgresql_failure_mid_transaction_writes_nothing(postgres_url):
    """A statement that fails inside ``update`` rolls the whole transaction back."""
    import psycopg

    from gaeservices.store.engine import dispose_engine
    from gaeservices.store.sql import SQLStore

    url = BackendURL(postgres_url)
    store = SQLStore.from_url(url, None)
    try:
        store.put("k", b"before")
        schema = postgres_url.rsplit("%3D", 1)[1]
        with psycopg.connect("host=127.0.0.1 port=5432 dbname=test", autocommit=True) as conn:
            # Values over 8 bytes now violate a constraint: the UPDATE inside the
            # transaction fails after the row was locked and read.
            conn.execute(
                f'ALTER TABLE "{schema}".gaeservices_store '
                "ADD CONSTRAINT short CHECK (length(value) <= 8) NOT VALID"
            )
        with pytest.raises(StoreError) as info:
            store.update("k", lambda current: current + b" and a long tail")
        assert isinstance(info.value.__cause__, Exception)
        assert store.get("k") == b"before"
    finally:
        dispose_engine(url)


def test_datastore_entity_too_large_raises_store_error(testbed):
    from gaeservices.store.datastore import DatastoreStore

    store = DatastoreStore()
    with pytest.raises(StoreError) as info:
        store.put("huge", b"x" * (2 * 1024 * 1024))
    assert info.value.__cause__ is not None
    assert store.get("huge") is None


def test_table_prefix_and_idempotent_schema(tmp_path):
    from gaeservices.store.engine import dispose_engine
    from gaeservices.store.sql import SQLStore

    plain = BackendURL(f"sqlite:///{tmp_path}/s.db")
    prefixed = BackendURL(f"sqlite:///{tmp_path}/s.db?table_prefix=app2_")
    first = SQLStore.from_url(plain, None)
    again = SQLStore.from_url(plain, None)  # the table exists: created once, kept
    other = SQLStore.from_url(prefixed, None)
    try:
        first.put("k", b"one")
        assert again.get("k") == b"one"
        assert other.get("k") is None
        assert other.table.name == "app2_gaeservices_store"
    finally:
        dispose_engine(plain)
        dispose_engine(prefixed)


def test_sqlite_path_is_percent_decoded_once(tmp_path):
    from gaeservices.store.engine import dispose_engine
    from gaeservices.store.sql import SQLStore

    url = BackendURL(f"sqlite:///{tmp_path}/with%20space/100%25/store.db")
    store = SQLStore.from_url(url, None)
    try:
        store.put("k", b"v")
        assert store.get("k") == b"v"
        assert (tmp_path / "with space" / "100%" / "store.db").exists()
    finally:
        dispose_engine(url)


def test_postgresql_connection_lost_mid_update_reports_the_loss_and_recovers(postgres_url):
    """The server ends the connection while ``update`` holds the row: the error
    names what happened, nothing is written, and the next call works."""
    import psycopg

    from gaeservices.store.engine import dispose_engine
    from gaeservices.store.sql import SQLStore

    # The server is shared with other test runs: end only this test's connection,
    # found by an application_name of its own.
    name = "gaeservices-test-" + uuid.uuid4().hex[:12]
    url = BackendURL(f"{postgres_url}&application_name={name}")
    store = SQLStore.from_url(url, None)
    admin = psycopg.connect("host=127.0.0.1 port=5432 dbname=test", autocommit=True)
    try:
        store.put("k", b"before")

        def terminate_own_connection(current):
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE pid <> pg_backend_pid() AND application_name = %s AND query LIKE %s",
                (name, "%gaeservices_store%FOR UPDATE%"),
            )
            return b"after"

        with pytest.raises(StoreError) as info:
            store.update("k", terminate_own_connection)
        assert isinstance(info.value.__cause__, psycopg.errors.AdminShutdown), repr(info.value.__cause__)
        assert store.get("k") == b"before"
        assert store.update("k", lambda current: current + b"!") == b"before!"
    finally:
        admin.close()
        dispose_engine(url)
