"""The demo's files page: upload, list, download inline and as attachment, behind the middleware."""

from __future__ import annotations

import re

from webob import Request

import gaeservices.demo.files as files
from gaeservices.demo.app import Router


def test_demo_round_trip(services):
    app = files.wrap(Router([(files.PREFIX, files.TITLE, files.make_app(services))]), services)
    form = Request.blank("/files/").get_response(app)
    token = re.search(r'name="gaeservices_upload_token" value="([^"]+)"', form.text).group(1)
    body = (b'--b\r\nContent-Disposition: form-data; name="gaeservices_upload_token"\r\n\r\n' + token.encode()
            + b'\r\n--b\r\nContent-Disposition: form-data; name="file"; filename="h\xc3\xa9llo.txt"\r\n'
            b"Content-Type: text/plain\r\n\r\nhello demo\r\n--b--\r\n")

    def upload():
        return Request.blank("/files/upload", method="POST", body=body,
                             content_type="multipart/form-data; boundary=b").get_response(app)

    assert upload().status_code == 303
    assert upload().status_code == 403  # the form's token is spent
    listing = Request.blank("/files/").get_response(app).text
    assert "héllo.txt" in listing
    attachment = re.search(r"href='(/files/download/attachment\?name=[^']+)'", listing).group(1)
    response = Request.blank(attachment).get_response(app)
    assert response.body == b"hello demo" and "X-Sendfile" not in response.headers
    assert response.headers["Content-Disposition"].startswith('attachment; filename="hello.txt"')
    inline = Request.blank(attachment.replace("attachment", "inline"), headers={"Range": "bytes=6-"}).get_response(app)
    assert inline.status_code == 206 and inline.body == b"demo" and "Content-Disposition" not in inline.headers
    assert Request.blank("/files/download/inline?name=../../secret_key").get_response(app).status_code == 404
