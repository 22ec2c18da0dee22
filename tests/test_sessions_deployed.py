"""Sessions under a real multi-process server: gunicorn, with real memcached and SQLite.

Each test starts gunicorn on a free loopback port, serving
``tests/sessions_gunicorn_app.py`` on the Services its environment describes,
and drives it over HTTP with many clients at once. What is counted: an
acknowledged update that the store does not hold, an ended session (logout, or
the old id at login) that any worker serves again, and 5xx answers.
"""

from __future__ import annotations

import http.client
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from conftest import unavailable
from gaeservices.config import Services
from gaeservices.testing import MemcachedServer, free_port, wait_for_port

HERE = Path(__file__).parent
KEY = "k-signing-key-for-the-test-suite"


class Gunicorn:
    def __init__(self, env: dict[str, str], *, workers: int, threads: int = 1) -> None:
        try:
            import gunicorn  # noqa: F401
        except ImportError:
            unavailable("gunicorn", "pip install -e '.[dev]'")
        self.port = free_port()
        args = [
            sys.executable, "-m", "gunicorn", "--chdir", str(HERE),
            "-b", f"127.0.0.1:{self.port}", "-w", str(workers), "--threads", str(threads),
            # A worker holding an idle connection (each_worker) does not heartbeat:
            # a long timeout, so that a loaded machine's slow boot costs no worker.
            "--graceful-timeout", "2", "--timeout", "120", "--log-level", "warning",
            "sessions_gunicorn_app:application",
        ]  # fmt: skip
        environ = {k: v for k, v in os.environ.items() if not k.startswith("GAESERVICES_")}
        self.process = subprocess.Popen(args, env={**environ, **env}, stderr=subprocess.PIPE)
        wait_for_port("127.0.0.1", self.port, timeout=30)
        self.workers = workers

    def each_worker(self) -> list[http.client.HTTPConnection]:
        """One open connection per worker, each already accepted by a different one.

        The kernel hands a new connection to whichever worker waits in accept,
        so one request after another may all reach the same worker. A sync
        worker (one thread) serves one connection at a time: with as many
        connections open as workers and none left waiting to be accepted, each
        worker holds one of them, and a request sent on each reaches every
        worker once, in an order the scheduler picks.
        """
        connections = [
            http.client.HTTPConnection("127.0.0.1", self.port, timeout=30) for _ in range(self.workers)
        ]
        try:
            for conn in connections:
                conn.connect()
            deadline = time.monotonic() + 60
            while _accept_queue(self.port):
                assert self.process.poll() is None, "gunicorn exited"
                assert time.monotonic() < deadline, "the workers did not accept a connection each"
                time.sleep(0.01)
        except BaseException:
            for conn in connections:
                conn.close()
            raise
        return connections

    def request(
        self, path: str, cookie: str | None = None, conn: http.client.HTTPConnection | None = None
    ) -> tuple[int, dict | None, str | None]:
        """(status, JSON body, the session cookie the response set: "" when expired).

        On ``conn`` when given (one of each_worker's), else on a new connection."""
        if conn is None:
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            conn.request("GET", path, headers={"Cookie": f"gaesession={cookie}"} if cookie else {})
            response = conn.getresponse()
            body = response.read()
            set_cookie = response.getheader("Set-Cookie")
        finally:
            conn.close()
        if set_cookie is not None:
            value = set_cookie.split(";", 1)[0].split("=", 1)[1]
            set_cookie = "" if "Max-Age=0" in set_cookie else value
        data = json.loads(body) if response.status == 200 else None
        return response.status, data, set_cookie

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process.stderr.close()


def _accept_queue(port: int) -> int:
    """How many connections to the loopback listener on ``port`` wait to be accepted
    (Linux: a listening socket's receive queue in /proc/net/tcp is its accept queue)."""
    try:
        lines = Path("/proc/net/tcp").read_text().splitlines()[1:]
    except FileNotFoundError:
        unavailable("/proc/net/tcp", "the per-worker requests need Linux")
    for line in lines:
        fields = line.split()
        if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:  # LISTEN
            return int(fields[4].split(":")[1], 16)
    raise AssertionError(f"nothing listens on port {port}")


