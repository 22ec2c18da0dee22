"""memcache:// beyond the contract: dead servers, several servers, the server's item limit."""

from __future__ import annotations

import logging
import time
from urllib.parse import unquote_to_bytes

import pytest

from gaeservices.cache.memcache import MemcacheCache
from gaeservices.config import BackendURL
from gaeservices.exceptions import ValueTooLargeError
from gaeservices.testing import MemcachedServer, free_port

RETRY = 0.5


def _warnings(caplog):
    return [r for r in caplog.records if r.levelno == logging.WARNING and r.name == "gaeservices.cache"]


def test_dead_server_degrades_and_recovers(private_memcached, caplog):
    cache = MemcacheCache.from_url(BackendURL(private_memcached.url + f"?retry_delay={RETRY}&timeout=0.5"))
    assert cache.set("k", "v") is True
    assert cache.incr("n", default=0) == 1
    private_memcached.stop()
    with caplog.at_level(logging.WARNING, logger="gaeservices.cache"):
        assert cache.get("k", "miss") == "miss"
        for _ in range(20):  # within the retry delay: no network, no more warnings
            assert cache.get("k") is None
            assert cache.set("k", "new") is False
            assert cache.add("a", 1) is False
            assert cache.replace("k", 1) is False
            assert cache.delete("k") is False
            assert cache.get_many(["k", "a"]) == {}
            assert cache.set_many({"k": 1, "a": 2}) == ["k", "a"]
            assert cache.incr("n") is None
            assert cache.incr("n", default=0) is None
            assert cache.gets("k", "d") == ("d", None)
            assert cache.cas("k", 1, b"1") is False
            assert cache.touch("k") is False
            assert cache.get_or_set("g", 7) == 7
            cache.delete_many(["k"])
            cache.clear()
    warnings = _warnings(caplog)
    assert len(warnings) == 1
    assert private_memcached.address in warnings[0].getMessage()

    # Still down after the delay: one call tries, fails, warns once more.
    caplog.clear()
    time.sleep(RETRY + 0.1)
    with caplog.at_level(logging.WARNING, logger="gaeservices.cache"):
        assert cache.set("k", "v") is False
        assert cache.set("k", "v") is False
    assert len(_warnings(caplog)) == 1

    private_memcached.start()  # empty, as a restarted memcached is
    assert cache.set("k", "back") is False  # still inside the delay
    time.sleep(RETRY + 0.1)
    assert cache.set("k", "back") is True
    assert cache.get("k") == "back"
    assert cache.incr("n", default=0) == 1
    cache.close()


def test_server_down_from_the_start(caplog):
    cache = MemcacheCache([("127.0.0.1", free_port())], connect_timeout=0.5, retry_delay=60)
    with caplog.at_level(logging.WARNING, logger="gaeservices.cache"):
        assert cache.get("k", 1) == 1
        assert cache.set("k", 2) is False
    assert len(_warnings(caplog)) == 1


@pytest.fixture
def two_servers(memcached, private_memcached):
    url = f"memcache://{memcached.address},{private_memcached.address}?retry_delay={RETRY}&timeout=0.5"
    cache = MemcacheCache.from_url(BackendURL(url))
    yield cache, memcached, private_memcached
    cache.close()


def _held_by(server, keys):
    """The keys among ``keys`` that ``server`` holds (asked directly, not through the cache)."""
    from pymemcache.client.base import Client

    client = Client((server.host, server.port))
    try:
        return set(client.get_many(keys))
    finally:
        client.close()


def test_several_servers_share_the_keys(two_servers):
    cache, one, two = two_servers
    keys = [f"key{i}" for i in range(200)]
    assert cache.set_many({k: i for i, k in enumerate(keys)}) == []
    counts = [len(_held_by(one, keys)), len(_held_by(two, keys))]
    assert sum(counts) == 200 and min(counts) > 40, counts
    assert cache.get_many(keys) == {k: i for i, k in enumerate(keys)}
    for k in keys[:40]:  # gets/cas and incr reach the server holding the key
        value, token = cache.gets(k)
        assert cache.cas(k, value + 1000, token) is True
        assert cache.incr(k, 1) == value + 1001
        assert cache.touch(k, timeout=60) is True
    cache.delete_many(keys[:100])
    assert len(cache.get_many(keys)) == 100
    cache.clear()
    assert cache.get_many(keys) == {}


