"""Listing and acting on queued tasks (gaeservices.tasks.inspection and the
local queue's listing, stats and purge), on real SQLite and PostgreSQL; and the
preview of a task's call, which reads its pickle without running it."""

from __future__ import annotations

import functools
import io
import pickle
import time

import pytest
import tasks_fixtures as fx

from gaeservices import Services, defer
from gaeservices.store.engine import dispose_engine
from gaeservices.exceptions import ConfigurationError, TaskAlreadyExistsError
from gaeservices.tasks import admin
from gaeservices.tasks.inspection import UnsupportedActionError, inspector_for
from gaeservices.tasks.local import VIEWS
from gaeservices.tasks.payload import PayloadCodec
from gaeservices.tasks.preview import describe_body, describe_pickle
from gaeservices.tasks.worker import Dispatcher

KEY = "k-signing-key-for-the-test-suite"


@pytest.fixture(autouse=True)
def clean():
    fx.calls.clear()
    fx.unpickled.clear()


@pytest.fixture(params=["sqlite", "postgresql"])
def svc(request, tmp_path):
    url = f"sqlite:///{tmp_path}/store.sqlite3" if request.param == "sqlite" else request.getfixturevalue("postgres_url")
    s = Services(secret_key=KEY, data_dir=str(tmp_path), environ={}, store=url, queue="local://")
    yield s
    s.close()
    dispose_engine(s.backend_url("store"))  # its pool's connections, before the schema goes


def one_of_each(svc):
    """A task in each view of the default queue, and one queued in ``mail``."""
    defer(fx.record, "q", _name="queued", _services=svc)
    defer(fx.record, "s", _name="scheduled", _countdown=3600, _services=svc)
    defer(fx.always_fails, "f", _name="failed", _retry_options={"min_backoff_seconds": 3600}, _services=svc)
    defer(fx.always_fails, "d", _name="dead", _retry_options={"task_retry_limit": 0}, _services=svc)
    defer(fx.record, "ok", _name="done", _services=svc)
    Dispatcher(svc, drain=True).run_now(["failed", "dead", "done"])
    defer(fx.record, "r", _name="running", _services=svc)
    (running,) = svc.queue.claim(1, names=["running"], lease=600)
    defer(fx.record, "m", _name="mailed", _queue="mail", _services=svc)
    return running


def test_each_task_is_listed_in_its_view(svc):
    one_of_each(svc)
    queue = svc.queue
    for view in VIEWS:
        names = [i.name for i in queue.listing(queue="default", view=view)]
        assert names == [view], (view, names)
    assert {i.view() for i in queue.listing()} == set(VIEWS)
    assert [i.name for i in queue.listing(queue="mail")] == ["mailed"]
    listed = queue.listing(queue="default")
    # unfinished first by ETA, then finished ones, the latest first
    assert [i.name for i in listed][-2:] in (["dead", "done"], ["done", "dead"])
    assert listed[0].body and queue.listing(view="done")[0].body is None
    everything = [i.name for i in queue.listing()]
    assert len(everything) == 7
    for offset in range(8):  # pages across the unfinished and finished ones
        assert [i.name for i in queue.listing(limit=3, offset=offset)] == everything[offset:offset + 3]
    with pytest.raises(ValueError):
        queue.listing(view="pending")


def test_stats_count_each_queue_by_view(svc):
    one_of_each(svc)
    stats = svc.queue.stats()
    assert list(stats) == ["default", "mail"]
    default = stats["default"]
    assert {v: getattr(default, v) for v in VIEWS} == dict.fromkeys(VIEWS, 1)
    assert default.depth == 4  # queued, scheduled, running, failed
    assert default.done_last_minute == default.done_last_hour == 1
    assert default.dead_last_hour == 1
    assert default.oldest_queued is not None and default.oldest_queued <= time.time()
    assert stats["mail"].queued == stats["mail"].depth == 1 and stats["mail"].done == 0
    later = svc.queue.stats(now=time.time() + 7200)
    assert later["default"].done_last_hour == 0 and later["default"].scheduled == 0


def test_purge_queue_deletes_its_unfinished_and_dead_tasks_and_their_stored_payloads(svc):
    running = one_of_each(svc)
    big = defer(fx.record, "x" * 200_000, _name="big", _services=svc)  # payload kept in the store
    key = PayloadCodec(svc).stored_key(svc.queue.listing(view="queued", queue="default")[-1].body)
    assert big.name == "big" and key and svc.store.get(key) is not None
    assert svc.queue.purge_queue("default", batch=2) == 6  # queued, scheduled, failed, dead, running, big
    assert [i.name for i in svc.queue.listing(queue="default")] == ["done"]  # the tombstone stays
    assert svc.store.get(key) is None
    assert [i.name for i in svc.queue.listing(queue="mail")] == ["mailed"]
    # the purged running task's outcome finds no row
    assert svc.queue.finish([(running, fx_success())]) == 0
    with pytest.raises(TaskAlreadyExistsError):
        defer(fx.record, _name="done", _services=svc)  # its name is still taken