def _stored_count(store, cookie: str) -> int | None:
    """What the store holds for the session of ``cookie``: its n, or None when gone."""
    raw = store.get("gaesession:" + cookie.split(".")[0])
    if raw is None:
        return None
    return json.loads(raw.split(b"\n", 1)[1]).get("n", 0)


class Tally:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.acknowledged = 0
        self.lost = 0  # acknowledged increments the store does not hold, at logouts
        self.errors_5xx = 0
        self.stale_reads = 0  # a count that did not follow the last acknowledged one
        self.ended_served = 0  # an ended session's cookie that still found its data
        self.live: list[tuple[str, int]] = []  # (cookie, acknowledged increments) of live sessions
        self.ended: list[str] = []  # cookies of sessions ended by logout or login
        self.logouts = self.logins = 0


def _client(server: Gunicorn, store, tally: Tally, stop: threading.Event, seed: int) -> None:
    rng = random.Random(seed)
    cookie, count = None, 0

    def call(path, with_cookie):
        status, data, set_cookie = server.request(path, with_cookie)
        if status >= 500:
            with tally.lock:
                tally.errors_5xx += 1
        return status, data, set_cookie

    def check_ended(old):
        status, data, _ = call("/", old)
        if status == 200 and (data["n"] is not None or data["user"] is not None):
            with tally.lock:
                tally.ended_served += 1

    while not stop.is_set():
        action = rng.random()
        if cookie is not None and action < 0.04:  # log out
            stored = _stored_count(store, cookie)  # the truth, before it ends
            with tally.lock:
                tally.lost += count - (stored or 0)
            status, _, set_cookie = call("/logout", cookie)
            if status == 200:
                with tally.lock:
                    tally.ended.append(cookie)
                    tally.logouts += 1
                check_ended(cookie)
                cookie, count = None, 0
            continue
        if cookie is not None and action < 0.08:  # log in: a new id for the same data
            status, data, set_cookie = call("/login", cookie)
            if status == 200:
                with tally.lock:
                    tally.ended.append(cookie)
                    tally.logins += 1
                old, cookie = cookie, set_cookie
                if data["n"] != count:
                    with tally.lock:
                        tally.stale_reads += 1
                check_ended(old)
            continue
        status, data, set_cookie = call("/count", cookie)
        if status != 200:
            continue
        if data["n"] != count + 1:  # the count it was told before this one is not what it read
            with tally.lock:
                tally.stale_reads += 1
        count += 1  # acknowledged: the store must hold at least this many
        with tally.lock:
            tally.acknowledged += 1
        if set_cookie:
            cookie = set_cookie
    if cookie is not None:
        with tally.lock:
            tally.live.append((cookie, count))


def _run_clients(server: Gunicorn, store, clients: int, during, tally: Tally | None = None) -> Tally:
    tally = Tally() if tally is None else tally
    stop = threading.Event()
    threads = [
        threading.Thread(target=_client, args=(server, store, tally, stop, i)) for i in range(clients)
    ]
    for thread in threads:
        thread.start()
    try:
        during()
    finally:
        stop.set()
        for thread in threads:
            thread.join(60)
    return tally


def _lost_updates(store, tally: Tally) -> int:
    lost = tally.lost
    for cookie, acknowledged in tally.live:
        stored = _stored_count(store, cookie)
        lost += acknowledged - (stored or 0)
    return lost


def _ended_sessions_served(server: Gunicorn, tally: Tally, rounds: int) -> int:
    """Replay every ended session's cookie, enough times to reach every worker."""
    served = 0
    for _ in range(rounds):
        for cookie in tally.ended:
            status, data, _ = server.request("/", cookie)
            assert status == 200
            if data["n"] is not None or data["user"] is not None:
                served += 1
    return served


