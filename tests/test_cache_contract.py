"""The cache contract: one suite, run unchanged against every backend.

memory:// in-process, memcache:// against the real memcached the session
starts, appengine:// against the SDK's testbed stub. Passing here is what
makes the backends interchangeable.
"""

from __future__ import annotations

import decimal
import enum
import threading
import time

import pytest

from gaeservices.config import BackendURL, import_backend, BACKENDS
from gaeservices.exceptions import NotAnIntegerError, ValueTooLargeError

DAY = 24 * 3600
BACKEND_NAMES = ["memory", "memcache", "appengine"]


class Colour(enum.Enum):
    RED = "red"


class Point:
    def __init__(self, x, y):
        self.x, self.y = x, y

    def __eq__(self, other):
        return isinstance(other, Point) and (self.x, self.y) == (other.x, other.y)


@pytest.fixture(params=BACKEND_NAMES)
def make_cache(request):
    """Build caches of one backend from URL query options, as users configure them."""
    name = request.param
    if name == "memory":
        base = "memory://"
    elif name == "memcache":
        base = request.getfixturevalue("memcached").url
    else:
        request.getfixturevalue("testbed")
        base = "appengine://"
    built = []

    def make(**options):
        query = "&".join(f"{k}={'' if v is None else v}" for k, v in options.items())
        url = BackendURL(base + ("?" + query if query else ""))
        cls = import_backend(BACKENDS["cache"][url.scheme].path)
        cache = cls.from_url(url, None)
        built.append(cache)
        return cache

    make.backend = name
    yield make
    for cache in built:
        cache.close()


@pytest.fixture
def cache(make_cache):
    cache = make_cache()
    cache.clear()
    return cache


# -- values -------------------------------------------------------------------

VALUES = [
    b"",
    b"\x00\xffbytes\r\n",
    "",
    "text é 漢字 \U0001f600",
    0,
    -7,
    2**64 + 5,
    1.5,
    float("inf"),
    True,
    False,
    None,
    [1, "two", 3.0],
    {"nested": {"a": (1, 2)}},
    {1, 2},
    decimal.Decimal("1.10"),
    Colour.RED,
    Point(1, 2),
]


@pytest.mark.parametrize("value", VALUES, ids=lambda v: type(v).__name__ + ":" + repr(v)[:12])
def test_values_round_trip_with_their_type(cache, value):
    assert cache.set("k", value) is True
    got = cache.get("k", "missing")
    assert got == value
    assert type(got) is type(value)


def test_missing_key_gives_default(cache):
    assert cache.get("nope") is None
    assert cache.get("nope", 42) == 42
    cache.set("none", None)
    assert cache.get("none", 42) is None  # a stored None is not a miss


def test_values_are_copies(cache):
    value = {"list": [1]}
    cache.set("k", value)
    value["list"].append(2)
    got = cache.get("k")
    got["list"].append(3)
    assert cache.get("k") == {"list": [1]}


def test_set_overwrites(cache):
    cache.set("k", "one")
    cache.set("k", 2)
    assert cache.get("k") == 2


# -- add, replace, delete ---------------------------------------------------------


def test_add(cache):
    assert cache.add("k", "first") is True
    assert cache.add("k", "second") is False
    assert cache.get("k") == "first"


def test_replace(cache):
    assert cache.replace("k", "x") is False
    assert cache.get("k") is None
    cache.set("k", "old")
    assert cache.replace("k", "new") is True
    assert cache.get("k") == "new"


def test_delete(cache):
    cache.set("k", 1)
    assert cache.delete("k") is True
    assert cache.get("k") is None
    assert cache.delete("k") is False


# -- many ---------------------------------------------------------------------------


def test_get_many_returns_found_keys_only(cache):
    cache.set("a", 1)
    cache.set("b", "two")
    assert cache.get_many(["a", "b", "c"]) == {"a": 1, "b": "two"}
    assert cache.get_many([]) == {}
    assert cache.get_many(iter(["a"])) == {"a": 1}


def test_set_many_and_delete_many(cache):
    mapping = {f"k{i}": i for i in range(30)}
    mapping["text"] = "t"
    assert cache.set_many(mapping) == []
    assert cache.get_many(list(mapping)) == mapping
    cache.delete_many([f"k{i}" for i in range(30)])
    assert cache.get_many(list(mapping)) == {"text": "t"}
    cache.delete_many([])
    assert cache.set_many({}) == []


