"""The demo's files page: upload, list, download inline and as attachment, on the configured backend."""

from __future__ import annotations

import html
import os
import re

import pytest
from webob import Request

import gaeservices.demo.files as files
from gaeservices.config import Services
from gaeservices.demo.app import Router


def demo(services):
    return Router([(files.PREFIX, files.TITLE, files.make_app(services))])


def upload_body(filename: bytes, content: bytes, content_type: bytes = b"text/plain") -> bytes:
    return (b'--b\r\nContent-Disposition: form-data; name="file"; filename="' + filename + b'"\r\n'
            b"Content-Type: " + content_type + b"\r\n\r\n" + content + b"\r\n--b--\r\n")


def upload_action(app) -> str:
    form = Request.blank("/files/").get_response(app)
    action = html.unescape(re.search(r"action='([^']+)'", form.text).group(1))
    assert "gaeservices_upload_token=" in action
    return action


def post(app, action, body):
    return Request.blank(action, method="POST", body=body,
                         content_type="multipart/form-data; boundary=b").get_response(app)


def test_demo_round_trip(services):
    app = demo(services)
    action = upload_action(app)
    body = upload_body("héllo.txt".encode(), b"hello demo")
    assert post(app, action, body).status_code == 303
    assert post(app, action, body).status_code == 403  # the form's token is spent
    listing = Request.blank("/files/").get_response(app).text
    assert "héllo.txt" in listing
    attachment = re.search(r"href='(/files/download/attachment\?name=[^']+)'", listing).group(1)
    response = Request.blank(attachment).get_response(app)
    assert response.body == b"hello demo" and "X-Sendfile" not in response.headers
    assert response.headers["Content-Disposition"].startswith('attachment; filename="hello.txt"')
    inline = Request.blank(attachment.replace("attachment", "inline"), headers={"Range": "bytes=6-"}).get_response(app)
    assert inline.status_code == 206 and inline.body == b"demo" and "Content-Disposition" not in inline.headers
    assert inline.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert Request.blank("/files/download/inline?name=../../secret_key").get_response(app).status_code == 404


def test_an_uploaded_page_is_never_shown_as_one(services):
    app = demo(services)
    post(app, upload_action(app), upload_body(b"x.txt", b"<script>alert(1)</script>", b"text/html"))
    listing = Request.blank("/files/").get_response(app).text
    inline = re.search(r"href='(/files/download/inline\?name=[^']+)'", listing).group(1)
    response = Request.blank(inline).get_response(app)
    assert response.headers["Content-Type"] == "application/octet-stream"
    assert response.headers["Content-Disposition"].startswith("attachment")
    assert response.headers["Content-Security-Policy"] == "sandbox"


@pytest.mark.parametrize("serve, header", [("xsendfile", "X-Sendfile"), ("xaccel", "X-Accel-Redirect")])
def test_demo_honours_the_configured_backend(tmp_path, serve, header):
    # It used to wrap itself in XSendfileMiddleware, which swallowed the header a
    # front server needs.
    services = Services(secret_key="k-signing-key-for-the-test-suite", data_dir=str(tmp_path),
                        environ={"GAESERVICES_FILES_SERVE": serve})
    from gaeservices.demo.app import make_app

    app = make_app(services)
    assert post(app, upload_action(app), upload_body(b"a.txt", b"front")).status_code == 303
    listing = Request.blank("/files/").get_response(app).text
    link = re.search(r"href='(/files/download/inline\?name=[^']+)'", listing).group(1)
    response = Request.blank(link).get_response(app)
    assert response.status_code == 200 and response.body == b"" and header in response.headers
    services.close()


def test_demo_refuses_an_oversized_upload_with_413(tmp_path):
    services = Services(secret_key="k-signing-key-for-the-test-suite", data_dir=str(tmp_path),
                        environ={"GAESERVICES_FILES_MAX_UPLOAD_SIZE": "1000"})
    app = demo(services)
    response = post(app, upload_action(app), upload_body(b"big.bin", b"x" * 2000))
    assert response.status_code == 413
    root = os.path.join(str(tmp_path), "uploads")
    assert not os.path.exists(root) or os.listdir(root) == []
    services.close()
