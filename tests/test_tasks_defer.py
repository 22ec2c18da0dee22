"""defer(): what can be deferred, its options, and immediate:// running it inline."""

from __future__ import annotations

import functools
from datetime import datetime, timedelta, timezone

import pytest
import tasks_fixtures as fx

from gaeservices import Services, defer
from gaeservices.exceptions import (
    ConfigurationError,
    InvalidTaskError,
    TaskAlreadyExistsError,
    UnsupportedTaskOptionError,
)
from gaeservices.tasks import RetryOptions


@pytest.fixture(autouse=True)
def clean():
    fx.calls.clear()


@pytest.fixture
def svc(tmp_path):
    s = Services(
        secret_key="k-signing-key-for-the-test-suite", data_dir=str(tmp_path), environ={}, queue="immediate://",
        store=f"sqlite:///{tmp_path}/store.db",
    )
    yield s
    s.close()


def test_callables_of_every_supported_kind(svc):
    counter = fx.Counter(10)
    defer(fx.record, 1, b=2, _services=svc)
    defer(fx.Counter.static, 3, _services=svc)
    defer(fx.Counter.klass, 4, _services=svc)
    defer(counter.add, 5, _services=svc)
    defer(counter, 6, _services=svc)
    defer(functools.partial(fx.record, "partial"), 7, _services=svc)
    defer(functools.partial(counter.add, 1), _services=svc)
    assert fx.calls == [
        ((1,), {"b": 2}),
        ("static", 3),
        ("classmethod", "Counter", 4),
        ("method", 15),
        ("instance", 60),
        (("partial", 7), {}),
        ("method", 11),
    ]


def test_each_task_names_its_callable_for_display(svc):
    counter = fx.Counter(10)
    seen = []
    add = svc.queue.add
    svc.queue.add = lambda task: (seen.append(task.call), add(task))[1]
    for obj in (fx.record, fx.Counter.static, fx.Counter.klass, counter.add, counter,
                functools.partial(fx.record, "partial"), functools.partial(counter.add)):
        defer(obj, 1, _services=svc)
    assert seen == [
        "tasks_fixtures.record", "tasks_fixtures.Counter.static", "tasks_fixtures.Counter.klass",
        "tasks_fixtures.Counter.add", "tasks_fixtures.Counter", "tasks_fixtures.record", "tasks_fixtures.Counter.add",
    ]


def nested_maker():
    def nested():
        pass

    return nested


def test_lambda_is_refused_with_the_reason(svc):
    with pytest.raises(InvalidTaskError, match="lambda.*module-level function"):
        defer(lambda: None, _services=svc)
    with pytest.raises(InvalidTaskError, match="lambda"):
        defer(functools.partial(lambda x: x, 1), _services=svc)


def test_nested_function_is_refused(svc):
    with pytest.raises(InvalidTaskError, match="inside another function.*top level"):
        defer(nested_maker(), _services=svc)


def test_main_functions_are_refused(svc):
    namespace = {"__name__": "__main__"}
    exec("def job():\n    pass\nclass Job:\n    def run(self):\n        pass\n", namespace)
    with pytest.raises(InvalidTaskError, match="__main__.job.*script being run"):
        defer(namespace["job"], _services=svc)
    with pytest.raises(InvalidTaskError, match="__main__"):
        defer(namespace["Job"]().run, _services=svc)
    # also hidden inside the arguments
    with pytest.raises(InvalidTaskError, match="__main__"):
        defer(fx.record, {"callback": namespace["job"]}, _services=svc)
    assert fx.calls == []


def test_unpicklable_arguments_are_refused_at_defer_time(svc):
    import threading

    with pytest.raises(InvalidTaskError, match="cannot be pickled"):
        defer(fx.record, threading.Lock(), _services=svc)


def test_the_string_main_in_data_is_fine(svc):
    defer(fx.record, "__main__", _services=svc)
    assert fx.calls == [(("__main__",), {})]