# -- counters ---------------------------------------------------------------------------


def test_incr_decr(cache):
    cache.set("n", 10)
    assert cache.incr("n") == 11
    assert cache.incr("n", 5) == 16
    assert cache.decr("n", 6) == 10
    assert cache.incr("n", -3) == 7
    assert cache.decr("n", -3) == 10
    assert cache.get("n") == 10
    assert type(cache.get("n")) is int


def test_incr_missing_key(cache):
    assert cache.incr("missing") is None
    assert cache.decr("missing") is None
    assert cache.get("missing") is None


def test_incr_with_default_initialises(cache):
    assert cache.incr("hits", 1, default=0) == 1
    assert cache.incr("hits", 1, default=0) == 2
    assert cache.incr("big", 5, default=100) == 105
    assert cache.decr("down", 5, default=3) == 0
    assert cache.decr("down2", 2, default=10) == 8
    assert cache.get("hits") == 2


def test_counters_are_unsigned_64_bit(cache):
    cache.set("n", 3)
    assert cache.decr("n", 10) == 0  # never below zero
    cache.set("n", 2**64 - 1)
    assert cache.incr("n") == 0  # wraps, as memcached does


@pytest.mark.parametrize(
    "value", ["abc", 1.5, -1, 2**64, True, [1], b"12x"], ids=repr
)
def test_incr_on_a_non_integer_is_an_error(cache, value):
    cache.set("v", value)
    with pytest.raises(NotAnIntegerError):
        cache.incr("v")
    with pytest.raises(NotAnIntegerError):
        cache.decr("v", default=0)
    assert cache.get("v") == value


def test_incr_rejects_non_int_delta(cache):
    cache.set("n", 1)
    with pytest.raises(TypeError):
        cache.incr("n", 1.5)


