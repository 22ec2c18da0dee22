"""The local:// queue against real SQLite and PostgreSQL."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta, timezone
from wsgiref.simple_server import WSGIRequestHandler, make_server

import pytest
import tasks_fixtures as fx

from gaeservices import Services, defer
from gaeservices.exceptions import TaskAlreadyExistsError, UnsupportedTaskOptionError
from gaeservices.tasks import admin
from gaeservices.tasks.endpoint import DeferredApp
from gaeservices.tasks.local import LocalQueue
from gaeservices.tasks.worker import Dispatcher

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(TESTS_DIR)


@pytest.fixture(autouse=True)
def clean():
    fx.calls.clear()


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/store.sqlite3"
    return request.getfixturevalue("postgres_url")


def make_services(tmp_path, store_url, queue="local://"):
    return Services(secret_key="k-signing-key-for-the-test-suite", data_dir=str(tmp_path), environ={}, store=store_url, queue=queue)


@pytest.fixture
def svc(tmp_path, store_url):
    s = make_services(tmp_path, store_url)
    yield s
    s.close()


def drain(svc, **options):
    return Dispatcher(svc, drain=True, **options).run()


def info(svc, name):
    return svc.queue.get(name)


def test_the_queue_is_in_the_store_database(svc):
    assert isinstance(svc.queue, LocalQueue)
    assert svc.queue.engine is svc.store.engine


def test_a_task_runs_and_is_kept_as_done(svc):
    handle = defer(fx.record, 1, x=2, _services=svc)
    assert info(svc, handle.name).state == "pending"
    assert drain(svc) == 1
    assert fx.calls == [((1,), {"x": 2})]
    done = info(svc, handle.name)
    assert (done.state, done.attempts) == ("done", 1)


def test_countdown_is_honoured(svc):
    handle = defer(fx.record, "later", _countdown=1.0, _services=svc)
    eta = handle.eta.timestamp()
    ran = 0
    while not ran:
        ran = Dispatcher(svc).run_batch()
        finished = time.time()
        if finished < eta:  # a claim that ended before the ETA cannot have taken it
            assert (ran, fx.calls) == (0, [])
        time.sleep(0.1)
    assert ran == 1 and finished >= eta
    assert fx.calls == [(("later",), {})]


def test_eta_is_honoured_and_orders_tasks(svc):
    now = datetime.now(timezone.utc)
    defer(fx.record, "future", _eta=now + timedelta(hours=1), _services=svc)
    defer(fx.record, "second", _eta=now - timedelta(seconds=1), _services=svc)
    defer(fx.record, "first", _eta=now - timedelta(seconds=2), _services=svc)
    assert drain(svc) == 2
    assert [c[0][0] for c in fx.calls] == ["first", "second"]
    pending = svc.queue.tasks(state="pending")
    assert len(pending) == 1 and pending[0].eta == pytest.approx((now + timedelta(hours=1)).timestamp())


def test_names_deduplicate_while_queued_and_after_finishing(svc):
    defer(fx.record, 1, _name="nightly-2026-11-21", _services=svc)
    with pytest.raises(TaskAlreadyExistsError):
        defer(fx.record, 2, _name="nightly-2026-11-21", _services=svc)
    drain(svc)
    with pytest.raises(TaskAlreadyExistsError, match="tombstone"):
        defer(fx.record, 3, _name="nightly-2026-11-21", _services=svc)
    assert fx.calls == [((1,), {})]


def test_a_tombstone_expires(tmp_path, store_url):
    svc = make_services(tmp_path, store_url, "local://?tombstone=1")
    try:
        defer(fx.record, 1, _name="weekly", _services=svc)
        drain(svc)
        expires = info(svc, "weekly").eta  # a finished task's ETA: when its tombstone ends
        try:
            defer(fx.record, 2, _name="weekly", _services=svc)
            reused = True
        except TaskAlreadyExistsError:
            reused = False
        if time.time() < expires:  # a defer that ended before the tombstone did cannot reuse the name
            assert not reused
        while time.time() < expires:
            time.sleep(0.02)
        if not reused:
            defer(fx.record, 3, _name="weekly", _services=svc)  # the tombstone is gone
        drain(svc)
        assert [c[0][0] for c in fx.calls] == [1, 2 if reused else 3]
    finally:
        svc.close()


def test_retries_back_off_then_succeed(svc):
    retry = {"min_backoff_seconds": 0.2, "max_backoff_seconds": 10, "max_doublings": 5}
    handle = defer(fx.fail_until, 3, "r", _retry_options=retry, _services=svc)
    dispatcher = Dispatcher(svc)

    def run_batch():
        """(tasks run, the clock before, the clock after): the failure's time is between."""
        before = time.time()
        ran = dispatcher.run_batch()
        return ran, before, time.time()

    def until_due(eta):
        time.sleep(max(0.0, eta - time.time()))
        while time.time() < eta:  # never claimed before the ETA by our own clock
            time.sleep(0.01)

    ran, before, after = run_batch()
    assert ran == 1
    first = info(svc, handle.name)
    assert first.state == "pending" and "attempt 1 fails" in first.last_error
    assert before + 0.2 <= first.eta <= after + 0.2  # the backoff, from the failure
    ran, before, after = run_batch()
    if after < first.eta:  # a claim that ended before the ETA cannot have taken it
        assert ran == 0
    if not ran:
        until_due(first.eta)
        ran, before, after = run_batch()
    assert ran == 1 and after >= first.eta
    second = info(svc, handle.name)
    assert "attempt 2 fails" in second.last_error
    assert before + 0.4 <= second.eta <= after + 0.4  # doubled
    until_due(second.eta)
    assert dispatcher.run_batch() == 1
    assert fx.calls == [("r", 1), ("r", 2), ("r", 3)]
    done = info(svc, handle.name)
    assert (done.state, done.attempts, done.last_error) == ("done", 3, None)