def test_options_are_validated(svc):
    with pytest.raises(InvalidTaskError, match="not both"):
        defer(fx.record, _countdown=1, _eta=datetime.now(timezone.utc), _services=svc)
    with pytest.raises(InvalidTaskError, match="task name"):
        defer(fx.record, _name="has space", _services=svc)
    with pytest.raises(InvalidTaskError, match="queue name"):
        defer(fx.record, _queue="no_underscore", _services=svc)
    with pytest.raises(InvalidTaskError, match="_url"):
        defer(fx.record, _url="relative", _services=svc)
    with pytest.raises(InvalidTaskError, match="unknown retry options"):
        defer(fx.record, _retry_options={"retries": 3}, _services=svc)
    with pytest.raises(InvalidTaskError, match=">= 0"):
        defer(fx.record, _countdown=-1, _services=svc)
    assert fx.calls == []


def test_handle_has_name_queue_and_eta(svc):
    eta = datetime(2030, 1, 2, 3, 4, 5)  # naive means UTC, as in the SDK
    handle = defer(fx.record, _name="n1", _queue="mail", _eta=eta, _services=svc)
    assert (handle.name, handle.queue) == ("n1", "mail")
    assert handle.eta == eta.replace(tzinfo=timezone.utc)
    before = datetime.now(timezone.utc)
    handle = defer(fx.record, _countdown=30, _services=svc)
    assert timedelta(seconds=29) < handle.eta - before < timedelta(seconds=31)


def test_immediate_names_deduplicate(svc):
    defer(fx.record, 1, _name="once", _services=svc)
    with pytest.raises(TaskAlreadyExistsError):
        defer(fx.record, 2, _name="once", _services=svc)
    assert fx.calls == [((1,), {})]


def test_immediate_reraises_retryable_failures_and_records_permanent_ones(svc):
    with pytest.raises(RuntimeError, match="boom x"):
        defer(fx.always_fails, "x", _services=svc)
    handle = defer(fx.fail_permanently, "bad", _services=svc)
    ((name, result),) = svc.queue.failures
    assert name == handle.name
    assert result.outcome == "permanent-failure"
    assert "bad" in result.error


def test_immediate_refuses_transactional(svc):
    with pytest.raises(UnsupportedTaskOptionError, match="_transactional"):
        defer(fx.record, _transactional=True, _services=svc)
    assert fx.calls == []


def test_immediate_large_payloads_go_through_the_store(tmp_path):
    svc = Services(
        secret_key="k-signing-key-for-the-test-suite", data_dir=str(tmp_path), environ={}, queue="immediate://?max_payload=1000",
        store=f"sqlite:///{tmp_path}/store.db",
    )
    big = "x" * 5000
    defer(fx.record, big, _services=svc)
    assert fx.calls == [((big,), {})]
    table = svc.store.table
    with svc.store.engine.connect() as conn:
        assert conn.execute(table.select()).all() == []  # deleted after success
    svc.close()


def test_retry_options_backoff_follows_app_engine():
    retry = RetryOptions(min_backoff_seconds=10, max_backoff_seconds=300, max_doublings=3)
    assert [retry.backoff(n) for n in range(8)] == [10, 20, 40, 80, 160, 240, 300, 300]
    assert not retry.gives_up(100, 1e9)  # no limits: for ever
    limited = RetryOptions(task_retry_limit=2, task_age_limit=60)
    assert not limited.gives_up(2, 30)  # both limits must be reached
    assert not limited.gives_up(1, 100)
    assert limited.gives_up(2, 60)


def test_sdk_retry_options_are_accepted(testbed):
    from google.appengine.api.taskqueue import TaskRetryOptions

    coerced = RetryOptions.coerce(TaskRetryOptions(task_retry_limit=3, min_backoff_seconds=2))
    assert (coerced.task_retry_limit, coerced.min_backoff_seconds) == (3, 2.0)


def test_local_queue_needs_a_sql_store(tmp_path):
    svc = Services(secret_key="k-signing-key-for-the-test-suite", data_dir=str(tmp_path), environ={}, store="datastore://", queue="local://")
    with pytest.raises(ConfigurationError, match="local://.*sqlite:///"):
        svc.queue


def test_default_services_are_used(monkeypatch, tmp_path):
    from gaeservices.config import set_services

    previous = set_services(
        Services(secret_key="k-signing-key-for-the-test-suite", data_dir=str(tmp_path), environ={}, queue="immediate://")
    )
    try:
        defer(fx.record, "default")
    finally:
        set_services(previous).close()
    assert fx.calls == [(("default",), {})]
