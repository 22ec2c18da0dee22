"""Precise errors: each exception is what its callers catch, and nothing else is caught."""

from __future__ import annotations

import logging
import os
import sys

import pytest
from itsdangerous import BadSignature
from webob import Request

from gaeservices import BackendUnavailableError, Services, UploadRejectedError
from gaeservices.filetransfers import prepare_upload, uploaded_files
from gaeservices.sessions import SessionMiddleware

KEY = "k-signing-key-for-the-test-suite"


@pytest.fixture
def without_sqlalchemy(monkeypatch):
    """This process as if the `sql` extra were not installed."""
    monkeypatch.setitem(sys.modules, "sqlalchemy", None)  # `import sqlalchemy` raises ImportError
    for name in [m for m in sys.modules if m.startswith("gaeservices.store.") or m.startswith("gaeservices.tasks.local")]:
        monkeypatch.delitem(sys.modules, name)


def test_a_missing_driver_is_a_backend_unavailable_error_and_an_import_error(without_sqlalchemy, tmp_path):
    services = Services(environ={}, secret_key=KEY, data_dir=str(tmp_path))
    with pytest.raises(ImportError) as caught:
        services.store
    assert isinstance(caught.value, BackendUnavailableError)
    assert caught.value.name == "sqlalchemy"
    assert "pip install 'gaeservices[sql]'" in str(caught.value)


def test_a_driver_a_backend_imports_when_built_names_the_extra_too(without_sqlalchemy, tmp_path):
    # local:// imports SQLAlchemy only when it builds its engine, not at import.
    services = Services(environ={}, secret_key=KEY, data_dir=str(tmp_path))
    with pytest.raises(BackendUnavailableError, match=r"pip install 'gaeservices\[sql\]'") as caught:
        services.queue
    assert caught.value.name == "sqlalchemy"
    assert isinstance(caught.value.__cause__, ImportError)


def _upload(path: str, fields: dict[str, str]) -> Request:
    boundary = "----b"
    body = b"".join(
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
        for name, value in fields.items()
    )
    body += (
        f'--{boundary}\r\nContent-Disposition: form-data; name="f"; filename="a.txt"\r\n'
        f"Content-Type: text/plain\r\n\r\nmine\r\n--{boundary}--\r\n"
    ).encode()
    return Request.blank(path, method="POST", body=body, content_type=f"multipart/form-data; boundary={boundary}")


def test_private_upload_tokens_fall_back_to_files_without_a_store_driver(without_sqlalchemy, tmp_path):
    # docs/filetransfers.md: without a store, single use is kept by files under the
    # data dir. The store's BackendUnavailableError must reach that fallback.
    services = Services(environ={}, secret_key=KEY, data_dir=str(tmp_path))
    url, data = prepare_upload(Request.blank("/"), "/done", private=True, services=services)
    (uploaded,) = uploaded_files(_upload(url, data), private=True, services=services)
    assert open(uploaded.path, "rb").read() == b"mine"
    assert len(os.listdir(tmp_path / "upload-tokens")) == 1
    with pytest.raises(UploadRejectedError, match="already used"):
        uploaded_files(_upload(url, data), private=True, services=services)


def _app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"new" if environ["gaeservices.session"].is_new else b"known"]


def _session_request(middleware: SessionMiddleware, cookie: str) -> str:
    environ = {
        "REQUEST_METHOD": "GET", "PATH_INFO": "/", "SERVER_NAME": "x", "SERVER_PORT": "80",
        "wsgi.url_scheme": "http", "HTTP_COOKIE": f"gaesession={cookie}",
    }
    return b"".join(middleware(environ, lambda status, headers, exc_info=None: None)).decode()


def test_a_bad_session_signature_is_a_fresh_session(services, caplog):
    middleware = SessionMiddleware(_app, services=services)
    with caplog.at_level(logging.DEBUG, logger="gaeservices.sessions"):
        assert _session_request(middleware, "abcdefghijklmnopqrstuvwx.forged") == "new"
    assert "bad signature" in caplog.text


def test_a_failure_that_is_not_a_bad_signature_is_not_taken_for_a_forged_cookie(services, monkeypatch):
    # Only itsdangerous.BadSignature means "forged"; anything else is a fault to see.
    middleware = SessionMiddleware(_app, services=services)

    def broken(value: str | bytes) -> bytes:
        raise RuntimeError("the key material is unreadable")

    monkeypatch.setattr(middleware.signer, "unsign", broken)
    with pytest.raises(RuntimeError, match="unreadable"):
        _session_request(middleware, "abcdefghijklmnopqrstuvwx.sig")
    monkeypatch.undo()
    with pytest.raises(BadSignature):  # what the middleware does catch
        middleware.signer.unsign("abcdefghijklmnopqrstuvwx.sig")