def test_retries_exhausted_go_to_the_dead_letter_state(svc):
    retry = {"task_retry_limit": 2, "min_backoff_seconds": 0.05}
    handle = defer(fx.always_fails, "dead", _retry_options=retry, _services=svc)
    deadline = time.time() + 10
    while info(svc, handle.name).state == "pending" and time.time() < deadline:
        drain(svc)
        time.sleep(0.02)
    dead = info(svc, handle.name)
    assert (dead.state, dead.attempts) == ("failed", 3)  # first run + 2 retries
    assert "RuntimeError: boom dead" in dead.last_error
    assert len(fx.calls) == 3
    gaps = [b[1] - a[1] for a, b in zip(fx.calls, fx.calls[1:])]
    assert gaps[0] >= 0.05 and gaps[1] >= 0.1  # backoff respected
    drain(svc)
    assert len(fx.calls) == 3  # dead tasks do not run again


def test_permanent_failure_is_not_retried(svc):
    handle = defer(fx.fail_permanently, "no such user", _services=svc)
    drain(svc)
    dead = info(svc, handle.name)
    assert (dead.state, dead.attempts) == ("failed", 1)
    assert "PermanentTaskFailure: no such user" in dead.last_error


def test_singular_failure_is_retried(svc):
    handle = defer(fx.fail_once_singular, "s", _retry_options={"min_backoff_seconds": 0}, _services=svc)
    drain(svc)
    drain(svc)
    assert fx.calls == [("s", 1), ("s", 2)]
    assert info(svc, handle.name).state == "done"


def test_an_expired_lease_runs_the_task_again_and_the_old_lease_cannot_finish_it(svc):
    handle = defer(fx.record, "leased", _services=svc)
    queue = svc.queue
    (lost,) = queue.claim(10, lease=0.3)  # a worker that will die with this claim
    assert queue.claim(10) == []  # held; or, asked after the lease ran out, backing off
    asked = time.time()
    while time.time() <= lost.leased_until:
        time.sleep(0.02)
    # the claim that meets the lost lease counts that attempt as failed, and backs off
    taken = queue.claim(10)
    settled = info(svc, handle.name)
    assert "attempt 1: the lease ran out without an outcome" in settled.last_error
    if taken:  # only where the claim above met the lost lease first, its backoff over since
        assert asked > lost.leased_until, taken
        (again,) = taken
    else:
        assert (settled.state, settled.attempts) == ("pending", 1)
        while time.time() < settled.eta:
            time.sleep(0.02)
        (again,) = queue.claim(10)
    assert (lost.attempt, again.attempt) == (1, 2)
    from gaeservices.tasks.endpoint import TaskResult

    assert queue.finish([(lost, TaskResult(200, "success"))]) == 0  # stale lease: ignored
    assert info(svc, handle.name).state == "pending"
    assert queue.finish([(again, TaskResult(200, "success"))]) == 1
    assert info(svc, handle.name).state == "done"


