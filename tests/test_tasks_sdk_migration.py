"""Migration from the SDK's deferred library: tasks it queued drain through DeferredApp.

The bodies are made by the SDK's own ``google.appengine.ext.deferred.defer`` into
the testbed's taskqueue stub (unsigned pickles; a large one stored in Datastore
with a ``run_from_datastore`` reference), then POSTed to the endpoint the way
the platform would, with its task headers.
"""

from __future__ import annotations

import io

import pytest
import tasks_fixtures as fx

from gaeservices import Services
from gaeservices.tasks.endpoint import DeferredApp

ON_APP_ENGINE = {"GAE_ENV": "standard", "GAE_SERVICE": "default", "GAE_INSTANCE": "i-1"}


@pytest.fixture(autouse=True)
def clean():
    fx.calls.clear()


def services(tmp_path, environ):
    return Services(
        secret_key="k-signing-key-for-the-test-suite", data_dir=str(tmp_path), environ=environ,
        store=f"sqlite:///{tmp_path}/store.db", queue="immediate://",
    )


def sdk_tasks(testbed):
    return testbed.get_stub("taskqueue").get_filtered_tasks(queue_names=["default"])


def deliver(app, task, headers=None):
    """POST one stub task as the platform would (headers=... replaces the platform's)."""
    environ = {
        "REQUEST_METHOD": "POST", "SCRIPT_NAME": "", "PATH_INFO": task.url, "QUERY_STRING": "",
        "SERVER_NAME": "localhost", "SERVER_PORT": "80", "SERVER_PROTOCOL": "HTTP/1.1",
        "CONTENT_TYPE": "application/octet-stream", "CONTENT_LENGTH": str(len(task.payload)),
        "wsgi.input": io.BytesIO(task.payload), "wsgi.errors": io.StringIO(), "wsgi.version": (1, 0),
        "wsgi.url_scheme": "https", "wsgi.multithread": True, "wsgi.multiprocess": False, "wsgi.run_once": False,
    }
    platform = {
        "HTTP_X_APPENGINE_TASKNAME": task.name,
        "HTTP_X_APPENGINE_QUEUENAME": "default",
        "HTTP_X_APPENGINE_TASKRETRYCOUNT": "0",
    }
    environ.update(platform if headers is None else headers)
    answer = []
    b"".join(app(environ, lambda status, response_headers, exc_info=None: answer.append((status, dict(response_headers)))))
    status, response_headers = answer[0]
    return int(status[:3]), response_headers.get("X-Task-Outcome")


def test_tasks_queued_by_the_sdk_run_when_migration_is_on(testbed, tmp_path):
    from google.appengine.ext import deferred

    deferred.defer(fx.record, "queued by the SDK", n=1, _name="sdk-1")
    deferred.defer(fx.raise_sdk_permanent_failure, "gone")
    deferred.defer(fx.raise_sdk_singular_failure, "later")
    deferred.defer(fx.record, "y" * 200_000)  # too large for a task: the SDK stores it in Datastore
    tasks = {task.name: task for task in sdk_tasks(testbed)}
    assert len(tasks) == 4
    svc = services(tmp_path, ON_APP_ENGINE)
    app = DeferredApp(svc, accept_sdk_tasks=True)
    answers = {name: deliver(app, task) for name, task in tasks.items()}
    assert answers["sdk-1"] == (200, "success")
    assert sorted(answers.values()) == [(200, "permanent-failure"), (200, "success"), (200, "success"), (408, "retry")]
    assert (("queued by the SDK",), {"n": 1}) in fx.calls
    assert (("y" * 200_000,), {}) in fx.calls
    assert ("sdk-permanent", "gone") in fx.calls and ("sdk-singular", "later") in fx.calls


def test_the_option_is_read_from_the_environment(tmp_path):
    env = dict(ON_APP_ENGINE, GAESERVICES_ACCEPT_SDK_TASKS="1")
    assert DeferredApp(services(tmp_path, env)).accept_sdk_tasks
    assert not DeferredApp(services(tmp_path, ON_APP_ENGINE)).accept_sdk_tasks  # off by default


def test_sdk_tasks_are_refused_unless_every_condition_holds(testbed, tmp_path):
    from google.appengine.ext import deferred

    deferred.defer(fx.record, "must not run", _name="sdk-refused")
    (task,) = sdk_tasks(testbed)
    without_queue_header = {"HTTP_X_APPENGINE_TASKNAME": task.name}
    cases = {
        "the option off (the default)": (DeferredApp(services(tmp_path, ON_APP_ENGINE)), None),
        "off App Engine": (DeferredApp(services(tmp_path, {}), accept_sdk_tasks=True), None),
        "without the platform's queue header": (
            DeferredApp(services(tmp_path, ON_APP_ENGINE), accept_sdk_tasks=True), without_queue_header
        ),
    }
    for what, (app, headers) in cases.items():
        status, outcome = deliver(app, task, headers)
        assert (status, outcome) == (403, "refused"), what
    assert fx.calls == []


def test_with_migration_on_our_own_bodies_are_still_checked(testbed, tmp_path):
    """A body in our format never takes the SDK's path: forged or altered, it is refused."""
    import time

    from gaeservices.tasks import payload

    svc = services(tmp_path, ON_APP_ENGINE)
    other = Services(secret_key="another-signing-key-for-the-test-suite", data_dir=str(tmp_path), environ={})
    forged, _ = payload.PayloadCodec(other).seal(
        payload.dumps(fx.record, ("forged",), {}), name="t-1", queue="default", expires=time.time() + 60
    )

    class Forged:
        name, url, payload = "t-1", "/_ah/queue/deferred", forged

    app = DeferredApp(svc, accept_sdk_tasks=True)
    assert deliver(app, Forged) == (403, "refused")
    assert fx.calls == []
