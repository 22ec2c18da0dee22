"""Leases of the local queue: what a dead, slow or stopped worker leaves behind.

The reproductions of issue 10 part 1 (points 1 and 2) run real worker processes:
a task that SIGKILLs its own worker, and one-second tasks under a two-second
lease shared by two workers.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
import tasks_fixtures as fx
from test_tasks_local import ROOT, TESTS_DIR, _lines, _wait_for, drain, info, make_services

from gaeservices import defer
from gaeservices.tasks import RetryOptions
from gaeservices.tasks.result import TaskResult
from gaeservices.tasks.worker import Dispatcher


@pytest.fixture(autouse=True)
def clean():
    fx.calls.clear()


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/store.sqlite3"
    return request.getfixturevalue("postgres_url")


@pytest.fixture
def svc(tmp_path, store_url):
    s = make_services(tmp_path, store_url)
    yield s
    s.close()


def worker_env(tmp_path, store_url, queue="local://"):
    return dict(
        os.environ,
        GAESERVICES_STORE=store_url,
        GAESERVICES_QUEUE=queue,
        GAESERVICES_SECRET_KEY="k-signing-key-for-the-test-suite",
        GAESERVICES_DATA_DIR=str(tmp_path),
        PYTHONPATH=os.pathsep.join([TESTS_DIR, ROOT]),
    )


def gaeservices_command():
    """The installed console script, as a user runs it."""
    return [os.path.join(os.path.dirname(sys.executable), "gaeservices")]


# --- point 1: a task that kills its worker ---------------------------------------


def test_a_task_that_kills_its_worker_is_dead_lettered_and_starves_no_one(tmp_path, store_url):
    svc = make_services(tmp_path, store_url)
    evidence = str(tmp_path / "healthy.txt")
    defer(fx.kill_own_process, _name="poison", _retry_options=RetryOptions(task_retry_limit=1), _services=svc)
    for i in range(3):
        defer(fx.append_line, evidence, f"healthy-{i}", _name=f"healthy-{i}", _services=svc)
    env = worker_env(tmp_path, store_url)
    exits = []
    while len(exits) < 8 and info(svc, "poison").state == "pending":
        process = subprocess.run(
            gaeservices_command() + ["worker", "--lease", "1", "--drain", "--poll", "0.1", "--log-level", "WARNING"],
            env=env, cwd=str(tmp_path), capture_output=True, text=True, timeout=120,
        )
        exits.append(process.returncode)
        time.sleep(1.1 if process.returncode else 0.2)  # a killed worker's lease runs out; a backoff ends
    # the poison task ran twice (its first run and its one retry), killing its worker each time
    assert exits.count(-signal.SIGKILL) == 2, (exits, process.stderr)
    assert all(code in (0, -signal.SIGKILL) for code in exits), (exits, process.stderr)
    poison = info(svc, "poison")
    assert (poison.state, poison.attempts) == ("failed", 2)
    assert "attempt 2: the lease ran out without an outcome" in poison.last_error
    for i in range(3):
        healthy = info(svc, f"healthy-{i}")
        assert (healthy.state, healthy.attempts) == ("done", 1)  # never charged for the poison's runs
    assert sorted(_lines(evidence)) == ["healthy-0", "healthy-1", "healthy-2"]
    svc.close()


def test_only_tasks_that_started_are_counted(svc):
    names = [defer(fx.record, i, _services=svc).name for i in range(3)]
    queue = svc.queue
    claimed = queue.claim(10, lease=0.2)  # a worker that dies before it finishes its batch
    assert [t.attempt for t in claimed] == [1, 1, 1]
    assert [info(svc, n).attempts for n in names] == [1, 0, 0]  # the first one started at once
    time.sleep(0.25)
    # The first task's attempt was counted: it failed (lease lost) and backs off.
    # The others may not have started: they cost nothing, and run alone, counted when claimed.
    (second,) = queue.claim(10)
    assert (second.name, second.attempt) == (names[1], 1)
    assert info(svc, names[1]).attempts == 1
    assert queue.finish([(second, TaskResult(200, "success"))]) == 1
    deadline = time.time() + 10
    while info(svc, names[0]).state != "done" and time.time() < deadline:
        drain(svc)
        time.sleep(0.05)
    assert [(info(svc, n).state, info(svc, n).attempts) for n in names] == [("done", 2), ("done", 1), ("done", 1)]
    assert sorted(c[0][0] for c in fx.calls) == [0, 2]  # the second's success was written by hand above


def test_a_lost_lease_over_the_retry_limit_is_dead_lettered(svc):
    handle = defer(fx.record, "x", _retry_options={"task_retry_limit": 0}, _services=svc)
    queue = svc.queue
    (claimed,) = queue.claim(1, lease=0.1)
    time.sleep(0.15)
    assert queue.claim(10) == []
    dead = info(svc, handle.name)
    assert (dead.state, dead.attempts) == ("failed", 1)
    assert "lease ran out" in dead.last_error
    assert queue.finish([(claimed, TaskResult(200, "success"))]) == 0  # the lost lease cannot finish it
    assert fx.calls == []


# --- point 2: leases are checked, and renewed while tasks run ---------------------


def test_a_task_whose_lease_ran_out_is_not_started(svc):
    names = [defer(fx.record, i, _services=svc).name for i in range(3)]
    dispatcher = Dispatcher(svc, lease=0.2)
    tasks = svc.queue.claim(10, lease=0.2)
    time.sleep(0.25)  # e.g. the process was stopped (SIGSTOP) or the database away
    assert dispatcher._run(tasks) == []
    assert fx.calls == []
    # given back, uncounted, and due: the next claim runs them
    assert [(info(svc, n).state, info(svc, n).attempts, info(svc, n).leased_until) for n in names] == [
        ("pending", 0, None)
    ] * 3
    assert drain(svc) == 3


def test_the_heartbeat_keeps_a_slow_task_from_a_second_worker(tmp_path, store_url):
    svc = make_services(tmp_path, store_url)
    evidence = str(tmp_path / "slow.txt")
    # The task runs for two and a half leases; renewed every third of one, it stays
    # held (a two-second lease: a loaded machine may stall the heartbeat for a second).
    handle = defer(fx.sleep_and_record, evidence, "slow", 5.0, _services=svc)
    dispatcher = Dispatcher(svc, lease=2.0, poll=0.05).start()
    try:
        _wait_for(lambda: _lines(evidence), 10, "the slow task to start")
        deadline = time.time() + 4.0
        while time.time() < deadline:  # another worker keeps trying: it never gets it
            assert svc.queue.claim(10, lease=1.0) == []
            time.sleep(0.05)
        _wait_for(lambda: info(svc, handle.name).state == "done", 10, "the task to finish")
    finally:
        dispatcher.stop(10)
    assert len(_lines(evidence)) == 1
    assert info(svc, handle.name).attempts == 1
    svc.close()


def test_a_slow_batch_gives_its_unstarted_tail_back(svc, tmp_path):
    evidence = str(tmp_path / "ran.txt")
    for i in range(4):
        defer(fx.sleep_and_record, evidence, i, 0.3, _services=svc)
    dispatcher = Dispatcher(svc)
    tasks = svc.queue.claim(10)
    dispatcher._hold(tasks)
    dispatcher._run(tasks)
    assert len(_lines(evidence)) == 1  # one slow task run; its outcome written at once
    assert len(svc.queue.tasks(state="done")) == 1
    tail = svc.queue.tasks(state="pending")
    assert len(tail) == 3 and all(t.leased_until is None and t.attempts == 0 for t in tail)  # free for others


def test_two_workers_run_slow_tasks_once_each(tmp_path, store_url):
    """Issue 10, 1.2: six one-second tasks, two workers, ``--lease 2``: six runs."""
    svc = make_services(tmp_path, store_url)
    evidence = str(tmp_path / "runs.txt")
    env = worker_env(tmp_path, store_url)
    command = gaeservices_command() + ["worker", "--lease", "2", "--poll", "0.2", "--progress", "0"]
    logs = [tmp_path / f"worker-{i}.log" for i in range(2)]
    workers = []
    for log in logs:
        with open(log, "w") as stderr:
            workers.append(subprocess.Popen(command, env=env, cwd=str(tmp_path), stderr=stderr))
    try:
        # Both workers polling before the tasks exist: a worker slow to start on a
        # loaded machine would leave all six to the other.
        _wait_for(lambda: all("worker on" in log.read_text() for log in logs), 60, "both workers to start")
        names = [defer(fx.sleep_and_record, evidence, f"task-{i}", 1.0, _services=svc).name for i in range(6)]
        _wait_for(lambda: all(info(svc, n).state == "done" for n in names), 60, "all six tasks")
        time.sleep(2.5)  # a lease that ran out would have its task run again by now
    finally:
        for worker in workers:
            worker.send_signal(signal.SIGTERM)
        codes = [worker.wait(30) for worker in workers]
    runs = _lines(evidence)
    assert sorted(line.split()[0] for line in runs) == [f"task-{i}" for i in range(6)]
    assert codes == [0, 0]
    assert all(info(svc, n).attempts == 1 for n in names)
    pids = {line.split()[1] for line in runs}
    assert len(pids) == 2  # both workers took part: the slow batch's tail was shared
    svc.close()


def test_stopping_gives_back_the_unstarted_tasks_uncounted(svc):
    names = [defer(fx.record, i, _services=svc).name for i in range(3)]
    dispatcher = Dispatcher(svc)
    tasks = svc.queue.claim(10)
    dispatcher._stopping.set()
    assert dispatcher._run(tasks) == []
    assert [info(svc, n).attempts for n in names] == [0, 0, 0]
    assert Dispatcher(svc, drain=True).run() == 3


def test_a_table_made_before_lease_numbers_gets_its_columns(tmp_path, store_url):
    """A queue table created by an earlier version keeps its rows and gains the new columns."""
    import sqlalchemy as sa

    from gaeservices.config import BackendURL
    from gaeservices.store.engine import get_engine

    engine = get_engine(BackendURL(store_url))
    old = sa.Table(
        "gaeservices_tasks", sa.MetaData(),
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(500), nullable=False, unique=True),
        sa.Column("queue", sa.String(100), nullable=False),
        sa.Column("state", sa.SmallInteger(), nullable=False),
        sa.Column("eta", sa.Float(), nullable=False),
        sa.Column("created", sa.Float(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("leased_until", sa.Float(), nullable=True),
        sa.Column("body", sa.LargeBinary(), nullable=True),
        sa.Column("url", sa.String(2000), nullable=False),
        sa.Column("options", sa.Text(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("finished", sa.Float(), nullable=True),
    )
    old.create(engine)
    with engine.begin() as conn:
        conn.execute(old.insert().values(
            name="from-before", queue="default", state=0, eta=time.time() + 3600, created=time.time(),
            attempts=2, body=b"x", url="/_ah/queue/deferred",
        ))
    svc = make_services(tmp_path, store_url)
    try:
        assert svc.queue is not None  # built now, on the old table
        columns = {c["name"] for c in sa.inspect(engine).get_columns("gaeservices_tasks")}
        assert {"claims", "counted", "suspect"} <= columns
        kept = info(svc, "from-before")
        assert (kept.state, kept.attempts) == ("pending", 2)
        defer(fx.record, "new", _services=svc)
        assert drain(svc) == 1
        assert fx.calls == [(("new",), {})]
    finally:
        svc.close()


def test_a_claim_that_waited_for_the_database_hands_out_a_whole_lease(tmp_path):
    """SQLite: a claim waits for the write lock another writer holds; the lease it
    hands out starts when it gets the lock, not when it began waiting."""
    import sqlite3
    import threading

    svc = make_services(tmp_path, f"sqlite:///{tmp_path}/store.sqlite3")
    try:
        defer(fx.record, "x", _services=svc)
        holder = sqlite3.connect(str(tmp_path / "store.sqlite3"), isolation_level=None, check_same_thread=False)
        holder.execute("BEGIN IMMEDIATE")  # another writer (a producer, a claim) holds the lock
        released = []

        def release_the_lock():
            released.append(time.time())  # the claim cannot hold the lock before this
            holder.execute("COMMIT")

        release = threading.Timer(0.6, release_the_lock)
        release.start()
        (task,) = svc.queue.claim(10, lease=0.5)
        release.join()
        holder.close()
        assert task.leased_until >= released[0] + 0.5  # the lease starts once the claim holds the lock
    finally:
        svc.close()


def test_the_heartbeat_does_not_call_a_finished_task_lost(svc):
    names = [defer(fx.record, i, _services=svc).name for i in range(2)]
    queue = svc.queue
    first, second = queue.claim(10)
    assert queue.finish([(first, TaskResult(200, "success"))]) == 1
    # the heartbeat took its snapshot of held tasks just before the outcome was written
    assert queue.renew([first, second], 5.0) == []
    assert info(svc, names[1]).leased_until >= time.time() + 4
    taken = queue.claim(10, names=[names[1]], lease=1.0)  # nobody else may have it meanwhile
    assert taken == []