def test_concurrent_dispatchers_run_each_task_once(svc):
    names = [defer(fx.record, i, _services=svc).name for i in range(300)]
    dispatchers = [Dispatcher(svc, threads=2, batch=7, drain=True) for _ in range(2)]
    threads = [threading.Thread(target=d.run) for d in dispatchers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(c[0][0] for c in fx.calls) == list(range(300))
    assert all(info(svc, n).attempts == 1 for n in names[:20])


def test_large_payloads_go_to_the_store_and_are_deleted_after_success(tmp_path, store_url):
    svc = make_services(tmp_path, store_url, "local://?max_payload=2048")
    big = "y" * 50_000
    eta = datetime.now(timezone.utc) - timedelta(seconds=1)
    handle = defer(fx.record, big, _name="big-one", _eta=eta, _services=svc)
    assert handle.name == "big-one"
    stored = _stored_payload_keys(svc)
    assert len(stored) == 1
    queue = svc.queue
    with queue.engine.connect() as conn:
        body = conn.execute(queue.table.select().where(queue.table.c.name == "big-one")).one().body
    assert len(body) < 2048
    assert info(svc, "big-one").eta == pytest.approx(eta.timestamp())
    drain(svc)
    assert fx.calls == [((big,), {})]
    assert _stored_payload_keys(svc) == []
    svc.close()


def test_large_payloads_are_deleted_after_permanent_failure(tmp_path, store_url):
    svc = make_services(tmp_path, store_url, "local://?max_payload=2048")
    defer(fx.fail_permanently, "z" * 50_000, _services=svc)
    assert len(_stored_payload_keys(svc)) == 1
    drain(svc)
    assert _stored_payload_keys(svc) == []
    svc.close()


def test_a_refused_duplicate_leaves_no_stored_payload(tmp_path, store_url):
    svc = make_services(tmp_path, store_url, "local://?max_payload=2048")
    defer(fx.record, "a" * 5000, _name="dup", _services=svc)
    with pytest.raises(TaskAlreadyExistsError):
        defer(fx.record, "b" * 5000, _name="dup", _services=svc)
    assert len(_stored_payload_keys(svc)) == 1
    svc.close()


def _stored_payload_keys(svc):
    table = svc.store.table
    with svc.store.engine.connect() as conn:
        return [row.id for row in conn.execute(table.select()) if "gaeservices.tasks.payload:" in row.id]


def test_transactional_follows_the_callers_transaction(svc):
    queue = svc.queue
    with queue.engine.begin() as conn:
        defer(fx.record, "committed", _name="tx-commit", _transactional=conn, _services=svc)
    conn = queue.engine.connect()
    transaction = conn.begin()
    defer(fx.record, "rolled back", _name="tx-rollback", _transactional=conn, _services=svc)
    transaction.rollback()
    conn.close()
    drain(svc)
    assert fx.calls == [(("committed",), {})]
    assert info(svc, "tx-rollback") is None
    with pytest.raises(UnsupportedTaskOptionError, match="Connection"):
        defer(fx.record, _transactional=True, _services=svc)


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, *args):
        pass


def test_push_delivery_over_http(svc):
    server = make_server("127.0.0.1", 0, DeferredApp(svc), handler_class=_QuietHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_port}"
        ok = defer(fx.record_context, "pushed", _queue="mail", _services=svc)
        permanent = defer(fx.fail_permanently, "over http", _services=svc)
        retried = defer(fx.always_fails, "http", _retry_options={"min_backoff_seconds": 60}, _services=svc)
        drain(svc, push_to=url)
    finally:
        server.shutdown()
        server.server_close()
    assert ("pushed", ok.name, "mail", 1, 0) in fx.calls
    assert info(svc, ok.name).state == "done"
    assert info(svc, permanent.name).state == "failed"
    assert "over http" in info(svc, permanent.name).last_error
    retry_info = info(svc, retried.name)
    assert retry_info.state == "pending" and retry_info.last_error.startswith("HTTP 500")


def test_push_to_an_unreachable_endpoint_is_retried(svc):
    from gaeservices.testing import free_port

    handle = defer(fx.record, _retry_options={"min_backoff_seconds": 60}, _services=svc)
    drain(svc, push_to=f"http://127.0.0.1:{free_port()}")
    assert info(svc, handle.name).state == "pending"
    assert "failed" in info(svc, handle.name).last_error


