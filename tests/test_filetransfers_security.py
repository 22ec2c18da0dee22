"""Traversal suite and header rules: nothing outside the root, nothing unsafe in a header."""

from __future__ import annotations

import logging
import os
from urllib.parse import unquote_to_bytes

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from webob import Request

from gaeservices.filetransfers import XSendfileMiddleware, serve_file, uploaded_files
from gaeservices.filetransfers.disposition import content_disposition

from filetransfers_helpers import call

TRAVERSALS = [
    "../secret.txt",
    "sub/../../secret.txt",
    "..",
    "/etc/passwd",
    "//etc/passwd",
    "sub/\x00.txt",
    "ok.txt\x00.png",
    "escape/secret.txt",  # a symlinked directory leading out
    "link.txt",  # a symlinked file leading out
    "",
    ".",
    "sub",  # a directory
    "missing.txt",
]


@pytest.fixture
def tree(services, tmp_path):
    root = os.path.join(services.data_dir, "uploads")
    os.makedirs(os.path.join(root, "sub"))
    with open(os.path.join(root, "ok.txt"), "w") as f:
        f.write("ok")
    with open(os.path.join(root, "sub", "inner.txt"), "w") as f:
        f.write("inner")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("secret")
    (tmp_path / "data" / "secret.txt").write_text("secret")
    os.symlink(outside, os.path.join(root, "escape"))
    os.symlink(outside / "secret.txt", os.path.join(root, "link.txt"))
    os.symlink(os.path.join(root, "ok.txt"), os.path.join(root, "inside-link.txt"))
    return root, str(outside)


@pytest.mark.parametrize("name", TRAVERSALS)
@pytest.mark.parametrize("backend", ["stream", "xsendfile", "xaccel"])
def test_traversal_is_404(services, tree, name, backend, caplog):
    request = Request.blank("/")
    with caplog.at_level(logging.WARNING, logger="gaeservices.filetransfers"):
        response = serve_file(request, name, services=services, backend=backend)
    assert response.status_code == 404
    assert b"secret" not in call(response).body
    assert "X-Sendfile" not in response.headers and "X-Accel-Redirect" not in response.headers
    if name not in ("missing.txt", "sub"):
        assert "refused to serve" in caplog.text


def test_allowed_names_are_served(services, tree):
    for name, body in [("ok.txt", b"ok"), ("sub/inner.txt", b"inner"), ("./sub//inner.txt", b"inner"),
                       ("inside-link.txt", b"ok")]:
        response = Request.blank("/").get_response(serve_file(Request.blank("/"), name, services=services))
        assert response.status_code == 200 and response.body == body, name  # a webob.Response


def test_symlink_swapped_after_first_serve_is_caught(services, tree):
    root, outside = tree
    link = os.path.join(root, "moving.txt")
    os.symlink(os.path.join(root, "ok.txt"), link)
    assert serve_file(Request.blank("/"), "moving.txt", services=services).status_code == 200
    os.unlink(link)
    os.symlink(os.path.join(outside, "secret.txt"), link)
    assert serve_file(Request.blank("/"), "moving.txt", services=services).status_code == 404


def test_remembered_target_replaced_by_a_symlink_is_caught(services, tree):
    # The name still leads to the same inode (through a hard link), but the path
    # remembered for it now is a symlink leading out of the root.
    root, outside = tree
    real = os.path.join(root, "real.txt")
    with open(real, "w") as f:
        f.write("inside")
    os.symlink(real, os.path.join(root, "via.txt"))
    response = serve_file(Request.blank("/"), "via.txt", services=services)
    assert Request.blank("/").get_response(response).body == b"inside"
    os.link(real, os.path.join(root, "keep.txt"))
    os.unlink(os.path.join(root, "via.txt"))
    os.symlink(os.path.join(root, "keep.txt"), os.path.join(root, "via.txt"))
    os.unlink(real)
    os.symlink(os.path.join(outside, "secret.txt"), real)
    for backend in ("stream", "xsendfile"):
        response = serve_file(Request.blank("/"), "via.txt", services=services, backend=backend)
        assert response.status_code in (200, 404), backend
        assert b"secret" not in Request.blank("/").get_response(response).body, backend
        assert response.headers.get("X-Sendfile") in (None, os.path.join(root, "keep.txt")), backend


def test_explicit_root(services, tree, tmp_path):
    root, outside = tree
    response = serve_file(Request.blank("/"), "secret.txt", services=services, root=outside)
    assert response.status_code == 200


@pytest.mark.parametrize("name", ["tab\there.txt", "esc\x1bhere.txt", "del\x7fhere.txt", "cr\rhere.txt",
                                  "100%25 sure.txt", "%2e%2e%2fok.txt"])