def test_a_dead_server_among_several_loses_only_its_keys(two_servers, caplog):
    cache, live, dead = two_servers
    keys = [f"key{i}" for i in range(100)]
    cache.set_many({k: k for k in keys})
    on_live = len(_held_by(live, keys))
    assert 0 < on_live < 100
    dead.stop()
    with caplog.at_level(logging.WARNING, logger="gaeservices.cache"):
        stored = [k for k in keys if cache.set(k, "again")]
        found = {k: cache.get(k) for k in keys}
    # The live server's keys still work; the dead server's keys are misses and
    # refused writes - they do not move to the live server.
    assert len(stored) == on_live
    assert sum(v == "again" for v in found.values()) == on_live
    assert sum(v is None for v in found.values()) == 100 - on_live
    assert len(_held_by(live, keys)) == on_live
    assert 1 <= len(_warnings(caplog)) <= 2
    assert dead.address in _warnings(caplog)[0].getMessage()
    dead.start()
    time.sleep(RETRY + 0.1)
    assert all(cache.set(k, "third") for k in keys)
    assert set(cache.get_many(keys).values()) == {"third"}


def test_item_limit_matches_the_server():
    with MemcachedServer(item_size="2m") as server:
        cache = MemcacheCache.from_url(BackendURL(server.url + "?max_item_size=2m"))
        assert cache.max_item_size == 2 * 1024 * 1024
        big = b"x" * (1536 * 1024)
        assert cache.set("big", big) is True
        assert cache.get("big") == big
        with pytest.raises(ValueTooLargeError):
            cache.set("big", b"x" * (2 * 1024 * 1024 + 1))
        cache.close()


def test_a_limit_larger_than_the_server_is_still_a_clear_error(memcached):
    # Configured above the server's -I 1m: the server refuses, and that is an error too.
    cache = MemcacheCache.from_url(BackendURL(memcached.url + "?max_item_size=4m"))
    with pytest.raises(ValueTooLargeError, match="too large"):
        cache.set("big", b"x" * (1536 * 1024))
    assert cache.set("small", b"x") is True  # the connection is still usable
    assert cache.get("small") == b"x"
    cache.close()


def test_keys_sent_to_memcached_are_valid(memcached):
    cache = MemcacheCache.from_url(BackendURL(memcached.url + "?key_prefix=app:"))
    for key in ("plain", "with space", "x" * 300, "ünï"):
        cache.set(key, 1)
    # Look at what the server holds: every key printable ASCII, <= 250 bytes, prefixed.
    import socket

    with socket.create_connection((memcached.host, memcached.port)) as sock:
        sock.sendall(b"lru_crawler metadump all\r\n")
        data = b""
        while not data.endswith(b"END\r\n"):
            data += sock.recv(65536)
    # metadump shows keys URL-encoded.
    keys = [unquote_to_bytes(line.split()[0][4:]) for line in data.splitlines() if line.startswith(b"key=")]
    assert len(keys) == 4
    assert b"app:plain" in keys
    for key in keys:
        assert key.startswith(b"app:") and len(key) <= 250
        assert all(0x21 <= byte <= 0x7E for byte in key), key


def test_replies_of_any_size_and_content_are_read_whole(memcached):
    cache = MemcacheCache([memcached.address])
    tricky = b"VALUE x 0 1\r\nEND\r\n" * 3
    big = bytes(range(256)) * 3600  # 900 KiB: many recv calls
    assert cache.set("tricky", tricky) and cache.get("tricky") == tricky
    assert cache.set("big", big) and cache.get("big") == big
    value, token = cache.gets("big")
    assert value == big
    assert cache.cas("big", tricky, token) and cache.get("big") == tricky
    # the connection is still in step: the next command reads its own reply
    assert cache.add("fresh", 1) and cache.get("fresh") == 1
    cache.close()


def test_a_cas_token_must_be_digits(memcached):
    cache = MemcacheCache([memcached.address])
    cache.set("k", 1)
    from pymemcache.exceptions import MemcacheIllegalInputError

    with pytest.raises(MemcacheIllegalInputError):
        cache.cas("k", 2, b"1 0 0 1\r\nflush_all")
    assert cache.get("k") == 1
    cache.close()


# -- several servers: keys where other clients look for them --------------------


