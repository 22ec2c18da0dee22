"""celery://: real `celery worker` processes on the machine's RabbitMQ and Redis.

One worker per broker serves the module; the tests that kill a whole worker start
their own. Task functions live in celery_fixtures, which the worker imports from
its current directory (this one: no PYTHONPATH is given to it).
"""

from __future__ import annotations

import base64
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from datetime import datetime, timedelta, timezone

import celery_fixtures as cf
import pytest
from celery_fixtures import SECRET_KEY, Broker, CeleryWorker, lines, wait_for, worker_env

from gaeservices import Services, defer
from gaeservices.exceptions import (
    ConfigurationError,
    QueueUnavailableError,
    TaskAlreadyExistsError,
    UnsupportedTaskOptionError,
)
from gaeservices.tasks import RetryOptions, payload
from gaeservices.tasks.api import Task
from gaeservices.tasks.celery import NAME_PREFIX, TASK_NAME, CeleryQueue, worker_app

BROKERS = ["amqp", "redis"]


class Setup:
    def __init__(self, folder, broker: Broker, services: Services, worker: CeleryWorker, store_url: str):
        self.folder = folder
        self.broker = broker
        self.services = services
        self.worker = worker
        self.store_url = store_url

    @property
    def queue(self) -> CeleryQueue:
        return self.services.queue

    def state(self, name: str) -> bytes | None:
        return self.services.store.get(NAME_PREFIX + name)

    def send_raw(self, args: list, task_id: str, queue: str = "default", **options) -> None:
        """Publish a message as anyone with access to the broker could."""
        self.queue.app.send_task(TASK_NAME, args=args, task_id=task_id, queue=self.broker.prefix + queue, **options)


@pytest.fixture(scope="module", params=BROKERS)
def broker(request):
    made = Broker(request.param)
    yield made
    made.cleanup()


@pytest.fixture(scope="module")
def env(broker, tmp_path_factory):
    folder = tmp_path_factory.mktemp(f"celery-{broker.kind}")
    store_url = f"sqlite:///{folder}/store.sqlite3"
    # hold=0.5: a task due later than that is held, then published again, by the worker
    url = broker.url(hold=0.5)
    broker.queues |= {"default", "mail", "held"}
    variables = worker_env(
        url, store_url, str(folder / "worker-data"),
        GAESERVICES_BOOTSTRAP="celery_fixtures:bootstrap",
        CELERY_TEST_BOOTSTRAP_LOG=str(folder / "bootstrap.log"),
    )
    worker = CeleryWorker(variables, [broker.prefix + "default", broker.prefix + "mail"], str(folder / "worker.log"))
    services = Services(secret_key=SECRET_KEY, data_dir=str(folder / "data"), store=store_url, queue=url, environ={})
    worker.start()
    yield Setup(folder, broker, services, worker, store_url)
    worker.stop()
    services.close()


def unique(tag: str) -> str:
    return f"{tag}-{uuid.uuid4().hex[:12]}"


def fields(line: str) -> dict:
    text, name, queue, count, pid, when = line.split()
    return {"text": text, "name": name, "queue": queue, "count": int(count), "pid": int(pid), "time": float(when)}


# --- running ---------------------------------------------------------------------------


def test_a_deferred_call_runs_in_a_worker_process_with_its_context(env, tmp_path):
    out = str(tmp_path / "out")
    first = defer(cf.record, out, "hello", _services=env.services)
    second = defer(cf.record, out, "mail", _queue="mail", _services=env.services)
    ran = {f["text"]: f for f in map(fields, wait_for(lambda: len(lines(out)) == 2 and lines(out)))}
    assert ran["hello"]["name"] == first.name and ran["hello"]["queue"] == "default"
    assert ran["mail"]["name"] == second.name and ran["mail"]["queue"] == "mail"
    assert ran["hello"]["count"] == ran["mail"]["count"] == 1
    assert ran["hello"]["pid"] != os.getpid()
    # no pickle through Celery: the message is JSON, and the worker accepts nothing else
    assert env.queue.app.conf.task_serializer == "json" and env.queue.app.conf.accept_content == ["json"]


