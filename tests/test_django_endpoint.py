"""The deferred endpoint mounted in a Django project's urls.py (``include("gaeservices.django.urls")``)."""

from __future__ import annotations

import time

import pytest
import tasks_fixtures as fx
from django_fixtures import SECRET_KEY, configure, django_test_db  # noqa: F401  (the fixture)

configure()

from django.test import Client  # noqa: E402

from gaeservices.config import Services, set_services  # noqa: E402
from gaeservices.tasks import payload  # noqa: E402

pytestmark = pytest.mark.usefixtures("django_test_db")


@pytest.fixture
def svc(tmp_path):
    services = Services(secret_key=SECRET_KEY, data_dir=str(tmp_path), environ={})
    previous = set_services(services)
    fx.calls.clear()
    yield services
    set_services(previous)
    services.close()


def body(services, name, *args):
    pickled = payload.dumps(fx.record, args, {})
    sealed, _ = services.queue.codec.seal(pickled, name=name, queue="default", expires=time.time() + 60)
    return sealed


def post(client, data, name):
    return client.post("/_ah/queue/deferred", data, content_type="application/octet-stream",
                       HTTP_X_APPENGINE_TASKNAME=name, HTTP_X_APPENGINE_QUEUENAME="default")


def test_it_runs_a_signed_task_and_refuses_a_forged_one_before_unpickling(svc):
    client = Client()  # enforce_csrf_checks is off in the test client; the view is exempt anyway
    answer = post(client, body(svc, "t1", "pushed"), "t1")
    assert answer.status_code == 200 and answer["X-Task-Outcome"] == "success"
    assert fx.calls == [(("pushed",), {})]
    forged = post(client, body(svc, "t2", "forged")[:-3] + b"xyz", "t2")
    assert forged.status_code == 403
    other_name = post(client, body(svc, "t3", "replayed"), "t4")  # a body bound to another task
    assert other_name.status_code == 403
    assert client.get("/_ah/queue/deferred").status_code == 405
    assert fx.calls == [(("pushed",), {})]


def test_csrf_does_not_stand_in_the_way(svc):
    client = Client(enforce_csrf_checks=True)
    from django.test import override_settings

    with override_settings(MIDDLEWARE=["django.middleware.csrf.CsrfViewMiddleware"]):
        assert post(client, body(svc, "t5", "with csrf"), "t5").status_code == 200
    assert fx.calls == [(("with csrf",), {})]