def test_x_sendfile_refuses_what_servers_read_differently(services, tree, name, caplog):
    # PEP 3333: a header value holds no control character at all, not only CR and
    # LF. And "%": Debian's mod_xsendfile reads the path raw, mod_xsendfile 1.0 and
    # lighttpd percent-decode it -- "%2e%2e%2f" would become "../".
    root, _ = tree
    with open(os.path.join(root, name), "w") as f:
        f.write("ok")
    with caplog.at_level(logging.WARNING, logger="gaeservices.filetransfers"):
        response = serve_file(Request.blank("/"), name, services=services, backend="xsendfile")
    result = call(response)  # under wsgiref.validate
    assert result.code == 404 and "X-Sendfile" not in result.headers
    assert "refused to serve" in caplog.text
    if "%" in name:  # nginx gets a URI, percent-encoded: it is served as it is
        accel = serve_file(Request.blank("/"), name, services=services, backend="xaccel")
        assert os.fsdecode(unquote_to_bytes(accel.headers["X-Accel-Redirect"][len("/protected/"):])) == name


def test_uploads_are_saved_under_names_without_percent(services):
    body = (b'--b\r\nContent-Disposition: form-data; name="f"; filename="%2e%2e%2f100%.txt"\r\n'
            b"\r\nx\r\n--b--\r\n")
    (stored,) = uploaded_files(Request.blank("/u", method="POST", body=body,
                                             content_type="multipart/form-data; boundary=b"), services=services)
    assert stored.filename == "_2e_2e_2f100_.txt"
    assert serve_file(Request.blank("/"), stored.name, services=services, backend="xsendfile").status_code == 200


# --- the middleware's roots ----------------------------------------------------------


def sendfile_app(header, value):
    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain"), (header, value)])
        return [b""]

    return app


@pytest.mark.parametrize(
    "value",
    ["{outside}/secret.txt", "{root}/../secret.txt", "{root}/link.txt", "{root}/escape/secret.txt",
     "relative/ok.txt", "{root}/ok.txt\x00"],
)
def test_middleware_refuses_x_sendfile_outside_roots(tree, value):
    root, outside = tree
    app = XSendfileMiddleware(sendfile_app("X-Sendfile", value.format(root=root, outside=outside)), roots=[root])
    result = call(app, validate=False)
    assert result.code == 404 and b"secret" not in result.body


@pytest.mark.parametrize("uri", ["/protected/../secret.txt", "/protected/%2e%2e/secret.txt", "/protected/link.txt",
                                 "/protected/escape/secret.txt", "/elsewhere/ok.txt", "/protected/%00"])
def test_middleware_refuses_x_accel_outside_locations(tree, uri):
    root, _ = tree
    app = XSendfileMiddleware(sendfile_app("X-Accel-Redirect", uri), roots=[root], locations={"/protected/": root})
    result = call(app)
    assert result.code == 404 and b"secret" not in result.body


# --- header rules -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, expected",
    [
        ("report.pdf", 'attachment; filename="report.pdf"'),
        ("naïve café.txt", "attachment; filename=\"naive cafe.txt\"; filename*=UTF-8''na%C3%AFve%20caf%C3%A9.txt"),
        ('say "hi".txt', "attachment; filename=\"say _hi_.txt\"; filename*=UTF-8''say%20%22hi%22.txt"),
        ("../../etc/passwd", 'attachment; filename="passwd"'),
        ("C:\\Users\\x\\evil.exe", 'attachment; filename="evil.exe"'),
        ("a\r\nSet-Cookie: x=1", 'attachment; filename="aSet-Cookie: x=1"'),
        ("日本語.txt", "attachment; filename=\"___.txt\"; filename*=UTF-8''%E6%97%A5%E6%9C%AC%E8%AA%9E.txt"),
        ("100%.txt", "attachment; filename=\"100_.txt\"; filename*=UTF-8''100%25.txt"),
        ("", "attachment"),
    ],
)
def test_content_disposition(name, expected):
    assert content_disposition(name) == expected


def test_inline_disposition():
    assert content_disposition("a.pdf", attachment=False) == 'inline; filename="a.pdf"'


@settings(max_examples=500, deadline=None)
@given(st.text())
def test_disposition_is_always_a_safe_header(name):
    value = content_disposition(name)
    value.encode("ascii")  # only ASCII travels
    assert not any(ord(c) < 32 or ord(c) == 127 for c in value)
    kind, _, params = value.partition(";")
    assert kind == "attachment"
    if params:
        fallback = params.split('filename="', 1)[1].split('"', 1)[0]
        assert '"' not in fallback and "\\" not in fallback
        # after the fallback's closing quote only filename* may follow
        rest = params.split('filename="', 1)[1].split('"', 1)[1]
        assert rest == "" or rest.startswith("; filename*=UTF-8''")


def test_serve_file_save_as(services, tree):
    request = Request.blank("/")
    assert "Content-Disposition" not in serve_file(request, "ok.txt", services=services).headers
    assert serve_file(request, "ok.txt", services=services, save_as=True).headers["Content-Disposition"] == (
        'attachment; filename="ok.txt"'
    )
    header = serve_file(request, "ok.txt", services=services, save_as="Ünïcode\r\n.txt").headers["Content-Disposition"]
    assert "\r" not in header and "\n" not in header and "filename*=UTF-8''%C3%9Cn%C3%AFcode.txt" in header


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(min_size=1, max_size=30))
def test_fuzzed_names_never_escape(services, tree, name):
    response = serve_file(Request.blank("/"), name, services=services)
    assert response.status_code in (200, 404)
    if response.status_code == 200:
        body = Request.blank("/").get_response(response).body
        assert body in (b"ok", b"inner")
