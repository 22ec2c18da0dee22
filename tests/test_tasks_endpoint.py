"""DeferredApp: authentication before deserialization, outcomes, bootstrap, PEP 3333."""

from __future__ import annotations

import io
import logging
import pickle
import sqlite3
import threading
import time
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


class Signed(bytes):
    """A task body that knows the task name it is signed for (post() sends it)."""

    task_name = ""


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
    if getattr(body, "task_name", ""):
        environ["HTTP_X_APPENGINE_TASKNAME"] = body.task_name
    environ.update(headers or {})
    environ = {k: v for k, v in environ.items() if v is not None}  # None: leave the header out
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


def seal(services, pickled, *, name=None, queue="default", expires=None, named=False, max_size=None):
    name = payload.new_task_name() if name is None else name
    expires = time.time() + 3600 if expires is None else expires
    body, _ = payload.PayloadCodec(services).seal(
        pickled, name=name, queue=queue, expires=expires, named=named, max_size=max_size
    )
    signed = Signed(body)
    signed.task_name = name
    return signed


def signed_call(services, function, *args, _name=None, _queue="default", _named=False, _expires=None, **kwargs):
    """A body for ``function(*args, **kwargs)``, signed for a task of its own."""
    return seal(
        services, payload.dumps(function, args, kwargs), name=_name, queue=_queue, expires=_expires, named=_named
    )


