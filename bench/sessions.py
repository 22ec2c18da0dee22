"""``python -m bench sessions``: SessionMiddleware against Beaker and Django, side by side.

One small WSGI app (a counter in the session), called in-process with the cookie
round-tripped, against one real memcached started here: this project's
SessionMiddleware (``cache`` and ``cached_db`` modes, SQLite store), Beaker's
SessionMiddleware (``ext:memcached`` through python-memcached) and, for
``cached_db``, Django's cached_db SessionStore load+save on the same memcached and
SQLite. Three kinds of request: one that changes the session, one that only reads
it, one that never touches it. memcached calls per request come from the
server's own counters. The process and its memcached run pinned to one CPU
unless ``--no-pin`` is given (bench/README.md says why).
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from typing import Any

from bench._common import bare_round_trip_us, pin_to_one_cpu, table
from gaeservices.config import Services
from gaeservices.sessions import SessionMiddleware
from gaeservices.testing import MemcachedServer

TARGETS = {
    "change_cache_vs_beaker": 1.8,
    "change_cached_db_vs_django": 2.0,
    "read_vs_beaker": 3.5,
    "untouched_added_us": 2.0,
}


def counter_app(key: str) -> Callable[..., Any]:
    """The same app for every middleware: environ[key] is the session mapping."""

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        kind = environ["bench.kind"]
        if kind == "change":
            session = environ[key]
            session["n"] = session.get("n", 0) + 1
            if key == "beaker.session":
                session.save()
        elif kind == "read":
            environ[key].get("n")
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]

    return app


class Browser:
    """Calls a WSGI app in-process, sending back the cookie it was given."""

    def __init__(self, app: Callable[..., Any], cookie_name: str) -> None:
        self.app = app
        self.cookie_name = cookie_name
        self.cookie: str | None = None
        self.base = {
            "REQUEST_METHOD": "GET", "PATH_INFO": "/", "SCRIPT_NAME": "", "QUERY_STRING": "",
            "SERVER_NAME": "localhost", "SERVER_PORT": "80", "SERVER_PROTOCOL": "HTTP/1.1",
            "wsgi.url_scheme": "http", "wsgi.multithread": False, "wsgi.multiprocess": False,
            "wsgi.run_once": False, "wsgi.version": (1, 0),
        }  # fmt: skip
        self.headers: list[tuple[str, str]] = []

    def _start_response(self, status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> None:
        self.headers = headers

    def request(self, kind: str) -> None:
        environ = dict(self.base)
        environ["bench.kind"] = kind
        if self.cookie:
            environ["HTTP_COOKIE"] = self.cookie
        result = self.app(environ, self._start_response)
        for _ in result:
            pass
        close = getattr(result, "close", None)
        if close is not None:
            close()
        for name, value in self.headers:
            if name.lower() == "set-cookie":  # Beaker writes "Set-cookie: beaker…"
                value = value.strip()
                if value.startswith(self.cookie_name + "="):
                    self.cookie = value.split(";", 1)[0]


def measure(fn: Callable[[], None], n: int, repeats: int) -> float:
    """Median requests per second over ``repeats`` runs of ``n`` calls."""
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(n):
            fn()
        rates.append(n / (time.perf_counter() - start))
    return statistics.median(rates)


def calls(server: MemcachedServer) -> tuple[int, int]:
    stats = server.stats()
    gets = int(stats["cmd_get"])
    sets = int(stats["cmd_set"]) + int(stats["cmd_touch"]) + int(stats["delete_hits"]) + int(stats["delete_misses"])
    return gets, sets


def per_request_calls(server: MemcachedServer, browser: Browser, kind: str, n: int) -> tuple[float, float]:
    """memcached (gets, writes) per request of ``kind``, from the server's counters."""
    before = calls(server)
    for _ in range(n):
        browser.request(kind)
    after = calls(server)
    return (after[0] - before[0]) / n, (after[1] - before[1]) / n


