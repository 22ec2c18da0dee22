"""DeferredApp: authentication before deserialization, outcomes, bootstrap, PEP 3333."""

from __future__ import annotations

import io
import logging
import pickle
import threading
import wsgiref.validate

import pytest
import tasks_fixtures as fx

from gaeservices import Services
from gaeservices.tasks import bootstrap as bootstrap_module
from gaeservices.tasks import payload
from gaeservices.tasks.endpoint import DeferredApp


@pytest.fixture(autouse=True)
def clean():
    fx.calls.clear()
    fx.unpickled.clear()
    fx.bootstrap_runs.clear()
    bootstrap_module._registry.clear()
    yield
    bootstrap_module._registry.clear()


@pytest.fixture
def svc(tmp_path):
    s = Services(secret_key="right-key-signing-key-for-the-test-suite", data_dir=str(tmp_path), environ={}, store=f"sqlite:///{tmp_path}/s.db")
    yield s
    s.close()


def post(app, body, headers=None, method="POST", validate=True):
    environ = {
        "REQUEST_METHOD": method,
        "SCRIPT_NAME": "",
        "PATH_INFO": "/_ah/queue/deferred",
        "QUERY_STRING": "",
        "SERVER_NAME": "localhost",
        "SERVER_PORT": "80",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(body),
        "wsgi.errors": io.StringIO(),
        "wsgi.multithread": True,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
    }
    if body or method == "POST":
        environ["CONTENT_LENGTH"] = str(len(body))
        environ["CONTENT_TYPE"] = "application/octet-stream"
    environ.update(headers or {})
    captured = {}

    def start_response(status, response_headers, exc_info=None):
        captured["status"] = status
        captured["headers"] = dict(response_headers)
        return lambda data: None

    wrapped = wsgiref.validate.validator(app) if validate else app
    iterable = wrapped(environ, start_response)
    try:
        text = b"".join(iterable).decode()
    finally:
        getattr(iterable, "close", lambda: None)()
    return int(captured["status"][:3]), captured["headers"], text


def signed_call(services, function, *args, **kwargs):
    body, _ = payload.PayloadCodec(services).seal(payload.dumps(function, args, kwargs))
    return body


def sentinel_body(services):
    """A valid call whose unpickling leaves a mark in fx.unpickled."""
    pickled = pickle.dumps((fx.record, (fx.Sentinel("x"),), {}), payload.PICKLE_PROTOCOL)
    return services.signer(payload.SALT).sign(payload.INLINE + pickled), pickled


def test_success_runs_the_call(svc):
    status, headers, _ = post(DeferredApp(svc), signed_call(svc, fx.record, 1, a=2))
    assert status == 200
    assert headers["X-Task-Outcome"] == "success"
    assert fx.calls == [((1,), {"a": 2})]


def test_the_sentinel_works_on_a_genuine_body(svc):
    body, _ = sentinel_body(svc)
    assert post(DeferredApp(svc), body)[0] == 200
    assert fx.unpickled == ["x"]  # so its absence below means nothing was unpickled