@pytest.mark.slow
def test_a_memcached_stall_under_gunicorn_loses_nothing_and_revives_no_session(tmp_path):
    """gunicorn 4 workers x 2 threads, 16 clients each counting in its own session,
    logging in and out; memcached is stopped (SIGSTOP) for 3 s mid-run, then
    continued. Nothing acknowledged is lost, no ended session comes back, no 5xx."""
    try:
        memcached = MemcachedServer().start()
    except (FileNotFoundError, TimeoutError) as exc:
        unavailable("memcached", f"{exc}; `make test` installs it when run as root")
    store_url = f"sqlite:///{tmp_path / 'store.sqlite3'}"
    env = {
        "GAESERVICES_SECRET_KEY": KEY,
        "GAESERVICES_DATA_DIR": str(tmp_path / "data"),
        # Short timeouts and retry delay: workers fall into and out of their
        # retry windows at different moments during and after the stall.
        "GAESERVICES_CACHE": memcached.url + "?timeout=0.3&connect_timeout=0.3&retry_delay=1",
        "GAESERVICES_STORE": store_url,
    }
    server = Gunicorn(env, workers=4, threads=2)
    services = Services(secret_key=KEY, data_dir=str(tmp_path / "data"), store=store_url, environ={})
    try:
        tally = Tally()

        def until(condition, what):  # by progress, not by time: a loaded machine is slower
            deadline = time.monotonic() + 180
            while not condition():
                assert time.monotonic() < deadline, f"no {what} in 180 s: {vars(tally)}"
                time.sleep(0.05)

        def stall():
            until(lambda: tally.acknowledged >= 80 and tally.logouts and tally.logins, "traffic before the stall")
            memcached.pause()
            time.sleep(3)  # the fault: memcached stopped for three seconds
            memcached.resume()
            resumed, after = time.monotonic(), tally.acknowledged
            # traffic on while the workers' retry windows (1 s) close, one after another
            until(lambda: tally.acknowledged >= after + 120 and time.monotonic() > resumed + 2.5,
                  "traffic after the stall")

        _run_clients(server, services.store, clients=16, during=stall, tally=tally)
        print({k: v for k, v in vars(tally).items() if k not in ("lock", "live", "ended")})
        assert tally.acknowledged >= 200 and tally.logouts and tally.logins, vars(tally)
        counts = {
            "5xx": tally.errors_5xx,
            "acknowledged updates lost": _lost_updates(services.store, tally),
            "reads missing an acknowledged update": tally.stale_reads,
            "ended sessions served again": tally.ended_served + _ended_sessions_served(server, tally, 3),
        }
        assert counts == dict.fromkeys(counts, 0)
        for cookie, count in tally.live:  # and every live session reads back whole
            status, data, _ = server.request("/", cookie)
            assert (status, data["n"]) == (200, count)
    finally:
        server.stop()
        services.close()
        memcached.stop()


@pytest.mark.slow
def test_the_embedded_defaults_under_gunicorn_with_three_workers(tmp_path):
    """Nothing configured (memory:// cache, SQLite store, cached_db): every
    worker process has its own in-process cache, and none is trusted. Each round
    of requests reaches every worker once, so each worker's cache holds the
    session while the other workers change it, and then while it ends."""
    server = Gunicorn(
        {"GAESERVICES_SECRET_KEY": KEY, "GAESERVICES_DATA_DIR": str(tmp_path / "data")}, workers=3
    )

    def on_every_worker(path: str, cookie: str | None) -> list[tuple[int, dict | None, str | None]]:
        answers = []
        connections = server.each_worker()
        try:
            for conn in connections:
                answers.append(server.request(path, cookie, conn))
                cookie = answers[-1][2] or cookie
        finally:
            for conn in connections:
                conn.close()
        assert len({data["pid"] for _, data, _ in answers}) == 3, answers
        return answers

    try:
        cookie, pids, expected = None, set(), 0
        for _ in range(20):  # a counter, one request after another, on every worker in turn
            for status, data, set_cookie in on_every_worker("/count", cookie):
                expected += 1
                assert (status, data["n"]) == (200, expected)
                cookie = set_cookie or cookie
                pids.add(data["pid"])
        assert len(pids) == 3, pids  # the same three workers throughout
        old = cookie
        status, data, cookie = server.request("/login?alice", old)  # a new id: the old one ends
        assert (status, data["n"], data["user"]) == (200, 60, "alice")
        for status, data, _ in on_every_worker("/", cookie):  # every worker holds the new id
            assert (status, data["n"], data["user"]) == (200, 60, "alice")
        status, data, expired = server.request("/logout", cookie)
        assert (status, expired) == (200, "")
        seen = set()
        for _ in range(3):  # the logged-out and the replaced cookie, on every worker
            for ended in (cookie, old):
                for status, data, _ in on_every_worker("/", ended):
                    assert status == 200
                    assert (data["n"], data["user"]) == (None, None), data
                    seen.add(data["pid"])
        assert seen == pids
    finally:
        server.stop()