def test_bootstrap_runs_once_in_each_worker_process(env, tmp_path):
    out = str(tmp_path / "out")
    for i in range(6):
        defer(cf.record, out, f"t{i}", _services=env.services)
    ran = [fields(line) for line in wait_for(lambda: len(lines(out)) == 6 and lines(out))]
    booted = [int(pid) for pid in lines(str(env.folder / "bootstrap.log"))]
    assert len(booted) == len(set(booted)), "a process ran the bootstrap twice"
    assert {f["pid"] for f in ran} <= set(booted)


def test_countdown_and_eta_map_onto_celery(env, tmp_path):
    out = str(tmp_path / "out")
    later = defer(cf.record, out, "countdown", _countdown=1.6, _services=env.services)
    sooner = defer(cf.record, out, "eta", _eta=datetime.now(timezone.utc) + timedelta(seconds=0.8), _services=env.services)
    now = defer(cf.record, out, "now", _services=env.services)
    ran = [fields(line) for line in wait_for(lambda: len(lines(out)) == 3 and lines(out))]
    assert [f["text"] for f in ran] == ["now", "eta", "countdown"]
    by_text = {f["text"]: f for f in ran}
    assert by_text["countdown"]["time"] >= later.eta.timestamp() - 0.005
    assert by_text["eta"]["time"] >= sooner.eta.timestamp() - 0.005
    assert by_text["now"]["name"] == now.name
    # held at most `hold` (0.5 s) at a time: published again on the way
    assert env.worker.log().count(f"[{later.name}] received") >= 3


def test_failures_are_retried_with_backoff(env, tmp_path):
    out = str(tmp_path / "out")
    name = unique("backoff")
    retry = RetryOptions(min_backoff_seconds=0.3, max_backoff_seconds=0.5, max_doublings=4)
    defer(cf.fail_until, out, 4, _name=name, _retry_options=retry, _services=env.services)
    wait_for(lambda: env.state(name) == b"done", what="the task to succeed")
    runs = [line.split() for line in lines(out)]
    assert [int(count) for count, _ in runs] == [1, 2, 3, 4]
    times = [float(when) for _, when in runs]
    gaps = [b - a for a, b in zip(times, times[1:])]
    # 0.3, then doubled to 0.6 but capped at 0.5, then capped again
    for gap, wait in zip(gaps, [0.3, 0.5, 0.5]):
        assert gap >= wait - 0.01, gaps


def test_the_retry_limit_gives_a_task_up(env, tmp_path):
    out = str(tmp_path / "out")
    name = unique("dead")
    defer(cf.always_fails, out, _name=name, _retry_options={"task_retry_limit": 2, "min_backoff_seconds": 0.05},
          _services=env.services)
    wait_for(lambda: env.state(name) == b"failed", what="the task to be given up")
    env.worker.wait_log(f"task {name!r} failed 3 time(s) and is given up")
    assert len(lines(out)) == 3  # the first run and two retries, nothing after


def test_the_age_limit_gives_a_task_up(env, tmp_path):
    out = str(tmp_path / "out")
    name = unique("old")
    start = time.time()
    defer(cf.always_fails, out, _name=name, _retry_options={"task_age_limit": 0.6, "min_backoff_seconds": 0.2},
          _services=env.services)
    wait_for(lambda: env.state(name) == b"failed", what="the task to be given up")
    runs = [float(line.split()[1]) for line in lines(out)]
    assert len(runs) >= 2
    assert runs[-1] - start >= 0.6 and runs[-2] - start < 0.6  # given up after its first run past the limit


def test_a_permanent_failure_is_not_retried(env, tmp_path):
    out = str(tmp_path / "out")
    name = unique("permanent")
    defer(cf.fail_permanently, out, _name=name, _retry_options={"min_backoff_seconds": 0.01}, _services=env.services)
    wait_for(lambda: env.state(name) == b"failed", what="the task to fail")
    env.worker.wait_log(f"task {name!r} failed permanently")
    assert lines(out) == ["run"]


