"""``python -m bench cache``: the memcache backend beside raw pymemcache and Django.

One memcached (started here on a free loopback port), one process, one thread.
Three clients do the same work with 200-byte values:

- gaeservices: ``MemcacheCache`` (the ``memcache://`` backend);
- raw pymemcache: ``pymemcache.Client`` with replies awaited (``default_noreply=False``),
  no key prefix, bytes in and out - the floor any wrapper adds to;
- Django: ``django.core.cache.backends.memcached.PyMemcacheCache``.

Rounds alternate between the clients so that the machine's drift hits them all
alike; the median of the rounds is reported, then the ratios against the targets.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

from ._common import bare_round_trip_us, pin_to_one_cpu, table

VALUE = b"v" * 200
MANY = 20

# operation -> (minimum ratio to raw pymemcache, minimum ratio to Django)
TARGETS = {"get": (0.85, 1.5), "set": (0.85, 1.5), f"get_many({MANY})": (0.8, 1.5)}


def _clients(address: tuple[str, int]) -> dict[str, dict[str, Callable[[], object]]]:
    import django
    from django.conf import settings
    from pymemcache.client.base import Client

    from gaeservices.cache.memcache import MemcacheCache

    host, port = address
    if not settings.configured:
        settings.configure(
            CACHES={
                "default": {
                    "BACKEND": "django.core.cache.backends.memcached.PyMemcacheCache",
                    "LOCATION": f"{host}:{port}",
                    "TIMEOUT": 300,
                }
            },
            USE_TZ=True,
        )
        django.setup()
    from django.core.cache import caches

    ours = MemcacheCache([address])
    raw = Client(address, default_noreply=False)
    dj = caches["default"]

    keys = [f"bench:key:{i}" for i in range(MANY)]
    for client in (ours, dj):
        for key in keys:
            client.set(key, VALUE, timeout=300)
    for key in keys:
        raw.set("raw:" + key, VALUE, expire=300)
    raw_keys = ["raw:" + key for key in keys]
    one, raw_one = keys[0], raw_keys[0]

    def check(value: object) -> None:
        assert value == VALUE, value

    check(ours.get(one))
    check(raw.get(raw_one))
    check(dj.get(one))
    assert len(ours.get_many(keys)) == len(raw.get_many(raw_keys)) == len(dj.get_many(keys)) == MANY

    return {
        "gaeservices": {
            "get": lambda: ours.get(one),
            "set": lambda: ours.set(one, VALUE, timeout=300),
            f"get_many({MANY})": lambda: ours.get_many(keys),
        },
        "raw pymemcache": {
            "get": lambda: raw.get(raw_one),
            "set": lambda: raw.set(raw_one, VALUE, expire=300),
            f"get_many({MANY})": lambda: raw.get_many(raw_keys),
        },
        "Django PyMemcacheCache": {
            "get": lambda: dj.get(one),
            "set": lambda: dj.set(one, VALUE, timeout=300),
            f"get_many({MANY})": lambda: dj.get_many(keys),
        },
    }


def _time(fn: Callable[[], object], n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        fn()
    return n / (time.perf_counter() - start)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench cache")
    parser.add_argument("--n", type=int, default=3000, help="calls per round (default 3000)")
    parser.add_argument("--rounds", type=int, default=7, help="rounds per client (default 7)")
    parser.add_argument("--no-pin", action="store_true", help="leave the process and memcached on any CPU")
    args = parser.parse_args(argv)

    from gaeservices.testing import MemcachedServer

    print(pin_to_one_cpu(not args.no_pin))
    with MemcachedServer() as server:
        clients = _clients((server.host, server.port))
        print(f"memcached on {server.address}; {args.rounds} rounds of {args.n} calls; 200-byte values")
        print(f"bare-socket get round trip: {bare_round_trip_us(server.host, server.port):.1f} µs (median)")
        rates: dict[str, dict[str, float]] = {}
        for op in TARGETS:
            samples: dict[str, list[float]] = {name: [] for name in clients}
            for name in clients:  # warm up connections and caches
                _time(clients[name][op], 200)
            for _ in range(args.rounds):
                for name in clients:
                    samples[name].append(_time(clients[name][op], args.n))
            rates[op] = {name: statistics.median(s) for name, s in samples.items()}

    rows = []
    all_met = True
    for op, (raw_target, django_target) in TARGETS.items():
        r = rates[op]
        vs_raw = r["gaeservices"] / r["raw pymemcache"]
        vs_django = r["gaeservices"] / r["Django PyMemcacheCache"]
        met = vs_raw >= raw_target and vs_django >= django_target
        all_met &= met
        rows.append(
            [
                op,
                f"{r['gaeservices']:,.0f}",
                f"{r['raw pymemcache']:,.0f}",
                f"{r['Django PyMemcacheCache']:,.0f}",
                f"{vs_raw:.2f}x (>= {raw_target})",
                f"{vs_django:.2f}x (>= {django_target})",
                "met" if met else "NOT MET",
            ]
        )
    print(
        table(
            rows,
            ["operation", "gaeservices/s", "raw pymemcache/s", "Django/s", "vs raw", "vs Django", "targets"],
        )
    )
    print("all targets met" if all_met else "some targets NOT met")
    return 0