def test_admin_list_run_retry_delete(svc):
    held = defer(fx.record, "held", _countdown=3600, _name="held", _services=svc)
    defer(fx.always_fails, "x", _name="broken", _retry_options={"task_retry_limit": 0}, _services=svc)
    drain(svc)
    out = io.StringIO()
    assert admin.main(["list"], services=svc, out=out) == 0
    listing = out.getvalue()
    assert "held\tdefault\tscheduled" in listing and "broken\tdefault\tdead" in listing
    assert "RuntimeError: boom x" in listing
    out = io.StringIO()
    assert admin.main(["run", held.name], services=svc, out=out) == 0  # not due: run by hand
    assert "held\tsuccess" in out.getvalue()
    assert fx.calls[-1] == (("held",), {})
    assert admin.main(["retry", "broken"], services=svc, out=io.StringIO()) == 0
    assert info(svc, "broken").state == "pending"
    assert admin.main(["delete", "broken"], services=svc, out=io.StringIO()) == 0
    assert info(svc, "broken") is None
    assert admin.main(["delete", "broken"], services=svc, out=io.StringIO()) == 1


def test_admin_run_all_runs_held_tasks(svc):
    for i in range(3):
        defer(fx.record, i, _countdown=3600, _services=svc)
    out = io.StringIO()
    assert admin.main(["run", "--all"], services=svc, out=out) == 0
    assert sorted(c[0][0] for c in fx.calls) == [0, 1, 2]
    assert out.getvalue().count("success") == 3


# --- a worker process killed mid-task ----------------------------------------


