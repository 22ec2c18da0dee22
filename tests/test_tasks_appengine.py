"""appengine://: tasks queued through the SDK's taskqueue stub, run through DeferredApp."""

from __future__ import annotations

import time

import pytest
import tasks_fixtures as fx

from gaeservices import Services, defer
from gaeservices.exceptions import TaskAlreadyExistsError
from gaeservices.tasks.endpoint import DeferredApp
from test_tasks_endpoint import post


@pytest.fixture(autouse=True)
def clean():
    fx.calls.clear()


@pytest.fixture
def svc(testbed, tmp_path):
    s = Services(
        secret_key="k-signing-key-for-the-test-suite", data_dir=str(tmp_path), environ={}, queue="appengine://?max_payload=4096",
        store=f"sqlite:///{tmp_path}/store.db",
    )
    yield s
    s.close()


def queued(testbed, queue="default"):
    stub = testbed.get_stub("taskqueue")
    return stub.get_filtered_tasks(queue_names=[queue])


def run_all(testbed, svc, queue="default"):
    app = DeferredApp(svc, require_task_header=True)
    statuses = []
    for task in queued(testbed, queue):
        headers = {"HTTP_" + k.upper().replace("-", "_"): v for k, v in task.headers.items()}
        headers.update({"HTTP_X_APPENGINE_TASKNAME": task.name, "HTTP_X_APPENGINE_QUEUENAME": queue})
        headers.pop("HTTP_CONTENT_TYPE", None)
        headers.pop("HTTP_CONTENT_LENGTH", None)
        statuses.append(post(app, task.payload, headers)[0])
    return statuses


def test_tasks_go_through_the_platform_and_run_through_the_endpoint(testbed, svc):
    handle = defer(fx.record_context, "gae", _name="gae-task", _countdown=60, _services=svc)
    (task,) = queued(testbed)
    assert task.name == handle.name == "gae-task"
    assert task.url == "/_ah/queue/deferred"
    assert task.eta_posix == pytest.approx(time.time() + 60, abs=5)
    assert run_all(testbed, svc) == [200]
    assert fx.calls == [("gae", "gae-task", "default", 1, 0)]


def test_names_deduplicate_on_the_platform(testbed, svc):
    defer(fx.record, _name="once", _services=svc)
    with pytest.raises(TaskAlreadyExistsError):
        defer(fx.record, _name="once", _services=svc)


def test_retry_options_reach_the_platform(testbed, svc):
    defer(fx.record, _retry_options={"task_retry_limit": 3, "min_backoff_seconds": 2}, _services=svc)
    # the stub keeps the request as the platform received it
    ((_, request),) = testbed.get_stub("taskqueue")._GetGroup().GetQueue("default")._sorted_by_name
    assert request.retry_parameters.retry_limit == 3
    assert request.retry_parameters.min_backoff_sec == 2


def test_transactional_follows_the_datastore_transaction(testbed, svc):
    from google.appengine.ext import ndb

    @ndb.transactional()
    def commit():
        defer(fx.record, "committed", _transactional=True, _services=svc)

    @ndb.transactional()
    def roll_back():
        defer(fx.record, "rolled back", _transactional=True, _services=svc)
        raise ndb.Rollback()

    commit()
    roll_back()
    assert run_all(testbed, svc) == [200]
    assert fx.calls == [(("committed",), {})]


def test_large_payloads_travel_by_reference(testbed, svc):
    big = "q" * 20_000
    defer(fx.record, big, _services=svc)
    (task,) = queued(testbed)
    assert len(task.payload) < 4096
    assert run_all(testbed, svc) == [200]
    assert fx.calls == [((big,), {})]