@pytest.fixture
def three_servers():
    servers = []
    try:
        for _ in range(3):
            servers.append(MemcachedServer().start())
    except (FileNotFoundError, TimeoutError) as exc:
        for server in servers:
            server.stop()
        from conftest import unavailable

        unavailable("memcached", f"{exc}; `make test` installs it when run as root")
    yield servers
    for server in servers:
        server.stop()


def _holder(servers, server_key):
    """The one server among ``servers`` that holds ``server_key`` (asked directly)."""
    from pymemcache.client.base import Client

    holders = []
    for server in servers:
        client = Client((server.host, server.port))
        try:
            if client.get(server_key) is not None:
                holders.append(server.address)
        finally:
            client.close()
    assert len(holders) == 1, (server_key, holders)
    return holders[0]


def test_cluster_keys_are_placed_as_pymemcache_and_django_place_them(three_servers):
    from django.core.cache.backends.memcached import PyMemcacheCache
    from pymemcache.client.hash import HashClient
    from pymemcache.serde import pickle_serde

    addresses = [s.address for s in three_servers]
    # Django makes the server key ":1:<key>" (empty KEY_PREFIX, version 1);
    # the same prefix here gives the same server keys.
    ours = MemcacheCache(addresses, key_prefix=":1:")
    django = PyMemcacheCache(",".join(addresses), {})
    hashed = HashClient([(s.host, s.port) for s in three_servers], serde=pickle_serde, default_noreply=False)
    try:
        keys = [f"user:{i}" for i in range(200)]
        # ours -> theirs
        assert ours.set_many({k: f"v{i}" for i, k in enumerate(keys)}) == []
        placed = {}
        for i, key in enumerate(keys):
            assert django.get(key) == f"v{i}", key
            assert hashed.get(":1:" + key) == f"v{i}", key
            placed[key] = _holder(three_servers, ":1:" + key)
            assert placed[key] == ours.server_of(key)
        assert len(set(placed.values())) == 3  # every server holds some
        # theirs -> ours, with each value type their serializer and ours share
        for flag in ("django", "hashclient"):
            for i, key in enumerate(keys):
                value = [b"raw bytes", "text é", 12345][i % 3]
                if flag == "django":
                    django.set(key, value)
                else:
                    hashed.set(":1:" + key, value)
            for i, key in enumerate(keys):
                assert ours.get(key) == [b"raw bytes", "text é", 12345][i % 3], (flag, key)
                assert _holder(three_servers, ":1:" + key) == placed[key]
            assert ours.get_many(keys) == {k: [b"raw bytes", "text é", 12345][i % 3] for i, k in enumerate(keys)}
        # gets/cas, incr and touch reach the same server
        for key in keys[:30]:
            ours.set(key, 1)
            value, token = ours.gets(key)
            assert ours.cas(key, 5, token) is True
            assert ours.incr(key, 2) == 7
            assert hashed.get(":1:" + key) == 7
            assert django.get(key) == 7
    finally:
        ours.close()
        django.close()
        hashed.close()


def test_value_flags_are_documented_and_read_by_pymemcache(memcached):
    from pymemcache.client.base import Client
    from pymemcache.serde import pickle_serde

    cache = MemcacheCache([memcached.address])
    raw = Client((memcached.host, memcached.port), serde=pickle_serde)
    try:
        flags_of = {}
        for name, value, flags in [
            ("bytes", b"\x00b", 0), ("pickle", {"a": 1}, 1), ("int", 42, 2),
            ("str", "é", 16), ("float", 1.5, 32), ("bool", True, 64),
        ]:  # fmt: skip
            cache.set(name, value)
            result = raw.raw_command(f"get {name}", b"END\r\n").split(b"\r\n")[0].split()
            flags_of[name] = int(result[2])
            assert flags_of[name] == flags
            if flags in (0, 1, 2, 16):  # pymemcache's own serializer knows these
                assert raw.get(name) == value
        import pathlib

        docs = (pathlib.Path(__file__).parent.parent / "docs" / "cache.md").read_text()
        for name, flags in flags_of.items():
            assert f"| {name} | {flags} |" in docs.replace("`", "")
    finally:
        cache.close()
        raw.close()


# -- faults: something else on the port, restarts, stalls ---------------------------


@pytest.fixture
def http_server():
    import http.server
    import threading

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield "127.0.0.1:%d" % server.server_address[1]
    server.shutdown()
    server.server_close()