def _worker(env, *args):
    return subprocess.Popen(
        [sys.executable, "-m", "gaeservices", "worker", "--poll", "0.1", *args],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def _wait_for(predicate, timeout, what):
    deadline = time.time() + timeout
    while not predicate():
        if time.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def _lines(path):
    return open(path).read().splitlines() if os.path.exists(path) else []


def test_a_worker_killed_mid_task_loses_nothing_and_completion_happens_once(tmp_path, store_url):
    svc = make_services(tmp_path, store_url)
    evidence, release = str(tmp_path / "evidence.txt"), str(tmp_path / "release")
    handle = defer(fx.start_then_block, evidence, release, _services=svc)
    env = dict(
        os.environ,
        GAESERVICES_STORE=store_url,
        GAESERVICES_QUEUE="local://?lease=1.5",
        GAESERVICES_SECRET_KEY="k-signing-key-for-the-test-suite",
        GAESERVICES_DATA_DIR=str(tmp_path),
        PYTHONPATH=os.pathsep.join([TESTS_DIR, ROOT]),
    )
    first = _worker(env)
    try:
        _wait_for(lambda: any(line.startswith("start") for line in _lines(evidence)), 30, "the task to start")
        first.send_signal(signal.SIGKILL)
        first.wait(10)
    finally:
        if first.poll() is None:
            first.kill()
    killed = info(svc, handle.name)
    assert (killed.state, killed.attempts) == ("pending", 1)  # the killed worker marked nothing
    open(release, "w").close()
    second = _worker(env)
    try:
        _wait_for(lambda: info(svc, handle.name).state == "done", 30, "the second worker to finish the task")
        second.send_signal(signal.SIGTERM)  # graceful stop
        assert second.wait(15) == 0
    finally:
        if second.poll() is None:
            second.kill()
    lines = _lines(evidence)
    assert [line.split()[0] for line in lines] == ["start", "start", "done"]
    assert lines[0].split()[1] == str(first.pid)
    assert lines[2] == f"done {second.pid}"
    assert info(svc, handle.name).attempts == 2
    svc.close()


def test_worker_drain_runs_what_is_due_and_exits(tmp_path, store_url):
    svc = make_services(tmp_path, store_url)
    evidence = str(tmp_path / "drain.txt")
    for i in range(5):
        defer(fx.append_line, evidence, str(i), _services=svc)
    defer(fx.append_line, evidence, "later", _countdown=3600, _services=svc)
    env = dict(
        os.environ,
        GAESERVICES_STORE=store_url,
        GAESERVICES_QUEUE="local://",
        GAESERVICES_SECRET_KEY="k-signing-key-for-the-test-suite",
        GAESERVICES_DATA_DIR=str(tmp_path),
        PYTHONPATH=os.pathsep.join([TESTS_DIR, ROOT]),
    )
    process = _worker(env, "--drain", "--threads", "2", "--queues", "default")
    assert process.wait(60) == 0
    assert sorted(_lines(evidence)) == ["0", "1", "2", "3", "4"]
    svc.close()


def test_outcomes_that_cannot_be_written_are_kept_and_written_later(svc, monkeypatch):
    """The database refuses a mid-batch write of outcomes: the tasks that ran are
    not run again, and the rest of the batch still runs."""
    import sqlalchemy

    from gaeservices.tasks import worker

    names = [defer(fx.record, i, _services=svc).name for i in range(3)]
    queue = svc.queue
    real_finish = queue.finish
    refused = []

    def finish_once_unreachable(results):
        if not refused:
            refused.append(len(results))
            raise sqlalchemy.exc.OperationalError("UPDATE gaeservices_tasks", {}, Exception("server closed the connection"))
        return real_finish(results)

    monkeypatch.setattr(queue, "finish", finish_once_unreachable)
    monkeypatch.setattr(worker, "FLUSH_SECONDS", 0.0)  # every outcome is written as it comes
    drain(svc, poll=0.05)
    assert refused == [1]
    assert sorted(c[0][0] for c in fx.calls) == [0, 1, 2]
    assert [(info(svc, n).state, info(svc, n).attempts) for n in names] == [("done", 1)] * 3


def test_processes_starting_at_once_on_a_fresh_database_all_get_the_queue(tmp_path, store_url):
    """Several workers start together against a database without the table: each
    creates it or finds it, none fails."""
    from gaeservices.config import BackendURL
    from gaeservices.store.engine import _create

    services = make_services(tmp_path, store_url)
    engines = [_create(BackendURL(store_url)) for _ in range(8)]  # one per process
    barrier = threading.Barrier(len(engines))
    errors = []

    def start(engine):
        barrier.wait()
        try:
            LocalQueue(engine, services)
        except Exception as exc:
            errors.append(exc)

    threads = [threading.Thread(target=start, args=(engine,)) for engine in engines]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    finally:
        for engine in engines:
            engine.dispose()
    assert errors == []
    defer(fx.record, "after", _services=services)
    assert drain(services) == 1
    services.close()


def test_retry_by_hand_leaves_a_running_task_to_its_worker(svc):
    handle = defer(fx.record, "running", _services=svc)
    queue = svc.queue
    (running,) = queue.claim(1)  # a worker holds it, within its lease
    assert queue.retry(handle.name) is False
    assert queue.claim(1) == []  # so no second worker runs it at the same time
    from gaeservices.tasks.endpoint import TaskResult

    assert queue.finish([(running, TaskResult(200, "success"))]) == 1


def test_a_failure_is_logged_as_retried_only_when_it_will_be(svc, caplog):
    import logging

    retry = {"task_retry_limit": 1, "min_backoff_seconds": 0.05}
    defer(fx.always_fails, "x", _name="twice", _retry_options=retry, _services=svc)
    defer(fx.fail_permanently, "no such user", _name="hopeless", _services=svc)
    defer(fx.fail_once_singular, "s", _name="once", _retry_options={"task_retry_limit": 0}, _services=svc)
    with caplog.at_level(logging.INFO, "gaeservices.tasks"):
        deadline = time.time() + 10
        while info(svc, "twice").state == "pending" and time.time() < deadline:
            drain(svc)
            time.sleep(0.02)
    assert [(info(svc, n).state, info(svc, n).attempts) for n in ("twice", "hopeless", "once")] == [
        ("failed", 2), ("failed", 1), ("failed", 1)]
    said = [record.getMessage() for record in caplog.records]
    retried = [line for line in said if "retried" in line]
    assert len(retried) == 1 and "'twice'" in retried[0] and "attempt 1" in retried[0], said
    given_up = [line for line in said if "given up" in line]
    assert len(given_up) == 2 and any("'twice'" in line for line in given_up), said
    assert any("'once'" in line for line in given_up), said


def test_a_fault_outside_the_task_is_a_failed_attempt_and_the_batch_is_recorded(svc, tmp_path, caplog):
    import logging

    defer(fx.record, "named", _name="reads-its-tombstone", _retry_options={"task_retry_limit": 0}, _services=svc)
    healthy = defer(fx.record, "healthy", _services=svc)
    buggy = Services(secret_key="k-signing-key-for-the-test-suite", data_dir=str(tmp_path), environ={},
                     store=fx.BuggyStore(svc.store))
    dispatcher = Dispatcher(svc, drain=True)
    dispatcher.app = DeferredApp(buggy, require_task_header=False)  # its endpoint meets the bug
    finished = threading.Event()

    def run():
        dispatcher.run()
        finished.set()

    with caplog.at_level(logging.ERROR, "gaeservices.tasks"):
        threading.Thread(target=run, daemon=True).start()
        assert finished.wait(120), "the worker kept the batch and never finished"
    failed = info(svc, "reads-its-tombstone")
    assert (failed.state, failed.attempts) == ("failed", 1)
    assert "TypeError: a bug on the store path" in failed.last_error
    assert "its delivery failed outside the task" in caplog.text
    assert info(svc, healthy.name).state == "done" and fx.calls == [(("healthy",), {})]