# --- names -----------------------------------------------------------------------------


def test_names_deduplicate_through_the_store(env, tmp_path):
    out = str(tmp_path / "out")
    name = unique("once")
    defer(cf.record, out, "first", _name=name, _countdown=0.3, _services=env.services)
    with pytest.raises(TaskAlreadyExistsError):  # queued
        defer(cf.record, out, "second", _name=name, _services=env.services)
    # the claim lapses with the body it was made for (30 days after its ETA)
    assert abs(store_expiry(env.store_url, NAME_PREFIX + name) - (time.time() + 30 * 86400)) < 120
    wait_for(lambda: env.state(name) == b"done", what="the task to succeed")
    with pytest.raises(TaskAlreadyExistsError, match="tombstone"):  # finished: tombstoned
        defer(cf.record, out, "third", _name=name, _services=env.services)
    assert [fields(line)["text"] for line in lines(out)] == ["first"]


def test_concurrent_defers_of_one_name_queue_it_once(env, tmp_path):
    out = str(tmp_path / "out")
    name = unique("race")
    outcomes: list[str] = []

    def attempt(i: int) -> None:
        try:
            defer(cf.record, out, f"t{i}", _name=name, _services=env.services)
            outcomes.append("queued")
        except TaskAlreadyExistsError:
            outcomes.append("refused")

    threads = [threading.Thread(target=attempt, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["queued"] + ["refused"] * 7
    wait_for(lambda: env.state(name) == b"done")
    assert len(lines(out)) == 1


def test_an_unreachable_broker_queues_nothing_and_frees_the_name(broker, tmp_path):
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    dead = f"amqp://guest:guest@127.0.0.1:{port}//" if broker.kind == "amqp" else f"redis://127.0.0.1:{port}/0"
    store_url = f"sqlite:///{tmp_path}/store.sqlite3"
    services = Services(secret_key=SECRET_KEY, data_dir=str(tmp_path), store=store_url,
                        queue=f"celery://{dead}?prefix={broker.prefix}", environ={})
    name = unique("lost")
    try:
        with pytest.raises(QueueUnavailableError, match=name):
            defer(cf.record, str(tmp_path / "out"), "x" * 200_000, _name=name, _services=services)
        assert services.store.get(NAME_PREFIX + name) is None  # the name is free again
        assert stored_payloads(store_url) == 0  # and the large payload was not kept
    finally:
        services.close()


# --- forged and replayed messages ----------------------------------------------------


def _envelope(queue: str = "default") -> dict:
    return {"v": 1, "queue": queue, "created": time.time()}


def _seal(services: Services, call: bytes, name: str, queue: str = "default", expires: float | None = None) -> bytes:
    expires = time.time() + 3600 if expires is None else expires
    body, _ = payload.PayloadCodec(services).seal(call, name=name, queue=queue, expires=expires)
    return body


def test_forged_payloads_are_refused_before_unpickling(env, tmp_path):
    out, trap = str(tmp_path / "out"), str(tmp_path / "trap")
    call = payload.dumps(cf.record, (out, cf.Trap(trap)), {})
    other = Services(secret_key="another-key-of-32-bytes-or-more!!", data_dir=str(tmp_path / "other"), environ={},
                     queue="immediate://")
    names = [unique("forged") for _ in range(3)]
    foreign = _seal(other, call, names[0])  # signed with another key
    other.close()
    ours = _seal(env.services, call, names[1])
    altered = ours[:-50] + bytes([ours[-50] ^ 1]) + ours[-49:]  # signed with ours, then altered
    unsigned = b"P" + call
    for name, body in zip(names, (foreign, altered, unsigned)):
        env.send_raw([base64.b64encode(body).decode(), _envelope()], name)
    # not even our envelope: a pickled Celery message
    env.send_raw([cf.Trap(trap), _envelope()], unique("pickled"), serializer="pickle")
    for name in names:
        env.worker.wait_log(f"refused task {name!r}")
    env.worker.wait_log("pickle")
    assert not os.path.exists(trap), "a forged body was unpickled"
    assert lines(out) == []
    assert all(env.state(name) is None for name in names)  # nothing recorded for a forger


def test_a_body_runs_only_as_the_task_it_is_signed_for(env, tmp_path):
    out, trap = str(tmp_path / "out"), str(tmp_path / "trap")
    call = payload.dumps(cf.record, (out, cf.Trap(trap)), {})
    signed_for, other_name = unique("signed"), unique("other")
    body = base64.b64encode(_seal(env.services, call, signed_for)).decode()
    env.send_raw([body, _envelope()], other_name)  # under another name
    env.send_raw([body, _envelope("mail")], signed_for, queue="mail")  # into another queue
    late = unique("expired")
    expired = base64.b64encode(_seal(env.services, call, late, expires=time.time() - 1)).decode()
    env.send_raw([expired, _envelope()], late)
    env.worker.wait_log(f"is signed for task {signed_for!r}, not {other_name!r}")
    env.worker.wait_log("is signed for queue 'default', not 'mail'")
    env.worker.wait_log("not run: the payload expired")
    assert not os.path.exists(trap) and lines(out) == []


def test_a_replayed_message_does_not_run_a_finished_task_again(env, tmp_path):
    out = str(tmp_path / "out")
    name = unique("replayed")
    # queued where no worker listens, to capture the message as it travels
    defer(cf.record, out, "once", _name=name, _queue="held", _services=env.services)
    from kombu import Connection

    with Connection(env.queue.app.conf.broker_url, transport_options=env.queue.app.conf.broker_transport_options) as conn:
        simple = conn.SimpleQueue(env.broker.prefix + "held")
        message = simple.get(timeout=10)
        args, task_id = message.payload[0], message.headers["id"]
        message.ack()
        simple.close()
    assert task_id == name
    # Celery's expiry is the body's signed one: the broker drops what could not run anyway
    expires = datetime.fromisoformat(message.headers["expires"]).timestamp()
    assert abs(expires - (time.time() + 30 * 86400)) < 120
    env.send_raw(args, task_id)  # delivered where a worker listens (the body says queue "held")
    wait_for(lambda: env.state(name) == b"done")
    env.send_raw(args, task_id)  # the replay
    wait_for(lambda: env.worker.log().count(f"task {name!r} ran already") >= 1)
    assert [fields(line)["text"] for line in lines(out)] == ["once"]


def take(env, queue: str, ids: set) -> dict:
    """The messages of ``ids`` from a queue no worker listens to, as they travel (acknowledged)."""
    from kombu import Connection

    found = {}
    with Connection(env.queue.app.conf.broker_url, transport_options=env.queue.app.conf.broker_transport_options) as conn:
        simple = conn.SimpleQueue(env.broker.prefix + queue)
        try:
            while set(found) != ids:
                message = simple.get(timeout=10)
                message.ack()
                found[message.headers["id"]] = message
        finally:
            simple.close()
    return found


def test_a_message_names_its_callable_needs_no_results_and_expires_only_with_its_body(env, tmp_path):
    env.broker.queues.add("shown")
    out = str(tmp_path / "out")
    later = defer(cf.record, out, "a-secret-argument", _name=unique("shown"), _countdown=120, _queue="shown",
                  _services=env.services)
    bare = unique("bare")  # a task without an expiry of its own
    env.queue.add(Task(body=b"not signed", name=bare, queue="shown", named=True))
    messages = take(env, "shown", {later.name, bare})
    headers = messages[later.name].headers
    # Celery's logs, events and monitors show the callable's name, not the payload
    assert headers["argsrepr"] == "celery_fixtures.record(…)" and headers["kwargsrepr"] == "{}"
    text = messages[later.name].payload[0][0]
    assert "secret" not in headers["argsrepr"] and text not in headers["argsrepr"]
    # no result backend: the message says its result is ignored
    assert headers["ignore_result"] is True
    # a countdown task expires with its signed body, long after its ETA, never before it
    expires = datetime.fromisoformat(headers["expires"]).timestamp()
    assert abs(expires - (later.eta.timestamp() + 30 * 86400)) < 5
    # and a task without an expiry has none in Celery: nothing drops it
    assert messages[bare].headers["expires"] is None
    assert messages[bare].headers["argsrepr"] == "(a signed task body)"
    env.services.store.delete(NAME_PREFIX + bare)


# --- payloads ------------------------------------------------------------------------------


def stored_payloads(store_url: str) -> int:
    path = store_url[len("sqlite:///"):]
    if not os.path.exists(path):
        return 0
    with sqlite3.connect(path) as conn:
        try:
            return conn.execute(
                "SELECT count(*) FROM gaeservices_store WHERE id LIKE 'k:gaeservices.tasks.payload:%'"
            ).fetchone()[0]
        except sqlite3.OperationalError:  # no table yet
            return 0


def store_expiry(store_url: str, key: str) -> float:
    with sqlite3.connect(store_url[len("sqlite:///"):]) as conn:
        return conn.execute("SELECT expires FROM gaeservices_store WHERE id = ?", ("k:" + key,)).fetchone()[0]


def test_a_large_payload_travels_through_the_store(env, tmp_path):
    out = str(tmp_path / "out")
    name = unique("large")
    before = stored_payloads(env.store_url)
    defer(cf.record, out, "y" * 300_000, _name=name, _countdown=0.5, _services=env.services)
    assert stored_payloads(env.store_url) == before + 1
    wait_for(lambda: env.state(name) == b"done")
    assert fields(lines(out)[0])["text"] == "y" * 300_000
    assert stored_payloads(env.store_url) == before  # deleted after success


# --- workers that die -------------------------------------------------------------------


def test_a_pool_process_killed_mid_task_gives_its_task_back(env, tmp_path):
    out, release = str(tmp_path / "out"), str(tmp_path / "release")
    defer(cf.start_then_block, out, release, _services=env.services)
    first = wait_for(lambda: lines(out))[0].split()
    os.kill(int(first[1]), signal.SIGKILL)
    second = wait_for(lambda: len(lines(out)) >= 2 and lines(out)[1].split(), what="the task to run again")
    assert second[0] == "start" and second[1] != first[1]
    open(release, "w").close()
    wait_for(lambda: len(lines(out)) >= 3)
    assert lines(out)[2] == f"done {second[1]}"


@pytest.mark.parametrize("kind", BROKERS)
def test_a_worker_killed_mid_task_loses_nothing(kind, tmp_path):
    broker = Broker(kind)
    broker.queues.add("default")
    # Redis gives an unacknowledged message to another worker once it is older than
    # visibility_timeout (RabbitMQ as soon as the connection drops)
    url = broker.url(visibility_timeout=0.5) if kind == "redis" else broker.url()
    store_url = f"sqlite:///{tmp_path}/store.sqlite3"
    variables = worker_env(url, store_url, str(tmp_path / "worker-data"))
    services = Services(secret_key=SECRET_KEY, data_dir=str(tmp_path / "data"), store=store_url, queue=url, environ={})
    out, release = str(tmp_path / "out"), str(tmp_path / "release")
    first = CeleryWorker(variables, [broker.prefix + "default"], str(tmp_path / "first.log")).start()
    second = CeleryWorker(variables, [broker.prefix + "default"], str(tmp_path / "second.log"))
    try:
        name = unique("survivor")
        defer(cf.start_then_block, out, release, _name=name, _services=services)
        started = wait_for(lambda: lines(out))[0].split()
        first.kill()  # SIGKILL to the worker and its pool at once
        assert first.process.returncode == -signal.SIGKILL
        time.sleep(0.6 if kind == "redis" else 0)  # past the visibility timeout
        second.start()
        again = wait_for(lambda: len(lines(out)) >= 2 and lines(out)[1].split(), what="the task to run again")
        assert again[0] == "start" and again[1] != started[1]
        open(release, "w").close()
        wait_for(lambda: services.store.get(NAME_PREFIX + name) == b"done")
        assert lines(out)[2:] == [f"done {again[1]}"]
    finally:
        first.kill()
        second.stop()
        services.close()
        broker.cleanup()


# --- configuration --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url, message",
    [
        ("celery://sqs://key:secret@host", "unsupported broker 'sqs'"),
        ("celery://127.0.0.1:6379", "broker's URL follows celery://"),
        ("celery://redis://:hunter2@host:port/0", "bad port"),
        ("celery://redis://host:6379/zero", "a Redis database is a number"),
        ("celery://amqp://guest:hunter2@host//?visibility_timeout=5", "visibility_timeout is a Redis"),
        ("celery://redis://host:6379/0?prefetch=4", "unknown option prefetch"),
        ("celery://redis://host:6379/0?hold=0", "hold='0' is not a number of seconds > 0"),
        ("celery://redis://host:6379/0?prefix=a/b", "prefix='a/b'"),
    ],
)
def test_a_bad_celery_url_fails_when_services_is_built(url, message):
    with pytest.raises(ConfigurationError) as caught:
        Services(queue=url, environ={})
    text = str(caught.value)
    assert message in text
    assert "celery://amqp://user:password@host:5672/vhost or celery://redis://" in text  # the accepted forms
    assert "hunter2" not in text and "secret@" not in text


def test_the_password_is_redacted_where_the_queue_is_shown():
    services = Services(queue="celery://amqp://guest:hunter2@127.0.0.1:5672//?prefix=x-", environ={},
                        secret_key=SECRET_KEY)
    assert "hunter2" not in repr(services) and "guest:***@127.0.0.1" in repr(services)
    assert "hunter2" not in repr(services.queue)


def test_transactional_is_refused(broker, tmp_path):
    services = Services(secret_key=SECRET_KEY, data_dir=str(tmp_path), store=f"sqlite:///{tmp_path}/s.db",
                        queue=broker.url(), environ={})
    try:
        with pytest.raises(UnsupportedTaskOptionError, match="on_commit"):
            defer(cf.record, "x", "y", _transactional=True, _services=services)
    finally:
        services.close()


def test_each_queue_registers_its_task_on_its_own_app_only(tmp_path):
    from celery import Celery

    first, second = (
        Services(secret_key=key * 32, data_dir=str(tmp_path / key), store=f"sqlite:///{tmp_path}/{key}.db",
                 queue=f"celery://redis://127.0.0.1:6379/0?prefix={key}-", environ={})
        for key in "ab"
    )
    try:
        assert TASK_NAME in first.queue.app.tasks
        out = str(tmp_path / "out")
        call = payload.dumps(cf._append, (out, "ran"), {})
        body = base64.b64encode(_seal(second, call, "by-second")).decode()
        # run here, eagerly: the second queue's task must be the second queue's (its key verifies)
        second.queue.app.tasks[TASK_NAME].apply(args=[body, _envelope()], task_id="by-second")
        assert lines(out) == ["ran"]
        # and a user's own Celery app does not receive it
        assert TASK_NAME not in Celery("users-app", set_as_current=False).tasks
    finally:
        first.close()
        second.close()


def test_the_worker_app_needs_a_celery_queue(tmp_path):
    services = Services(secret_key=SECRET_KEY, data_dir=str(tmp_path), queue="immediate://", environ={})
    with pytest.raises(ConfigurationError, match="GAESERVICES_QUEUE=celery://"):
        worker_app(services)


def test_celery_is_imported_only_by_the_celery_backend():
    code = (
        "import sys, gaeservices\n"
        "from gaeservices import Services\n"
        "s = Services(queue='celery://redis://127.0.0.1:6379/0', environ={}, secret_key='k' * 32)\n"
        "assert 'celery' not in sys.modules and 'kombu' not in sys.modules, 'imported too early'\n"
        "s.queue\n"
        "assert 'celery' in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
