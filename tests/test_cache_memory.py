"""memory:// beyond the contract (LRU by bytes), and cache configuration."""

from __future__ import annotations

import pytest

from gaeservices.cache.memory import MemoryCache
from gaeservices.config import Services
from gaeservices.exceptions import ConfigurationError


def test_lru_is_bounded_by_bytes():
    cache = MemoryCache(max_bytes=10_000)
    for i in range(10):
        cache.set(f"k{i}", b"x" * 1000)  # 1002 bytes each with its key
    assert cache.stats()["bytes"] <= 10_000
    assert cache.get("k0") is None  # the least recently used went first
    assert cache.get("k9") == b"x" * 1000
    cache.get("k2")  # now recently used
    cache.set("new", b"y" * 3000)
    assert cache.get("k2") == b"x" * 1000
    assert cache.get("k3") is None
    assert cache.stats()["bytes"] <= 10_000


def test_replacing_and_deleting_keep_the_byte_count():
    cache = MemoryCache(max_bytes=1000)
    cache.set("a", b"x" * 400)
    cache.set("a", b"x" * 10)
    cache.set("b", b"x" * 500)
    assert cache.get("a") == b"x" * 10
    cache.delete("b")
    assert cache.stats() == {"items": 1, "bytes": 11, "max_bytes": 1000}
    cache.incr("n", default=9)
    assert cache.stats()["bytes"] == 11 + 1 + 2


def test_instances_are_separate():
    one, two = MemoryCache(), MemoryCache()
    one.set("k", 1)
    assert two.get("k") is None


def _services(tmp_path, url):
    return Services(environ={}, cache=url, data_dir=str(tmp_path), secret_key="k-signing-key-for-the-test-suite")


def test_embedded_default_is_memory(services):
    cache = services.cache
    assert isinstance(cache, MemoryCache)
    assert cache.incr("demo:hits", 1, default=0) == 1
    assert cache.incr("demo:hits", 1, default=0) == 2
    assert services.cache is cache


def test_url_options(tmp_path, memcached):
    cache = _services(tmp_path, "memory://?max_bytes=2m&max_item_size=100k&default_timeout=60&key_prefix=a:").cache
    assert (cache.max_bytes, cache.max_item_size, cache.default_timeout, cache.key_prefix) == (
        2 * 1024 * 1024,
        100 * 1024,
        60.0,
        "a:",
    )
    assert _services(tmp_path, "memory://?default_timeout=none").cache.default_timeout is None
    # Timeouts a loaded machine's scheduling cannot reach: the set and get below
    # show the options make a working client, not how fast the machine is.
    mc = _services(
        tmp_path,
        memcached.url + "?connect_timeout=20.5&timeout=30.5&retry_delay=5&max_pool_size=4&max_item_size=1m",
    ).cache
    assert mc.retry_delay == 5.0
    assert mc._pools[0]._options["connect_timeout"] == 20.5 and mc._pools[0]._options["timeout"] == 30.5
    assert mc._pools[0].max_idle == 4
    assert mc.set("k", 1) and mc.get("k") == 1
    mc.close()


@pytest.mark.parametrize(
    "url, fragment",
    [
        ("memory://?max_bytes=lots", "max_bytes='lots' is not a size"),
        ("memory://?bogus=1", "unknown option(s) bogus"),
        ("memory://?default_timeout=soon", "default_timeout='soon' is not a number"),
        ("memory://?default_timeout=0", "default_timeout='0' is not a number of seconds > 0"),
        ("memory://?max_item_size=0", "max_item_size='0' is not a size"),
        ("memory://?key_prefix=a%20b", "key_prefix='a b'"),
        ("memcache://127.0.0.1:11211?timeout=fast", "timeout='fast' is not a number"),
        ("memcache://127.0.0.1:11211?noreply=1", "unknown option(s) noreply"),
        ("appengine://?max_item_size=2m", "at most 999999 bytes"),
        ("appengine://?namespace=x", "unknown option(s) namespace"),
    ],
)
def test_bad_options_are_configuration_errors(tmp_path, url, fragment):
    with pytest.raises(ConfigurationError) as info:
        _services(tmp_path, url).cache
    assert fragment in str(info.value)


def test_bad_urls_fail_when_services_are_built(tmp_path):
    with pytest.raises(ConfigurationError, match="GAESERVICES_CACHE"):
        Services(environ={"GAESERVICES_CACHE": "memcache://nohost"}, data_dir=str(tmp_path))
    with pytest.raises(ConfigurationError, match="takes no host"):
        Services(environ={"GAESERVICES_CACHE": "memory://somewhere"}, data_dir=str(tmp_path))


def test_importing_the_cache_api_is_light():
    import subprocess
    import sys

    code = (
        "import sys, gaeservices.cache, gaeservices.cache.memory; "
        "print(' '.join(m for m in ('pymemcache', 'google.appengine', 'webob') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