def interleaved(browsers: dict[str, Browser], kind: str, n: int, rounds: int) -> dict[str, float]:
    """Median requests/s of each browser over ``rounds`` blocks of ``n // rounds``
    requests, the contenders taking turns block by block, so that a change in the
    machine's load hits every contender alike rather than whichever ran then."""
    block = max(n // rounds, 1)
    rates: dict[str, list[float]] = {label: [] for label in browsers}
    gc.collect()
    for _ in range(rounds):
        for label, browser in browsers.items():
            request = browser.request
            start = time.perf_counter()
            for _ in range(block):
                request(kind)
            rates[label].append(block / (time.perf_counter() - start))
    return {label: statistics.median(values) for label, values in rates.items()}


def django_store(server: MemcachedServer, folder: str) -> Callable[[], None]:
    import django
    from django.conf import settings

    if not settings.configured:
        settings.configure(
            SECRET_KEY="bench-signing-key-for-the-test-suite",
            INSTALLED_APPS=["django.contrib.sessions"],
            DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3",
                                   "NAME": os.path.join(folder, "django.sqlite3")}},
            CACHES={"default": {"BACKEND": "django.core.cache.backends.memcached.PyMemcacheCache",
                                "LOCATION": server.address}},
            SESSION_ENGINE="django.contrib.sessions.backends.cached_db",
            USE_TZ=True,
        )
        django.setup()
    from django.core.management import call_command
    from django.contrib.sessions.backends.cached_db import SessionStore

    call_command("migrate", "sessions", verbosity=0)
    first = SessionStore()
    first["n"] = 0
    first.save()
    key = first.session_key

    def load_save() -> None:
        session = SessionStore(session_key=key)
        session["n"] = session.get("n", 0) + 1
        session.save()

    return load_save


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench sessions")
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--django-ops", type=int, default=2_000, help="Django cached_db is slow: fewer ops")
    parser.add_argument("--repeats", type=int, default=3, help="Django runs; blocks are max(repeats, 10)")
    parser.add_argument("--no-pin", action="store_true", help="leave the process and memcached on any CPU")
    args = parser.parse_args(argv)
    print(pin_to_one_cpu(not args.no_pin))
    n, repeats = args.requests, args.repeats

    from beaker.middleware import SessionMiddleware as BeakerMiddleware

    folder = tempfile.mkdtemp(prefix="bench-sessions-")
    with MemcachedServer() as server:
        round_trip = bare_round_trip_us(server.host, server.port)
        services = Services(secret_key="bench-signing-key-for-the-test-suite", data_dir=folder, cache=server.url,
                            store=f"sqlite:///{folder}/store.sqlite3", environ={})
        bare_app = counter_app("gaeservices.session")
        ours = {
            mode: SessionMiddleware(bare_app, mode=mode, services=services, refresh_interval=3600)
            for mode in ("cache", "cached_db")
        }
        beaker = BeakerMiddleware(counter_app("beaker.session"), {
            "session.type": "ext:memcached", "session.url": server.address,
            "session.memcache_module": "memcache", "session.key": "beaker.session.id",
            "session.timeout": 1209600,
        })

        results: dict[tuple[str, str], tuple[float, float, float]] = {}
        rounds = max(repeats, 10)
        for kind in ("change", "read"):
            browsers = {}
            for label, app, cookie in (
                ("gaeservices cache", ours["cache"], "gaesession"),
                ("gaeservices cached_db", ours["cached_db"], "gaesession"),
                ("Beaker ext:memcached", beaker, "beaker.session.id"),
            ):
                browser = browsers[label] = Browser(app, cookie)
                browser.request("change")  # a session exists, its cookie is in the browser
                browser.request(kind)
            counted = {label: per_request_calls(server, b, kind, 1_000) for label, b in browsers.items()}
            for label, rate in interleaved(browsers, kind, n, rounds).items():
                results[(label, kind)] = (rate, *counted[label])
        # Django: SessionStore load+save, no WSGI, as in its own cached_db backend.
        before = calls(server)
        django_rate = measure(django_store(server, folder), args.django_ops, repeats)
        after = calls(server)
        total = args.django_ops * repeats
        results[("Django cached_db (load+save)", "change")] = (
            django_rate, (after[0] - before[0]) / total, (after[1] - before[1]) / total)

        # Untouched: the middleware's added time over the bare app, many requests.
        untouched_n = max(n * 10, 50_000)
        bare = Browser(bare_app, "gaesession")
        wrapped = Browser(ours["cached_db"], "gaesession")
        wrapped.request("change")
        before = calls(server)
        bare_rates, wrapped_rates = [], []
        for _ in range(max(repeats, 5)):  # interleaved, so drift hits both alike
            bare_rates.append(measure(lambda: bare.request("untouched"), untouched_n, 1))
            wrapped_rates.append(measure(lambda: wrapped.request("untouched"), untouched_n, 1))
        after = calls(server)
        bare_rate, wrapped_rate = statistics.median(bare_rates), statistics.median(wrapped_rates)
        added_us = (1 / wrapped_rate - 1 / bare_rate) * 1e6
        untouched_calls = sum(after) - sum(before)
        services.close()

    rows = []
    for (label, kind), (rate, gets, sets) in results.items():
        rows.append([kind, label, f"{rate:,.0f}", f"{1e6 / rate:,.1f}", f"{gets:.2f}", f"{sets:.2f}"])
    rows.append(["untouched", "no middleware", f"{bare_rate:,.0f}", f"{1e6 / bare_rate:.2f}", "-", "-"])
    rows.append(["untouched", "gaeservices cached_db", f"{wrapped_rate:,.0f}", f"{1e6 / wrapped_rate:.2f}",
                 f"{untouched_calls / (untouched_n * len(wrapped_rates)):.2f}", "-"])
    print(f"{n:,} requests per setup in {rounds} interleaved blocks, medians (Django: {args.django_ops:,} ops x {repeats})")
    print(f"bare-socket memcached get round trip: {round_trip:.1f} µs (median)")
    print(table(rows, ["request", "setup", "req/s", "µs/req", "mc gets/req", "mc writes/req"]))
    print()

    def ratio(a: tuple[str, str], b: tuple[str, str]) -> float:
        return results[a][0] / results[b][0]

    checks = [
        ("change: gaeservices cache vs Beaker", ratio(("gaeservices cache", "change"), ("Beaker ext:memcached", "change")),
         f">= {TARGETS['change_cache_vs_beaker']}x", None),
        ("change: gaeservices cached_db vs Django cached_db",
         ratio(("gaeservices cached_db", "change"), ("Django cached_db (load+save)", "change")),
         f">= {TARGETS['change_cached_db_vs_django']}x", None),
        ("read: gaeservices cache vs Beaker", ratio(("gaeservices cache", "read"), ("Beaker ext:memcached", "read")),
         f">= {TARGETS['read_vs_beaker']}x", None),
        ("read: gaeservices cached_db vs Beaker",
         ratio(("gaeservices cached_db", "read"), ("Beaker ext:memcached", "read")),
         f">= {TARGETS['read_vs_beaker']}x", None),
    ]
    failed = False
    out = []
    for name, value, target, _ in checks:
        met = value >= float(target.split()[1].rstrip("x"))
        failed |= not met
        out.append([name, f"{value:.2f}x", target, "met" if met else "NOT MET"])
    for mode in ("gaeservices cache", "gaeservices cached_db"):
        _, gets, sets = results[(mode, "read")]
        met = abs(gets - 1) < 0.01 and sets < 0.01
        failed |= not met
        out.append([f"read: {mode} memcached calls/req", f"{gets:.2f} get, {sets:.2f} set",
                    "1 get, 0 set", "met" if met else "NOT MET"])
    met = untouched_calls == 0
    failed |= not met
    out.append(["untouched: memcached calls", str(untouched_calls), "0", "met" if met else "NOT MET"])
    met = added_us < TARGETS["untouched_added_us"]
    failed |= not met
    out.append(["untouched: added time per request", f"{added_us:.2f} µs",
                f"< {TARGETS['untouched_added_us']} µs", "met" if met else "NOT MET"])
    print(table(out, ["ratio", "measured", "target", ""]))
    return 1 if failed else 0