def fx_success():
    from gaeservices.tasks.result import SUCCESS, TaskResult

    return TaskResult(200, SUCCESS)


def test_local_inspector_lists_runs_retries_deletes_and_purges(svc):
    one_of_each(svc)
    inspector = inspector_for(svc)
    assert inspector.backend.startswith("local:// (") and set(inspector.actions) >= {"run", "retry", "purge"}
    rows = {r.name: r for r in inspector.tasks()}
    assert rows["scheduled"].call.callable == "tasks_fixtures.record"
    assert rows["scheduled"].call.arguments == "'s'"
    assert rows["dead"].view == "dead" and "RuntimeError: boom d" in rows["dead"].last_error
    assert rows["done"].call.problem and rows["done"].eta is None
    assert inspector.run("scheduled").outcome == "success"
    assert fx.calls[-1] == (("s",), {})
    assert inspector.run("running") is None  # a worker holds it
    assert inspector.run("nope") is None
    assert inspector.retry("dead") and svc.queue.get("dead").view() == "failed"
    assert inspector.delete("dead") and not inspector.delete("dead")
    assert inspector.purge("mail") == 1
    assert [q.name for q in inspector.queues()] == ["default"]


def test_the_command_lists_tasks_by_view_with_their_calls(svc):
    one_of_each(svc)
    out = io.StringIO()
    assert admin.main(["list", "--state", "dead"], services=svc, out=out) == 0
    (line, summary) = out.getvalue().splitlines()
    assert line.startswith("dead\tdefault\tdead\tattempts=1\t")
    assert "tasks_fixtures.always_fails('d')" in line and line.endswith("RuntimeError: boom d")
    assert summary.startswith("# default: ")
    out = io.StringIO()
    assert admin.main(["purge-queue", "mail"], services=svc, out=out) == 0
    assert "1 task" in out.getvalue() and svc.queue.get("mailed") is None


def test_immediate_queue_lists_its_permanent_failures_and_refuses_the_rest(tmp_path):
    svc = Services(secret_key=KEY, data_dir=str(tmp_path), environ={}, queue="immediate://")
    defer(fx.fail_permanently, "<b>why</b>", _name="perm", _services=svc)
    inspector = inspector_for(svc)
    (row,) = inspector.tasks()
    assert row.name == "perm" and row.view == "dead" and "<b>why</b>" in row.last_error
    assert inspector.queues() == []
    for action, args in (("run", ("perm",)), ("retry", ("perm",)), ("delete", ("perm",)), ("purge", ("default",))):
        with pytest.raises(UnsupportedActionError, match="inside defer"):
            getattr(inspector, action)(*args)
    from gaeservices.cli import CommandError

    with pytest.raises(CommandError, match="inside defer") as refused:
        admin.main(["retry", "perm"], services=svc, out=io.StringIO())
    assert refused.value.status == 2
    with pytest.raises(ConfigurationError, match="local:// queue"):
        admin.main(["run", "--all"], services=svc, out=io.StringIO())
    out = io.StringIO()
    assert admin.main(["list"], services=svc, out=out) == 0
    assert out.getvalue().startswith("perm\t\tdead\tattempts=1\t")


def test_appengine_queue_statistics_delete_and_purge(testbed, tmp_path):
    from google.appengine.api import taskqueue

    (tmp_path / "queue.yaml").write_text("queue:\n- name: mail\n  rate: 5/s\n")
    testbed.init_taskqueue_stub(root_path=str(tmp_path))
    svc = Services(secret_key=KEY, data_dir=str(tmp_path), environ={}, queue="appengine://", store="datastore://")
    defer(fx.record, 1, _name="first", _services=svc)
    defer(fx.record, 2, _countdown=60, _services=svc)
    taskqueue.Queue("mail").add(taskqueue.Task(payload=b"x", url="/x", name="mailed"))
    inspector = inspector_for(svc, queue_names=["mail", "unknown"])
    depths = {q.name: q.depth for q in inspector.queues()}
    assert depths == {"default": 2, "mail": 1, "unknown": 0}
    with pytest.raises(UnsupportedActionError, match="cannot list"):
        inspector.tasks()
    with pytest.raises(UnsupportedActionError):
        inspector.run("first")
    assert inspector.delete("first") and not inspector.delete("first")
    assert inspector.delete("mailed")  # found in the second queue shown
    inspector.purge("default")
    assert {q.name: q.depth for q in inspector.queues()} == {"default": 0, "mail": 0, "unknown": 0}
    with pytest.raises(UnsupportedActionError, match="knows no queue 'unknown'"):
        inspector.purge("unknown")


# --- the preview of a call -------------------------------------------------------


def _call(fn, *args, **kwargs):
    return pickle.dumps((fn, args, kwargs), 5)


def test_preview_reads_the_call_without_unpickling_it(svc, monkeypatch):
    defer(fx.record, fx.Sentinel("<tag>"), when=3, _name="sentinel", _services=svc)

    def refuse(*args, **kwargs):
        raise AssertionError("the preview unpickled the body")

    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "Unpickler", refuse)
    (row,) = inspector_for(svc).tasks()
    assert row.call.callable == "tasks_fixtures.record"
    assert row.call.arguments == "tasks_fixtures._mark_unpickled('<tag>'), when=3"
    assert fx.unpickled == []