def sentinel_body(services, **binding):
    """A valid call whose unpickling leaves a mark in fx.unpickled."""
    pickled = pickle.dumps((fx.record, (fx.Sentinel("x"),), {}), payload.PICKLE_PROTOCOL)
    return seal(services, pickled, **binding), pickled


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
    body, pickled = sentinel_body(svc, name="t-1")
    flipped = bytearray(body)
    flipped[len(body) // 2] ^= 0x01
    other = Services(secret_key="wrong-key-signing-key-for-the-test-suite", data_dir=str(tmp_path), environ={})
    wrong_key = sentinel_body(other, name="t-1")[0]
    header = bytes(body).split(payload.INLINE, 1)[0]
    wrong_salt = svc.signer("another.purpose").sign(header + payload.INLINE + pickled)
    first_format = svc.signer(payload.SALT).sign(payload.INLINE + pickled)  # not bound to a task
    return {
        "flipped byte": (bytes(flipped), 403),
        "unsigned pickle": (pickled, 403),
        "pickle without its envelope": (payload.INLINE + pickled, 403),
        "wrong key": (wrong_key, 403),
        "wrong salt": (wrong_salt, 403),
        "truncated body": (bytes(body)[:-5], 403),
        "signature only": (bytes(body)[len(body) - 43:], 400),
        "no signature at all": (b"P" + b"x" * 40, 400),
        "empty body": (b"", 400),
        "first payload format, signed but unbound": (first_format, 400),
        "signed for another task name": (sentinel_body(svc, name="t-2")[0], 403),
        "signed for another queue": (sentinel_body(svc, name="t-1", queue="mail")[0], 403),
        "signed without a name, off App Engine": (sentinel_body(svc, name="")[0], 403),
    }


def test_forged_payloads_are_refused_before_unpickling(svc, tmp_path):
    app = DeferredApp(svc)
    for what, (body, expected) in _forgeries(svc, tmp_path).items():
        status, headers, _ = post(
            app, body, {"HTTP_X_APPENGINE_TASKNAME": "t-1", "HTTP_X_APPENGINE_QUEUENAME": "default"}
        )
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
    body = signed_call(svc, fx.record, 1, _name="t1")
    assert post(app, body, {"HTTP_X_APPENGINE_TASKNAME": None})[0] == 403
    assert fx.calls == []
    assert post(app, body, {"HTTP_X_APPENGINE_TASKNAME": "t1"})[0] == 200
    assert fx.calls == [((1,), {})]
    # App Engine names transactional tasks itself: their bodies carry no name,
    # and run where the platform's header vouches for the request
    unnamed = signed_call(svc, fx.record, 2, _name="")
    assert post(app, unnamed, {"HTTP_X_APPENGINE_TASKNAME": "12345678901234567"})[0] == 200
    assert fx.calls[-1] == ((2,), {})


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
    body = seal(svc, pickled, name="t")
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
    body = signed_call(svc, fx.record_context, "c", _name="task-7", _queue="mail")
    assert post(DeferredApp(svc), body, headers)[0] == 200
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


# --- a body is bound to its task, its expiry, and runs once --------------------


def test_a_replayed_body_of_a_named_task_does_not_run_again(svc):
    app = DeferredApp(svc, require_task_header=True)  # as on App Engine: tombstones for named tasks
    body = signed_call(svc, fx.record, "once", _name="nightly-report", _named=True)
    statuses = [post(app, body)[0] for _ in range(3)]
    assert statuses == [200, 200, 200]
    assert fx.calls == [(("once",), {})]
    # the tombstone is in the store: another process (a new endpoint) sees it too
    assert post(DeferredApp(svc, require_task_header=True), body)[0] == 200
    assert fx.calls == [(("once",), {})]


def test_off_app_engine_no_body_runs_twice_over_http(svc):
    app = DeferredApp(svc)  # off App Engine: whoever reaches the endpoint could replay
    assert app.tombstones == "all"
    body = signed_call(svc, fx.record, "unnamed")
    for _ in range(3):
        status, headers, text = post(app, body)
        assert (status, headers["X-Task-Outcome"]) == (200, "success")
    assert fx.calls == [(("unnamed",), {})]


def test_a_failed_delivery_leaves_no_tombstone_so_the_retry_runs(svc):
    app = DeferredApp(svc)
    body = signed_call(svc, fx.fail_until, 2, "retried", _name="retried-task", _named=True)
    assert post(app, body, {"HTTP_X_APPENGINE_TASKRETRYCOUNT": "0"})[0] == 500
    assert post(app, body, {"HTTP_X_APPENGINE_TASKRETRYCOUNT": "1"})[0] == 200
    assert post(app, body, {"HTTP_X_APPENGINE_TASKRETRYCOUNT": "2"})[0] == 200
    assert fx.calls == [("retried", 1), ("retried", 2)]


def test_on_app_engine_unnamed_tasks_leave_no_tombstone(svc):
    """There the platform's headers are the gate; a store write per task is not paid."""
    app = DeferredApp(svc, require_task_header=True)
    assert app.tombstones == "named"
    body = signed_call(svc, fx.record, "platform")
    assert [post(app, body)[0] for _ in range(2)] == [200, 200]
    assert len(fx.calls) == 2
    assert svc.store.get(payload.PayloadCodec(svc).open(body).tombstone_key) is None


def test_the_name_header_must_be_the_signed_name(svc):
    app = DeferredApp(svc)
    body = signed_call(svc, fx.record, 1, _name="invoice-42")
    for header in (None, "", "invoice-43", "invoice-42 ", "INVOICE-42"):
        status, headers, text = post(app, body, {"HTTP_X_APPENGINE_TASKNAME": header})
        assert (status, headers["X-Task-Outcome"]) == (403, "refused"), header
    assert "signed for task 'invoice-42'" in text
    assert fx.calls == []
    assert post(app, body, {"HTTP_X_APPENGINE_TASKNAME": "invoice-42"})[0] == 200


def test_an_expired_body_is_not_run_and_not_retried(svc):
    body, _ = sentinel_body(svc, name="old", expires=time.time() - 1)
    status, headers, text = post(DeferredApp(svc), body)
    assert (status, headers["X-Task-Outcome"]) == (200, "permanent-failure")  # 200: the queue drops it
    assert "expired" in text
    assert fx.unpickled == [] and fx.calls == []


def test_the_body_expires_after_its_eta_plus_the_lifetime(svc, tmp_path):
    from gaeservices import defer

    local = Services(secret_key="k-signing-key-for-the-test-suite", data_dir=str(tmp_path), environ={}, queue="local://", store=f"sqlite:///{tmp_path}/q.db")
    try:
        handle = defer(fx.record, 1, _countdown=100, _services=local)
        queue = local.queue
        with queue.engine.connect() as conn:
            body = conn.execute(queue.table.select().where(queue.table.c.name == handle.name)).one().body
        envelope = payload.PayloadCodec(local).open(body)
        assert (envelope.name, envelope.queue, envelope.named) == (handle.name, "default", False)
        assert envelope.expires == pytest.approx(handle.eta.timestamp() + payload.DEFAULT_LIFETIME, abs=2)
        # a task allowed to retry for longer than the lifetime keeps its body valid that long
        defer(fx.record, 2, _name="kept", _retry_options={"task_age_limit": 90 * 86400}, _services=local)
        with queue.engine.connect() as conn:
            body = conn.execute(queue.table.select().where(queue.table.c.name == "kept")).one().body
        envelope = payload.PayloadCodec(local).open(body)
        assert envelope.named and envelope.expires >= time.time() + 90 * 86400
    finally:
        local.close()


# --- what an unauthenticated client can make the endpoint do ---------------------


class CountingInput(io.RawIOBase):
    """A request body that counts what the application reads of it."""

    def __init__(self, size):
        self.size = size
        self.consumed = 0

    def read(self, n=-1):
        n = self.size - self.consumed if n is None or n < 0 else min(n, self.size - self.consumed)
        self.consumed += n
        return b"x" * n

    def readline(self, *args):
        return self.read(*args)


def test_what_is_read_before_verification_is_bounded_by_the_inline_limit(svc):
    app = DeferredApp(svc)
    from gaeservices.tasks.local import DEFAULT_MAX_PAYLOAD

    assert app.max_body == DEFAULT_MAX_PAYLOAD + payload.MAX_ENVELOPE
    for size in (app.max_body + 1, 32 * 1024 * 1024):
        stream = CountingInput(size)
        status, _, _ = post(app, b"", {"CONTENT_LENGTH": str(size), "wsgi.input": stream}, validate=False)
        assert status == 413
        assert stream.consumed == 0
    stream = CountingInput(app.max_body)
    status, _, _ = post(app, b"", {"CONTENT_LENGTH": str(app.max_body), "wsgi.input": stream}, validate=False)
    assert status == 400 and stream.consumed == app.max_body  # read, then refused: unsigned


def test_the_bound_follows_the_queue_backend_limit(tmp_path):
    svc = Services(secret_key="k-signing-key-for-the-test-suite", data_dir=str(tmp_path), environ={}, queue="local://?max_payload=2048", store=f"sqlite:///{tmp_path}/s.db")
    try:
        assert DeferredApp(svc).max_body == 2048 + payload.MAX_ENVELOPE
        # a call just under the inline limit travels inline and is accepted
        from gaeservices import defer

        handle = defer(fx.record, "x" * 1900, _name="n" * 500, _services=svc)
        with svc.queue.engine.connect() as conn:
            body = conn.execute(svc.queue.table.select().where(svc.queue.table.c.name == handle.name)).one().body
        assert payload.PayloadCodec(svc).open(body).stored_key is None
        assert len(body) <= DeferredApp(svc).max_body
        status, _, _ = post(DeferredApp(svc), body, {"HTTP_X_APPENGINE_TASKNAME": handle.name})
        assert status == 200
    finally:
        svc.close()


def test_a_huge_retry_count_header_is_answered_not_raised(svc):
    body = signed_call(svc, fx.record_context, "nines", _name="t9")
    headers = {"HTTP_X_APPENGINE_TASKRETRYCOUNT": "9" * 5000, "HTTP_X_APPENGINE_TASKETA": "9" * 5000}
    status, _, _ = post(DeferredApp(svc), body, headers)
    assert status == 200
    assert fx.calls == [("nines", "t9", "default", 1, 0)]


# --- the SDK's failure classes, whatever the import order ------------------------


SDK_FAILURE_SCRIPT = r"""
import io, json, sys
assert "google.appengine.ext.deferred" not in sys.modules
from gaeservices.wsgi.deferred import application      # the shipped WSGI module, built first
assert "google.appengine.ext.deferred" not in sys.modules
from gaeservices.tasks import payload
import tasks_fixtures as fx
codec = payload.PayloadCodec(application.services)
answers = []
for function in (fx.raise_sdk_permanent_failure, fx.raise_sdk_singular_failure):
    name = payload.new_task_name()
    body, _ = codec.seal(payload.dumps(function, ("x",), {}), name=name, queue="default", expires=2e9)
    environ = {"REQUEST_METHOD": "POST", "CONTENT_LENGTH": str(len(body)), "wsgi.input": io.BytesIO(body),
               "HTTP_X_APPENGINE_TASKNAME": name}
    status = []
    b"".join(application(environ, lambda s, h, e=None: status.append((s, dict(h)))))
    answers.append([status[0][0], status[0][1]["X-Task-Outcome"]])
print(json.dumps(answers))
"""


def test_sdk_failures_keep_their_meaning_whatever_was_imported_first(tmp_path):
    import json
    import os
    import subprocess
    import sys

    tests_dir = os.path.dirname(os.path.abspath(__file__))
    env = dict(
        os.environ,
        PYTHONPATH=tests_dir,
        GAESERVICES_SECRET_KEY="k-signing-key-for-the-test-suite",
        GAESERVICES_DATA_DIR=str(tmp_path),
    )
    done = subprocess.run(
        [sys.executable, "-c", SDK_FAILURE_SCRIPT], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    answers = json.loads(done.stdout.strip().splitlines()[-1])
    assert answers == [["200 OK", "permanent-failure"], ["408 Request Timeout", "retry"]]


def test_a_stored_payload_is_bound_to_its_reference(svc):
    codec = payload.PayloadCodec(svc)
    small = payload.dumps(fx.record, ("a",), {})
    first, first_key = codec.seal(small, name="a", queue="default", expires=time.time() + 60, max_size=10)
    second, second_key = codec.seal(
        payload.dumps(fx.record, ("b",), {}), name="b", queue="default", expires=time.time() + 60, max_size=10
    )
    assert first_key and second_key
    svc.store.put(second_key, svc.store.get(first_key))  # swap a's stored call in under b's key
    status, headers, _ = post(DeferredApp(svc), second, {"HTTP_X_APPENGINE_TASKNAME": "b"})
    assert (status, headers["X-Task-Outcome"]) == (403, "refused")
    assert fx.calls == []
    assert post(DeferredApp(svc), first, {"HTTP_X_APPENGINE_TASKNAME": "a"})[0] == 200
    assert fx.calls == [(("a",), {})]


def test_a_store_fault_is_reported_as_one_and_retried(svc, tmp_path, caplog):
    app = DeferredApp(svc)
    inline = signed_call(svc, fx.record, "inline")  # off App Engine: its tombstone is read first
    stored = seal(svc, payload.dumps(fx.record, ("stored",), {}), max_size=10)
    assert payload.PayloadCodec(svc).open(stored).stored_key is not None
    table = svc.store.table.name
    with sqlite3.connect(tmp_path / "s.db") as db:  # the store's database loses its table
        db.execute(f"DROP TABLE {table}")
    without_tombstones = DeferredApp(svc, tombstones="named")  # so the stored payload is read first
    for app, body, where in ((app, inline, "tombstone"), (without_tombstones, stored, "stored payload")):
        caplog.clear()
        with caplog.at_level(logging.ERROR, "gaeservices.tasks"):
            status, headers, _ = post(app, body)
        assert (status, headers["X-Task-Outcome"]) == (500, "retry")
        assert f"cannot read its {where}" in caplog.text and "StoreError" in caplog.text
    assert fx.calls == []


def test_a_bug_on_the_store_path_surfaces_and_is_not_called_a_store_fault(tmp_path):
    from gaeservices.tasks.context import TaskContext

    real = Services(secret_key="right-key-signing-key-for-the-test-suite", data_dir=str(tmp_path), environ={},
                    store=f"sqlite:///{tmp_path}/s.db")
    svc = Services(secret_key="right-key-signing-key-for-the-test-suite", data_dir=str(tmp_path), environ={},
                   store=fx.BuggyStore(real.store))
    try:
        stored = seal(svc, payload.dumps(fx.record, (2,), {}), max_size=10)
        # reading the tombstone, then (without one) the stored payload
        for body, tombstone in ((signed_call(svc, fx.record, 1), True), (stored, False)):
            with pytest.raises(TypeError, match="a bug on the store path"):
                DeferredApp(svc).execute(body, TaskContext(body.task_name, "default", 1, None), tombstone=tombstone)
        assert fx.calls == []
    finally:
        svc.close()
        real.close()
