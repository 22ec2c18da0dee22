"""Fuzzing DeferredApp: no header value and no body makes it answer 500 or raise.

Every request header the endpoint reads, and the body, come from whoever can
reach the endpoint. Hypothesis varies them together: raw bytes, mutations of a
genuine body, and bodies signed with the right key whose envelope is malformed
(what the parser meets after the signature holds).
"""

from __future__ import annotations

import io
import pickle
import time

import pytest
import tasks_fixtures as fx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gaeservices import Services
from gaeservices.tasks import payload
from gaeservices.tasks.endpoint import DeferredApp

KEY = "k-signing-key-for-the-test-suite"
HEADERS = (
    "HTTP_X_APPENGINE_TASKNAME",
    "HTTP_X_APPENGINE_QUEUENAME",
    "HTTP_X_APPENGINE_TASKRETRYCOUNT",
    "HTTP_X_APPENGINE_TASKEXECUTIONCOUNT",
    "HTTP_X_APPENGINE_TASKETA",
    "CONTENT_TYPE",
)

# WSGI gives header values as latin-1 decoded str
latin1 = st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=255), max_size=80)
numbers = st.one_of(
    st.integers(min_value=-(10**20), max_value=10**20).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.integers(min_value=1, max_value=6000).map(lambda n: "9" * n),
    st.sampled_from(["", " 1", "1 ", "+1", "-0", "0x10", "1_000", "\xb2", "nan", "inf", "1e309", "9" * 5000, "1" + "0" * 4400]),
)
header_value = st.one_of(latin1, numbers, st.sampled_from(["t-1", "default", "mail"]))


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fuzz")
    services = Services(secret_key=KEY, data_dir=str(folder), environ={}, store=f"sqlite:///{folder}/s.db")
    yield DeferredApp(services)
    services.close()


def genuine(services, name="t-1", queue="default"):
    body, _ = payload.PayloadCodec(services).seal(
        payload.dumps(fx.noop, (), {}), name=name, queue=queue, expires=time.time() + 3600
    )
    return body


@st.composite
def bodies(draw, services):
    kind = draw(st.sampled_from(["raw", "mutated", "signed envelope"]))
    if kind == "raw":
        return draw(st.binary(max_size=600))
    if kind == "mutated":
        body = bytearray(genuine(services))
        for _ in range(draw(st.integers(min_value=1, max_value=4))):
            how = draw(st.sampled_from(["flip", "cut", "append", "insert"]))
            at = draw(st.integers(min_value=0, max_value=max(len(body) - 1, 0)))
            if how == "flip" and body:
                body[at] ^= draw(st.integers(min_value=1, max_value=255))
            elif how == "cut":
                del body[at:]
            elif how == "append":
                body += draw(st.binary(max_size=40))
            else:
                body[at:at] = draw(st.binary(min_size=1, max_size=10))
        return bytes(body)
    # Signed with the right key: the signature holds, the envelope may not.
    fields = draw(st.lists(st.binary(max_size=30), min_size=0, max_size=7))
    tail_kind = draw(st.sampled_from([b"P", b"R", b"S", b"X", b""]))
    if tail_kind == b"P":
        data = pickle.dumps((fx.noop, (), {}), payload.PICKLE_PROTOCOL)
    else:
        data = draw(st.binary(max_size=40))
    inner = draw(st.sampled_from([b"T", b"P", b"R", b""])) + b"\n".join(fields) + b"\n" + tail_kind + data
    return services.signer(payload.SALT).sign(inner)


def call(app, method, headers, body, length):
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
    if length is not None:
        environ["CONTENT_LENGTH"] = length
    environ.update(headers)
    answer = {}

    def start_response(status, response_headers, exc_info=None):
        answer["status"] = status
        answer["headers"] = response_headers

    b"".join(app(environ, start_response))
    return int(answer["status"][:3]), dict(answer["headers"])


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_no_request_makes_the_endpoint_fail(app, data):
    services = app.services
    body = data.draw(st.one_of(bodies(services), st.just(genuine(services))), label="body")
    headers = data.draw(st.dictionaries(st.sampled_from(HEADERS), header_value, max_size=len(HEADERS)), label="headers")
    length = data.draw(
        st.one_of(st.just(str(len(body))), st.none(), header_value), label="content-length"
    )
    method = data.draw(st.sampled_from(["POST", "POST", "POST", "GET", "PUT", "post"]), label="method")
    status, response_headers = call(app, method, headers, body, length)
    assert status != 500, (status, response_headers)
    assert status in (200, 400, 403, 405, 408, 413)
    assert fx.unpickled == []


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(headers=st.dictionaries(st.sampled_from(HEADERS[2:]), header_value, max_size=4))
def test_a_genuine_body_runs_whatever_the_other_headers_say(app, headers):
    """Only the name and queue headers decide; the rest never makes a genuine task fail."""
    name = payload.new_task_name()
    body = genuine(app.services, name=name)
    headers = dict(headers, HTTP_X_APPENGINE_TASKNAME=name, HTTP_X_APPENGINE_QUEUENAME="default")
    status, response_headers = call(app, "POST", headers, body, str(len(body)))
    assert (status, response_headers["X-Task-Outcome"]) == (200, "success")