def _forgeries(svc, tmp_path):
    body, pickled = sentinel_body(svc)
    flipped = bytearray(body)
    flipped[len(pickled) // 2] ^= 0x01
    other = Services(secret_key="wrong-key-signing-key-for-the-test-suite", data_dir=str(tmp_path), environ={})
    wrong_key = other.signer(payload.SALT).sign(payload.INLINE + pickled)
    wrong_salt = svc.signer("another.purpose").sign(payload.INLINE + pickled)
    return {
        "flipped byte": (bytes(flipped), 403),
        "unsigned pickle": (pickled, 403),
        "pickle without its marker": (payload.INLINE + pickled, 403),
        "wrong key": (wrong_key, 403),
        "wrong salt": (wrong_salt, 403),
        "truncated body": (body[:-5], 403),
        "signature only": (body[len(pickled) + 1:], 403),
        "no signature at all": (b"P" + b"x" * 40, 400),
        "empty body": (b"", 400),
    }


def test_forged_payloads_are_refused_before_unpickling(svc, tmp_path):
    app = DeferredApp(svc)
    for what, (body, expected) in _forgeries(svc, tmp_path).items():
        status, headers, _ = post(app, body)
        assert status == expected, what
        assert headers.get("X-Task-Outcome") == "refused", what
    assert fx.unpickled == []
    assert fx.calls == []


def test_rotated_keys_still_verify(svc, tmp_path):
    body = signed_call(svc, fx.record, "old key")
    rotated = Services(secret_key="newer-key-signing-key-for-the-test-suite,right-key-signing-key-for-the-test-suite", data_dir=str(tmp_path), environ={})
    assert post(DeferredApp(rotated), body)[0] == 200
    assert fx.calls == [(("old key",), {})]


def test_only_post(svc):
    app = DeferredApp(svc)
    for method in ("GET", "HEAD", "PUT", "DELETE"):
        status, headers, _ = post(app, b"", method=method)
        assert status == 405
        assert headers["Allow"] == "POST"


def test_missing_content_length_is_malformed(svc):
    app = DeferredApp(svc)
    environ_body = signed_call(svc, fx.record, 1)
    status, _, _ = post(app, environ_body, headers={"CONTENT_LENGTH": ""}, validate=False)
    assert status == 400
    assert fx.calls == []


def test_digit_like_numbers_in_headers_are_answered_not_raised(svc):
    # "\xb2" (superscript two, a latin-1 header byte) passes str.isdigit but not int().
    app = DeferredApp(svc)
    body = signed_call(svc, fx.record, 1)
    status, _, _ = post(app, body, headers={"CONTENT_LENGTH": "\xb2"}, validate=False)
    assert status == 400
    assert fx.calls == []
    forged, _ = sentinel_body(Services(secret_key="wrong-key-signing-key-for-the-test-suite", data_dir=svc.data_dir, environ={}))
    assert post(app, forged, headers={"HTTP_X_APPENGINE_TASKRETRYCOUNT": "\xb2"})[0] == 403
    assert fx.unpickled == []
    assert post(app, body, headers={"HTTP_X_APPENGINE_TASKRETRYCOUNT": "\xb2"})[0] == 200
    assert fx.calls == [((1,), {})]


def test_app_engine_requires_the_task_header(svc):
    app = DeferredApp(svc, require_task_header=True)
    body = signed_call(svc, fx.record, 1)
    assert post(app, body)[0] == 403
    assert fx.calls == []
    assert post(app, body, {"HTTP_X_APPENGINE_TASKNAME": "t1"})[0] == 200
    assert fx.calls == [((1,), {})]


def test_on_app_engine_the_header_is_required_by_default(tmp_path):
    env = {"GAE_ENV": "standard", "GAE_SERVICE": "default", "GAE_INSTANCE": "i"}
    on_gae = Services(secret_key="k-signing-key-for-the-test-suite", data_dir=str(tmp_path), environ=env)
    assert DeferredApp(on_gae).require_task_header
    assert not DeferredApp(Services(secret_key="k-signing-key-for-the-test-suite", data_dir=str(tmp_path), environ={})).require_task_header


def test_permanent_failure_is_200_and_recorded(svc, caplog):
    status, headers, text = post(DeferredApp(svc), signed_call(svc, fx.fail_permanently, "bad input"))
    assert status == 200
    assert headers["X-Task-Outcome"] == "permanent-failure"
    assert "bad input" in text


def test_singular_failure_is_408(svc):
    body = signed_call(svc, fx.fail_once_singular, "s")
    status, headers, _ = post(DeferredApp(svc), body, {"HTTP_X_APPENGINE_TASKRETRYCOUNT": "0"})
    assert (status, headers["X-Task-Outcome"]) == (408, "retry")
    assert post(DeferredApp(svc), body, {"HTTP_X_APPENGINE_TASKRETRYCOUNT": "1"})[0] == 200
    assert fx.calls == [("s", 1), ("s", 2)]


def test_other_exceptions_are_500_with_traceback_logged(svc, caplog):
    with caplog.at_level(logging.ERROR, "gaeservices.tasks"):
        status, headers, _ = post(DeferredApp(svc), signed_call(svc, fx.always_fails, "x"))
    assert (status, headers["X-Task-Outcome"]) == (500, "retry")
    assert "RuntimeError: boom x" in caplog.text
    assert "Traceback" in caplog.text


def test_a_callable_that_cannot_be_imported_is_a_permanent_failure(svc):
    # As if the module had been deleted after the task was queued.
    pickled = pickle.dumps((fx.record, (), {}), payload.PICKLE_PROTOCOL).replace(
        b"tasks_fixtures", b"tasks_fixturez"
    )
    body = svc.signer(payload.SALT).sign(payload.INLINE + pickled)
    app = DeferredApp(svc)
    result = app.execute(body, fx_context())
    assert (result.status, result.outcome) == (200, "permanent-failure")
    assert isinstance(result.exception, ModuleNotFoundError)
    assert "No module named 'tasks_fixturez'" in result.error
    status, headers, text = post(app, body)
    assert (status, headers["X-Task-Outcome"]) == (200, "permanent-failure")
    assert "tasks_fixturez" in text


def fx_context():
    from gaeservices.tasks.context import TaskContext

    return TaskContext("t", "default", 1)


def test_the_task_reads_its_context(svc):
    headers = {
        "HTTP_X_APPENGINE_TASKNAME": "task-7",
        "HTTP_X_APPENGINE_QUEUENAME": "mail",
        "HTTP_X_APPENGINE_TASKRETRYCOUNT": "2",
    }
    assert post(DeferredApp(svc), signed_call(svc, fx.record_context, "c"), headers)[0] == 200
    assert fx.calls == [("c", "task-7", "mail", 3, 2)]
    from gaeservices.tasks import current_task

    assert current_task() is None  # reset after the task


def test_bootstrap_runs_once_under_concurrent_first_requests(tmp_path):
    svc = Services(
        secret_key="k-signing-key-for-the-test-suite", data_dir=str(tmp_path), environ={}, bootstrap="tasks_fixtures:slow_bootstrap"
    )
    body = signed_call(svc, fx.record, "after bootstrap")
    apps = [DeferredApp(svc), DeferredApp(svc)]  # two endpoints, one process: still once
    barrier = threading.Barrier(8)
    statuses = []

    def hit(i):
        barrier.wait()
        statuses.append(post(apps[i % 2], body)[0])

    threads = [threading.Thread(target=hit, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert statuses == [200] * 8
    assert len(fx.bootstrap_runs) == 1
    assert len(fx.calls) == 8


def test_a_failing_bootstrap_answers_500_and_is_tried_again(tmp_path, caplog):
    svc = Services(
        secret_key="k-signing-key-for-the-test-suite", data_dir=str(tmp_path), environ={}, bootstrap="tasks_fixtures:flaky_bootstrap"
    )
    app = DeferredApp(svc)
    body = signed_call(svc, fx.record, 1)
    fx.flaky_state["fail"] = True
    try:
        with caplog.at_level(logging.ERROR, "gaeservices.tasks"):
            status, headers, _ = post(app, body)
        assert (status, headers["X-Task-Outcome"]) == (500, "retry")
        assert "database not ready" in caplog.text
        assert fx.calls == []  # the task did not run without its bootstrap
        fx.flaky_state["fail"] = False
        assert post(app, body)[0] == 200
        assert post(app, body)[0] == 200
        assert fx.bootstrap_runs == [1, 1]  # failed once, then succeeded once
    finally:
        fx.flaky_state["fail"] = True


def test_django_settings_module_means_django_setup(tmp_path):
    svc = Services(secret_key="k-signing-key-for-the-test-suite", data_dir=str(tmp_path), environ={"DJANGO_SETTINGS_MODULE": "x.settings"})
    assert "django.setup()" in DeferredApp(svc).bootstrap.description
    plain = Services(secret_key="k-signing-key-for-the-test-suite", data_dir=str(tmp_path), environ={})
    assert DeferredApp(plain).bootstrap.done  # nothing to run


def test_wsgi_validator_on_every_answer(svc, tmp_path):
    app = DeferredApp(svc)
    post(app, signed_call(svc, fx.record, 1))
    post(app, signed_call(svc, fx.always_fails, 1))
    post(app, signed_call(svc, fx.fail_once_singular, 1))
    post(app, signed_call(svc, fx.fail_permanently, 1))
    post(app, b"", method="GET")
    for body, _ in _forgeries(svc, tmp_path).values():
        post(app, body)


def test_wsgi_deferred_module_exposes_an_application(monkeypatch, tmp_path):
    monkeypatch.setenv("GAESERVICES_SECRET_KEY", "right-key-signing-key-for-the-test-suite")
    monkeypatch.setenv("GAESERVICES_DATA_DIR", str(tmp_path))
    from gaeservices.config import set_services

    previous = set_services(None)
    try:
        import importlib
        import sys

        sys.modules.pop("wsgi.deferred", None)
        module = importlib.import_module("wsgi.deferred")
        assert isinstance(module.application, DeferredApp)
        svc = Services(secret_key="right-key-signing-key-for-the-test-suite", data_dir=str(tmp_path), environ={})
        assert post(module.application, signed_call(svc, fx.record, "wsgi"))[0] == 200
        assert fx.calls == [(("wsgi",), {})]
    finally:
        set_services(previous)
