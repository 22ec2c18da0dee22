"""``python -m bench django``: the Django adapter beside Django's own backends, same servers.

One memcached (started here, on a free loopback port), SQLite files in a temporary
folder, one process, one thread, pinned to one CPU with its memcached (see
``_common.pin_to_one_cpu``). Rounds alternate between the contenders; medians.

- cache: ``gaeservices.django.cache.CacheBackend`` on ``memcache://`` against
  Django's ``PyMemcacheCache``: ``get``, ``set`` and ``get_many`` of 20 keys,
  200-byte values, through ``django.core.cache.caches`` as an application calls them;
- sessions, a changing request: a ``SessionStore`` loaded by its key, one value
  changed, saved -- what Django's ``SessionMiddleware`` does around a view that
  changes the session -- on ``gaeservices.django.sessions`` (cached_db records:
  memcached + a SQLite store) against Django's ``cached_db`` engine (the same
  memcached + a SQLite database, as Django configures SQLite unless
  ``--django-journal wal`` gives it the store's settings). The key the save
  returns is the next request's cookie, as a browser would send it.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable

from ._common import bare_round_trip_us, pin_to_one_cpu, table

VALUE = b"v" * 200
MANY = 20
TARGETS = {"get": 1.5, "set": 1.5, f"get_many({MANY})": 1.5, "session change": 5.0}
SECRET = "bench-django-secret-key-long-enough-to-sign"


def _configure(address: str, folder: str, journal: str = "wal") -> None:
    import django
    from django.conf import settings

    if settings.configured:
        raise SystemExit("python -m bench django configures Django itself: run it on its own")
    settings.configure(
        SECRET_KEY=SECRET,
        INSTALLED_APPS=["django.contrib.sessions"],
        # Django's own default is a rollback journal with synchronous=FULL (two fsyncs per
        # commit); --django-journal wal gives it the store's WAL + synchronous=NORMAL.
        DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": os.path.join(folder, "django.sqlite3"),
                               "OPTIONS": ({"init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL"}
                                           if journal == "wal" else {})}},
        CACHES={
            "default": {"BACKEND": "django.core.cache.backends.memcached.PyMemcacheCache", "LOCATION": address},
            "gaeservices": {"BACKEND": "gaeservices.django.cache.CacheBackend", "LOCATION": f"memcache://{address}"},
        },
        USE_TZ=True,
    )
    django.setup()


def _cache_clients() -> dict[str, dict[str, Callable[[], object]]]:
    from django.core.cache import caches

    keys = [f"bench:key:{i}" for i in range(MANY)]
    clients = {}
    for name, alias in (("gaeservices", "gaeservices"), ("Django", "default")):
        cache = caches[alias]
        for key in keys:
            cache.set(key, VALUE, 300)
        assert cache.get(keys[0]) == VALUE and len(cache.get_many(keys)) == MANY
        clients[name] = {
            "get": lambda cache=cache: cache.get(keys[0]),
            "set": lambda cache=cache: cache.set(keys[0], VALUE, 300),
            f"get_many({MANY})": lambda cache=cache: cache.get_many(keys),
        }
    return clients


def _session_clients(address: str, folder: str) -> dict[str, Callable[[], object]]:
    from django.contrib.sessions.backends.cached_db import SessionStore as DjangoStore
    from django.core.management import call_command

    from gaeservices.config import Services, set_services
    from gaeservices.django.sessions import SessionStore as OurStore

    call_command("migrate", "sessions", verbosity=0)
    set_services(Services(secret_key=SECRET, data_dir=folder, cache=f"memcache://{address}", environ={},
                          store="sqlite:///" + os.path.join(folder, "store.sqlite3")))
    contenders = {}
    for name, store in (("gaeservices", OurStore), ("Django", DjangoStore)):
        first = store()
        first["n"] = 0
        first.save()
        cookie = [first.session_key]

        def change(store=store, cookie=cookie) -> None:
            session = store(session_key=cookie[0])
            session["n"] = session.get("n", 0) + 1
            session.save()
            cookie[0] = session.session_key  # what SessionMiddleware sends back

        contenders[name] = change
    return contenders


def _rate(fn: Callable[[], object], n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        fn()
    return n / (time.perf_counter() - start)


def _alternate(contenders: dict[str, Callable[[], object]], n: int, rounds: int) -> dict[str, float]:
    samples: dict[str, list[float]] = {name: [] for name in contenders}
    for fn in contenders.values():
        _rate(fn, max(n // 10, 20))  # warm up
    for _ in range(rounds):
        for name, fn in contenders.items():
            samples[name].append(_rate(fn, n))
    return {name: statistics.median(values) for name, values in samples.items()}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench django")
    parser.add_argument("--n", type=int, default=3000, help="cache calls per round (default 3000)")
    parser.add_argument("--session-n", type=int, default=300, help="session requests per round (default 300)")
    parser.add_argument("--rounds", type=int, default=7, help="rounds per contender (default 7)")
    parser.add_argument("--no-pin", action="store_true", help="leave the process and memcached on any CPU")
    parser.add_argument("--django-journal", choices=("default", "wal"), default="default",
                        help="Django's SQLite as Django configures it (default, as bench sessions does), "
                             "or WAL + synchronous=NORMAL like the store's")
    args = parser.parse_args(argv)

    from gaeservices.testing import MemcachedServer

    print(pin_to_one_cpu(not args.no_pin))
    import django

    with MemcachedServer() as server, tempfile.TemporaryDirectory() as folder:
        address = f"{server.host}:{server.port}"
        _configure(address, folder, args.django_journal)
        print(f"Django {django.__version__}; memcached on {address}; {args.rounds} rounds, medians; "
              f"Django's SQLite journal: {args.django_journal}")
        print(f"bare-socket get round trip: {bare_round_trip_us(server.host, server.port):.1f} µs (median)")
        rates: dict[str, dict[str, float]] = {}
        clients = _cache_clients()
        for op in ("get", "set", f"get_many({MANY})"):
            rates[op] = _alternate({name: calls[op] for name, calls in clients.items()}, args.n, args.rounds)
        rates["session change"] = _alternate(_session_clients(address, folder), args.session_n, args.rounds)

    rows, all_met = [], True
    for op, target in TARGETS.items():
        ours, theirs = rates[op]["gaeservices"], rates[op]["Django"]
        met = ours / theirs >= target
        all_met &= met
        rows.append([op, f"{ours:,.0f}", f"{theirs:,.0f}", f"{ours / theirs:.2f}x (>= {target}x)", "met" if met else "NOT MET"])
    print(table(rows, ["operation", "gaeservices/s", "Django/s", "ratio", "target"]))
    print("all targets met" if all_met else "some targets NOT met")
    return 0