def test_concurrent_incr_loses_nothing(cache):
    threads, per_thread = 8, 150
    errors = []

    def work():
        try:
            for _ in range(per_thread):
                cache.incr("shared", 1, default=0)
        except Exception as exc:  # surfaced below: a thread's error must fail the test
            errors.append(exc)

    workers = [threading.Thread(target=work) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert errors == []
    assert cache.get("shared") == threads * per_thread


# -- compare and set ------------------------------------------------------------------


def test_gets_cas(cache):
    assert cache.gets("k") == (None, None)
    assert cache.gets("k", "dflt") == ("dflt", None)
    cache.set("k", [1])
    value, token = cache.gets("k")
    assert value == [1] and token is not None
    assert cache.cas("k", value + [2], token) is True
    assert cache.get("k") == [1, 2]
    assert cache.cas("k", "stale", token) is False  # the token was used up
    assert cache.get("k") == [1, 2]


def test_cas_fails_after_a_concurrent_write(cache):
    cache.set("k", 1)
    _, token = cache.gets("k")
    cache.set("k", 2)
    assert cache.cas("k", 3, token) is False
    assert cache.get("k") == 2
    _, token = cache.gets("k")
    cache.delete("k")
    assert cache.cas("k", 4, token) is False
    assert cache.get("k") is None


def test_cas_loop_under_threads(cache):
    cache.set("list", [])

    failures = []

    def append(n):
        for _ in range(200):
            value, token = cache.gets("list")
            if cache.cas("list", value + [n], token):
                return
        failures.append(n)

    workers = [threading.Thread(target=append, args=(n,)) for n in range(6)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert failures == []
    assert sorted(cache.get("list")) == list(range(6))


# -- get_or_set ----------------------------------------------------------------------------


def test_get_or_set(cache):
    calls = []

    def compute():
        calls.append(1)
        return {"v": 1}

    assert cache.get_or_set("k", compute) == {"v": 1}
    assert cache.get_or_set("k", compute) == {"v": 1}
    assert len(calls) == 1
    assert cache.get_or_set("plain", 5) == 5
    cache.set("there", "existing")
    assert cache.get_or_set("there", "new") == "existing"


# -- timeouts ---------------------------------------------------------------------------


def test_timeout_zero_or_negative_expires_at_once(cache):
    cache.set("k", "old")
    assert cache.set("k", "new", timeout=0) is True
    assert cache.get("k") is None
    cache.set("k", "old")
    cache.set("k", "new", timeout=-5)
    assert cache.get("k") is None
    assert cache.add("a", 1, timeout=0) is True  # absent, so "added" - and gone
    assert cache.get("a") is None
    cache.set("r", 1)
    assert cache.replace("r", 2, timeout=0) is True
    assert cache.get("r") is None
    assert cache.set_many({"m1": 1, "m2": 2}, timeout=0) == []
    assert cache.get_many(["m1", "m2"]) == {}
    cache.set("t", 1)
    assert cache.touch("t", timeout=0) is True
    assert cache.get("t") is None


@pytest.mark.parametrize("timeout", [float("inf"), float("nan")])
def test_a_timeout_that_is_no_number_of_seconds_is_refused(cache, timeout):
    cache.set("k", "old")
    with pytest.raises(ValueError, match="finite number of seconds"):
        cache.set("k", "new", timeout=timeout)
    assert cache.get("k") == "old"


def test_timeouts_expire_items(make_cache):
    if make_cache.backend == "memory":
        # The in-process cache takes a clock: moved by hand, not waited for.
        # memcached's and the SDK stub's expiry run on their own clocks.
        from gaeservices.cache.memory import MemoryCache

        now = [time.monotonic()]
        cache = MemoryCache(default_timeout=1, clock=lambda: now[0])
        wait = lambda: now.__setitem__(0, now[0] + 2.2)  # noqa: E731
    else:
        cache = make_cache(default_timeout=1)
        wait = lambda: time.sleep(2.2)  # noqa: E731
    cache.clear()
    cache.set("default", 1)
    cache.set("short", 1, timeout=1)
    cache.set("fraction", 1, timeout=0.01)  # rounds up to a whole second
    cache.set("forever", 1, timeout=None)
    cache.set("long", 1, timeout=60)
    cache.set_many({"many": 1}, timeout=1)
    cache.set("touched", 1, timeout=1)
    cache.set("counter", 5, timeout=1)
    assert cache.incr("counter") == 6  # incr keeps the item's expiry
    assert cache.incr("new-counter", default=0, timeout=1) == 1
    assert cache.get("fraction") == 1
    assert cache.touch("touched", timeout=60) is True
    assert cache.touch("absent", timeout=60) is False
    wait()
    found = cache.get_many(
        ["default", "short", "fraction", "forever", "long", "many", "touched", "counter", "new-counter"]
    )
    assert found == {"forever": 1, "long": 1, "touched": 1}


@pytest.mark.parametrize("days", [29, 30, 31, 365, 3650])
def test_long_timeouts_cross_the_30_day_cut_over(cache, days):
    # memcached reads a relative time over 30 days as a Unix timestamp: sent
    # unconverted, 31 days would be a date in 1970 and the item would vanish.
    assert cache.set("k", "v", timeout=days * DAY) is True
    assert cache.get("k") == "v"
    assert cache.add("a", "v", timeout=days * DAY + 0.5) is True
    assert cache.get("a") == "v"
    assert cache.touch("k", timeout=days * DAY) is True
    assert cache.get("k") == "v"


def test_long_default_timeout(make_cache):
    cache = make_cache(default_timeout=40 * DAY)
    cache.set("k", 1)
    assert cache.get("k") == 1


# -- keys --------------------------------------------------------------------------------

ODD_KEYS = [
    "with space",
    " leading",
    "tab\there",
    "new\nline",
    "ctrl\x00\x01\x7f",
    "é漢字\U0001f600",
    "x" * 250,
    "y" * 251,
    "z" * 5000,
    "",
    "`backtick",
    "lone \udc80 surrogate",
]


@pytest.mark.parametrize("key", ODD_KEYS, ids=lambda k: repr(k)[:20])
def test_any_str_key_works(cache, key):
    assert cache.set(key, "v") is True
    assert cache.get(key) == "v"
    assert cache.get_many([key, "other"]) == {key: "v"}
    assert cache.add(key, "w") is False
    assert cache.replace(key, "w") is True
    value, token = cache.gets(key)
    assert value == "w"
    assert cache.cas(key, 1, token) is True
    assert cache.incr(key) == 2
    assert cache.touch(key, timeout=60) is True
    assert cache.delete(key) is True
    assert cache.get(key) is None
    assert cache.set_many({key: 1}) == []
    cache.delete_many([key])
    assert cache.get(key) is None


def test_keys_do_not_collide(cache):
    keys = ["a b", "a_b", "a\tb", "x" * 300, "x" * 299 + "y", "`a", "a", "é", "e"]
    for i, key in enumerate(keys):
        cache.set(key, i)
    assert cache.get_many(keys) == {key: i for i, key in enumerate(keys)}


def test_a_key_spelled_like_a_digest_is_its_own_key(cache):
    from gaeservices.cache.api import digest_key

    odd = "with space"
    lookalike = "`" + digest_key(odd)
    cache.set(odd, "odd")
    cache.set(lookalike, "lookalike")
    assert cache.get(odd) == "odd"
    assert cache.get(lookalike) == "lookalike"


def test_non_str_keys_are_refused(cache):
    for key in (b"bytes", 1, None):
        with pytest.raises(TypeError):
            cache.set(key, 1)
        with pytest.raises(TypeError):
            cache.get(key)


# -- prefixes ---------------------------------------------------------------------------


def test_prefixes_separate_caches(make_cache):
    one = make_cache(key_prefix="one:")
    two = make_cache(key_prefix="two:")
    one.set("k", 1)
    two.set("k", 2)
    assert (one.get("k"), two.get("k")) == (1, 2)
    view = one.prefixed("sessions:")
    view.set("k", 3)
    assert (one.get("k"), view.get("k")) == (1, 3)
    assert view.key_prefix == "one:sessions:"
    assert one.prefixed("sessions:").get("k") == 3
    long_key = "k" * 400
    view.set(long_key, "long")
    assert view.get(long_key) == "long"
    assert one.get(long_key) is None


def test_bad_prefixes_are_refused(make_cache):
    from gaeservices.exceptions import ConfigurationError

    with pytest.raises(ConfigurationError):
        make_cache(key_prefix="has`backtick")
    with pytest.raises(ConfigurationError):
        make_cache(key_prefix="x" * 240)
    with pytest.raises(ConfigurationError):
        make_cache().prefixed("with space")


# -- sizes ------------------------------------------------------------------------------------


def test_value_over_the_item_limit_is_an_error(make_cache):
    cache = make_cache(max_item_size=10_000)
    cache.set("k", "old")
    with pytest.raises(ValueTooLargeError, match="10000"):
        cache.set("k", b"x" * 10_001)
    assert cache.get("k") == "old"  # nothing was stored or dropped
    with pytest.raises(ValueTooLargeError):
        cache.add("new", "x" * 20_000)
    with pytest.raises(ValueTooLargeError):
        cache.set("k", list(range(5000)))  # pickled size counts
    with pytest.raises(ValueTooLargeError):
        cache.set_many({"a": 1, "b": b"x" * 10_001})
    assert cache.get_many(["a", "b"]) == {}
    assert cache.set("k", b"x" * 9_000) is True
    assert cache.get("k") == b"x" * 9_000


def test_default_item_limit_is_one_mib(cache):
    with pytest.raises(ValueTooLargeError):
        cache.set("k", b"x" * (1024 * 1024 + 1))
    assert cache.set("k", b"x" * 500_000) is True
    assert len(cache.get("k")) == 500_000


# -- clear ----------------------------------------------------------------------------------


def test_clear(make_cache):
    cache = make_cache()
    other = make_cache(key_prefix="other:")
    cache.set("a", 1)
    other.set("b", 2)
    cache.clear()
    assert cache.get("a") is None


@pytest.mark.parametrize(
    "url",
    [
        "memory://?key_prefix=has%20space",
        "memory://?key_prefix=back`tick",
        "memcache://127.0.0.1:11211?key_prefix=" + "x" * 210,
        "memory://?default_timeout=0",
        "memcache://127.0.0.1:11211?default_timeout=-5",
        "memory://?max_bytes=0",
        "memory://?max_item_size=0",
        "memcache://127.0.0.1:11211?timeout=soon",
        "appengine://?default_timeout=never-ever",
    ],
)
def test_an_option_error_fails_when_services_is_built(url):
    from gaeservices.config import Services
    from gaeservices.exceptions import ConfigurationError

    with pytest.raises(ConfigurationError, match="GAESERVICES_CACHE"):
        Services(cache=url, secret_key="k-signing-key-for-the-test-suite", environ={})


def test_an_app_engine_item_limit_beyond_the_sdk_fails_when_services_is_built():
    from gaeservices.config import Services
    from gaeservices.exceptions import ConfigurationError

    with pytest.raises(ConfigurationError, match="at most 999999 bytes"):
        Services(cache="appengine://?max_item_size=2m", secret_key="k-signing-key-for-the-test-suite", environ={})