def test_preview_refuses_to_read_a_body_whose_signature_does_not_verify(tmp_path):
    svc = Services(secret_key=KEY, data_dir=str(tmp_path), environ={})
    other = Services(secret_key="another-signing-key-of-32-bytes!!", data_dir=str(tmp_path), environ={})
    pickled = _call(fx.record, fx.Sentinel("forged"))
    forged, _ = PayloadCodec(other).seal(pickled, name="t", queue="default", expires=time.time() + 60)
    assert describe_body(PayloadCodec(svc), forged).problem == "the signature does not verify: not read"
    genuine, _ = PayloadCodec(svc).seal(pickled, name="t", queue="default", expires=time.time() + 60)
    assert describe_body(PayloadCodec(svc), genuine).callable == "tasks_fixtures.record"
    tampered = genuine.replace(b"forged", b"forgeD")
    assert "does not verify" in describe_body(PayloadCodec(svc), tampered).problem
    assert describe_body(PayloadCodec(svc), b"").problem
    assert fx.unpickled == []


@pytest.mark.parametrize(
    "call, callable_, arguments",
    [
        (_call(fx.record, 1, "a", b"b", 1.5, None, True), "tasks_fixtures.record", "1, 'a', b'b', 1.5, None, True"),
        (_call(fx.record, [1, (2,)], {"k": {3}}, frozenset()), "tasks_fixtures.record",
         "[1, (2,)], {'k': {3}}, frozenset()"),
        (_call(fx.Counter(5).add, 2), "tasks_fixtures.Counter(start=5).add", "2"),
        (_call(functools.partial(fx.record, 1, k=2), 3), "functools.partial(tasks_fixtures.record, 1, k=2)", "3"),
        (_call(fx.record, **{"not an identifier": 1}), "tasks_fixtures.record", "**{'not an identifier': 1}"),
        (_call(fx.record, list(range(100))), "tasks_fixtures.record",
         "[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, … 88 more]"),
        (_call(fx.record, 10**400), "tasks_fixtures.record", "<int of 1329 bits>"),
    ],
)
def test_preview_renders_like_repr(call, callable_, arguments):
    preview = describe_pickle(call)
    assert (preview.callable, preview.arguments, preview.problem) == (callable_, arguments, "")


def test_preview_is_bounded_and_survives_anything():
    huge = describe_pickle(_call(fx.record, "x" * 1_000_000, [list(range(50))] * 50), width=120)
    assert len(huge.arguments) <= 120 and huge.arguments.endswith("…")
    cyclic: list = [1]
    cyclic.append(cyclic)
    assert describe_pickle(_call(fx.record, cyclic)).arguments == "[1, …]"
    for junk in (b"", b"garbage", pickle.dumps([1, 2]), pickle.dumps((1, 2, 3)), _call(fx.record, 1)[:-3]):
        assert describe_pickle(junk).problem
    for protocol in range(0, 6):
        assert describe_pickle(pickle.dumps((fx.record, ("a",), {}), protocol)).arguments == "'a'"


@pytest.mark.parametrize("kind", ["amqp", "redis"])
def test_celery_queue_depth_and_purge(kind, tmp_path):
    from celery_fixtures import Broker

    broker = Broker(kind)
    broker.queues |= {"default", "mail"}
    svc = Services(secret_key=KEY, data_dir=str(tmp_path), environ={}, store=f"sqlite:///{tmp_path}/s.db",
                   queue=broker.url())
    try:
        inspector = inspector_for(svc, queue_names=["mail", "never-used"])
        assert inspector.backend == f"celery:// ({'RabbitMQ' if kind == 'amqp' else 'Redis'})"
        for i in range(3):
            defer(fx.record, i, _services=svc)
        defer(fx.record, "m", _queue="mail", _services=svc)

        def depths():
            return {q.name: q.depth for q in inspector.queues()}

        deadline = time.time() + 10  # RabbitMQ counts published messages a moment later
        while depths() != {"default": 3, "mail": 1, "never-used": 0} and time.time() < deadline:
            time.sleep(0.05)
        assert depths() == {"default": 3, "mail": 1, "never-used": 0}
        assert inspector.purge("default") == 3
        assert inspector.purge("never-used") == 0
        out = io.StringIO()
        assert admin.main(["purge-queue", "mail"], services=svc, out=out) == 0
        assert out.getvalue() == "purged 1 task(s) of mail\n"
        deadline = time.time() + 10
        while depths()["mail"] and time.time() < deadline:
            time.sleep(0.05)
        assert depths() == {"default": 0, "mail": 0, "never-used": 0}
        for action in ("run", "retry", "delete"):
            with pytest.raises(UnsupportedActionError, match="cannot list its messages"):
                getattr(inspector, action)("x")
        with pytest.raises(UnsupportedActionError):
            inspector.tasks()
    finally:
        svc.close()
        broker.cleanup()