def test_a_server_that_is_not_memcached_is_a_dead_server(http_server, caplog):
    cache = MemcacheCache([http_server], timeout=1, retry_delay=60)
    with caplog.at_level(logging.WARNING, logger="gaeservices.cache"):
        assert cache.incr("n", default=0) is None  # not a ValueError
    assert len(_warnings(caplog)) == 1
    assert http_server in _warnings(caplog)[0].getMessage()
    for call in (
        lambda: cache.get("k", "d") == "d",
        lambda: cache.gets("k", "d") == ("d", None),
        lambda: cache.set("k", 1) is False,
        lambda: cache.get_many(["a", "b"]) == {},
        lambda: cache.delete("k") is False,
        lambda: cache.touch("k") is False,
    ):
        cache.retry_now()  # each call reaches the HTTP server, and each is a server fault
        assert call()
    cache.close()


def test_retry_now_ends_the_retry_delay(private_memcached):
    cache = MemcacheCache([private_memcached.address], timeout=0.5, retry_delay=3600)
    assert cache.set("k", 1) is True
    private_memcached.stop()
    assert cache.get("k", "miss") == "miss"
    private_memcached.start()
    assert cache.set("k", 2) is False  # an hour of retry delay left
    cache.retry_now()
    assert cache.set("k", 2) is True
    assert cache.get("k") == 2
    cache.close()


def test_a_stalled_server_times_out_and_its_queued_commands_run_when_it_resumes(private_memcached):
    cache = MemcacheCache([private_memcached.address], timeout=0.3, retry_delay=3600)
    assert cache.set("k", "before") is True
    private_memcached.pause()
    try:
        assert cache.get("k", "miss") == "miss"  # timed out: a fault
        assert cache.set("k", "during") is False  # inside the retry delay: not sent
        # A write that must land is sent even inside the delay; it waits while
        # the server is stopped, and is confirmed once it runs again.
        import threading

        timer = threading.Timer(0.5, private_memcached.resume)
        timer.start()
        assert cache.set_confirmed("k", "confirmed", wait=10) is True
        timer.join()
    finally:
        private_memcached.resume()
    cache.retry_now()
    assert cache.get("k") == "confirmed"
    cache.close()


def test_a_confirmed_write_to_a_server_that_is_not_running_is_confirmed(caplog):
    # Nothing a server that does not run held can contradict the write.
    cache = MemcacheCache([("127.0.0.1", free_port())], connect_timeout=0.5, retry_delay=60)
    assert cache.set_confirmed("k", "v", wait=5) is True
    cache.close()


def test_a_write_that_cannot_be_confirmed_says_so(private_memcached):
    cache = MemcacheCache([private_memcached.address], timeout=0.2, retry_delay=60)
    private_memcached.pause()
    try:
        assert cache.set_confirmed("k", "v", wait=0.3) is False
    finally:
        private_memcached.resume()
    cache.close()


# -- what the lean client borrows from pymemcache ------------------------------------


def test_pymemcache_internals_the_lean_client_uses_are_where_it_expects(memcached):
    """Fails loudly when an upgrade of pymemcache moves what ``_Client`` relies on:
    ``Client._connect()`` opening ``Client.sock`` with the configured timeout, and
    ``close()`` clearing it. setup.py bounds the version range to the tested one."""
    import inspect
    import socket

    import pymemcache
    from pymemcache.client.base import Client

    from gaeservices.cache.memcache import _Client

    major_minor = tuple(int(part) for part in pymemcache.__version__.split(".")[:2])
    assert major_minor == (4, 0), f"pymemcache {pymemcache.__version__} is outside the tested range"
    assert list(inspect.signature(Client._connect).parameters) == ["self"]
    for name in ("server", "connect_timeout", "timeout"):
        assert name in inspect.signature(Client.__init__).parameters
    client = _Client((memcached.host, memcached.port), connect_timeout=0.7, timeout=0.9)
    assert client.sock is None
    client._connect()
    assert isinstance(client.sock, socket.socket)
    assert client.sock.gettimeout() == 0.9
    assert client.sock.getpeername() == (memcached.host, memcached.port)
    client.close()
    assert client.sock is None
    # and the rendezvous hash HashClient places keys with
    from pymemcache.client.hash import HashClient
    from pymemcache.client.rendezvous import RendezvousHash

    assert inspect.signature(HashClient.__init__).parameters["hasher"].default is RendezvousHash
    assert list(inspect.signature(RendezvousHash.get_node).parameters) == ["self", "key"]
