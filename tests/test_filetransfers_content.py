"""What a download may be: user content is data, never active content on the site's origin.

Every backend that answers with headers (stream, xsendfile, xaccel, blobstore) is held
to the same rules: HTML, SVG, XML, JavaScript and anything unknown go out as
``application/octet-stream`` attachments under ``Content-Security-Policy: sandbox``,
whatever type the uploader claimed; text carries ``charset=utf-8``; ``trusted=True``
lifts the rules for the application's own files; ``Cache-Control`` is private unless
told otherwise, on 304s too.
"""

from __future__ import annotations

import copy
import os

import pytest
import webob
from webob import Request

from gaeservices.filetransfers import XSendfileMiddleware, serve_file, uploaded_files
from gaeservices.filetransfers.disposition import content_disposition, safe_filename

from filetransfers_helpers import call

BACKENDS = ["stream", "xsendfile", "xaccel"]

ACTIVE = {
    "page.html": b"<script>alert(1)</script>",
    "page.htm": b"<script>alert(1)</script>",
    "page.xhtml": b"<html xmlns='http://www.w3.org/1999/xhtml'><script>alert(1)</script></html>",
    "image.svg": b"<svg xmlns='http://www.w3.org/2000/svg'><script>alert(1)</script></svg>",
    "data.xml": b"<?xml version='1.0'?><x:script xmlns:x='http://www.w3.org/1999/xhtml'>alert(1)</x:script>",
    "code.js": b"alert(1)",
    "code.mjs": b"alert(1)",
    "style.css": b"body{}",
    "movie.swf": b"FWS",
    "noextension": b"<script>alert(1)</script>",
    "strange.qqqz": b"<script>alert(1)</script>",
}
SAFE = {
    "notes.txt": "text/plain; charset=utf-8",
    "table.csv": "text/csv; charset=utf-8",
    "photo.png": "image/png",
    "photo.jpg": "image/jpeg",
    "anim.gif": "image/gif",
    "paper.pdf": "application/pdf",
    "song.mp3": "audio/mpeg",
    "clip.mp4": "video/mp4",
}


@pytest.fixture
def root(services):
    path = os.path.join(services.data_dir, "uploads")
    os.makedirs(path)
    for name, data in ACTIVE.items():
        with open(os.path.join(path, name), "wb") as f:
            f.write(data)
    for name in SAFE:
        with open(os.path.join(path, name), "wb") as f:
            f.write(b"h\xc3\xa9llo")
    return path


def assert_not_active(headers, name):
    assert headers["Content-Type"] == "application/octet-stream", name
    assert headers["Content-Disposition"].startswith("attachment"), name
    assert headers["Content-Security-Policy"] == "sandbox", name
    assert headers["X-Content-Type-Options"] == "nosniff", name


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", sorted(ACTIVE))
def test_active_content_is_an_attachment_whatever_the_name(services, root, backend, name):
    response = serve_file(Request.blank("/"), name, services=services, backend=backend)
    assert_not_active(response.headers, name)
    assert response.headers["Content-Disposition"] == content_disposition(name)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("claimed", ["text/html", "TEXT/HTML; charset=utf-7", "image/svg+xml", "application/xhtml+xml",
                                     "text/xml", "application/javascript", "text/javascript", "application/x-unknown",
                                     "multipart/x-mixed-replace; boundary=x", "text/html\u00a0"])
def test_the_uploaders_claimed_type_is_never_sent_for_active_content(services, root, backend, claimed):
    # The demo passes the type the uploader's browser declared: a harmless name
    # with a claim of text/html must not become a page on our origin.
    response = serve_file(Request.blank("/"), "notes.txt", services=services, backend=backend, content_type=claimed)
    assert_not_active(response.headers, claimed)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", sorted(SAFE))
def test_passive_content_is_shown_inline(services, root, backend, name):
    response = serve_file(Request.blank("/"), name, services=services, backend=backend)
    assert response.headers["Content-Type"] == SAFE[name]
    assert "Content-Disposition" not in response.headers
    assert "Content-Security-Policy" not in response.headers
    assert response.headers["X-Content-Type-Options"] == "nosniff"


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_claimed_passive_type_is_sent_with_utf8_and_without_its_parameters(services, root, backend):
    response = serve_file(Request.blank("/"), "noextension", services=services, backend=backend,
                          content_type="Text/Plain; charset=utf-7")
    assert response.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert "Content-Disposition" not in response.headers


def test_utf8_text_is_labelled_utf8(services, root):
    # A UTF-8 text file showed as "hÃ©llo": the browser guessed windows-1252.
    result = call(serve_file(Request.blank("/"), "notes.txt", services=services))
    assert result.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert result.body.decode(result.headers["Content-Type"].split("charset=")[1]) == "héllo"


@pytest.mark.parametrize("backend", BACKENDS)
def test_trusted_files_are_served_as_they_are(services, root, backend):
    response = serve_file(Request.blank("/"), "page.html", services=services, backend=backend, trusted=True)
    assert response.headers["Content-Type"] == "text/html; charset=utf-8"
    assert "Content-Disposition" not in response.headers and "Content-Security-Policy" not in response.headers
    response = serve_file(Request.blank("/"), "image.svg", services=services, backend=backend, trusted=True,
                          content_type="image/svg+xml")
    assert response.headers["Content-Type"] == "image/svg+xml"
    response = serve_file(Request.blank("/"), "page.html", services=services, backend=backend, trusted=True,
                          content_type="text/html; charset=iso-8859-1")
    assert response.headers["Content-Type"] == "text/html; charset=iso-8859-1"


def test_save_as_keeps_its_name_for_active_content(services, root):
    response = serve_file(Request.blank("/"), "page.html", services=services, save_as="report.html")
    assert_not_active(response.headers, "save_as")
    assert response.headers["Content-Disposition"] == 'attachment; filename="report.html"'


def test_active_content_rules_hold_through_the_middleware(services, root):
    def view(environ, start_response):
        return serve_file(Request(environ), "image.svg", services=services, backend="xsendfile")(environ,
                                                                                                  start_response)

    result = call(XSendfileMiddleware(view, services=services))
    assert result.body == ACTIVE["image.svg"]
    assert_not_active(result.headers, "middleware")


def test_open_files_follow_the_rules_by_their_name(services, root):
    with open(os.path.join(root, "page.html"), "rb") as f:
        assert_not_active(serve_file(Request.blank("/"), f, services=services).headers, "open file")


@pytest.mark.parametrize("backend", BACKENDS)
def test_blob_reference_and_uploaded_file_objects_follow_the_rules(services, root, backend):
    body = (b'--b\r\nContent-Disposition: form-data; name="f"; filename="x.svg"\r\n'
            b"Content-Type: image/svg+xml\r\n\r\n" + ACTIVE["image.svg"] + b"\r\n--b--\r\n")
    request = Request.blank("/u", method="POST", body=body, content_type="multipart/form-data; boundary=b")
    (stored,) = uploaded_files(request, services=services)
    response = serve_file(Request.blank("/"), stored, services=services, backend=backend,
                          content_type=stored.content_type)
    assert_not_active(response.headers, backend)


# --- Cache-Control ---------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_downloads_are_private_by_default(services, root, backend):
    response = serve_file(Request.blank("/"), "notes.txt", services=services, backend=backend)
    assert response.headers["Cache-Control"] == "private"
    public = serve_file(Request.blank("/"), "notes.txt", services=services, backend=backend,
                        cache_control="public, max-age=3600")
    assert public.headers["Cache-Control"] == "public, max-age=3600"
    assert "Cache-Control" not in serve_file(Request.blank("/"), "notes.txt", services=services, backend=backend,
                                             cache_control=None).headers


def test_cache_control_is_on_every_answer_a_cache_could_keep(services, root):
    response = call(serve_file(Request.blank("/"), "notes.txt", services=services))
    for headers in ({"If-None-Match": response.headers["ETag"]}, {"Range": "bytes=0-1"}, {"Range": "bytes=0-0,2-3"},
                    {"If-Modified-Since": response.headers["Last-Modified"]}):
        answer = call(serve_file(Request.blank("/", headers=headers), "notes.txt", services=services))
        assert answer.code in (206, 304), headers
        assert answer.headers["Cache-Control"] == "private", headers  # RFC 9110 15.4.5 for 304


@pytest.mark.parametrize("value", ["private\r\nSet-Cookie: x=1", "no-store\n", "\x00"])
def test_cache_control_refuses_header_injection(services, root, value):
    with pytest.raises(ValueError):
        serve_file(Request.blank("/"), "notes.txt", services=services, cache_control=value)


# --- the response value ------------------------------------------------------------------


def test_the_response_is_a_plain_wsgi_value(services, root):
    # It used to subclass webob.Response and write its private attributes, so
    # WebOb's own methods (copy()) broke on it.
    response = serve_file(Request.blank("/"), "notes.txt", services=services)
    assert not isinstance(response, webob.Response)
    assert response.status == "200 OK" and response.status_code == 200
    response.headers["Cache-Control"] = "no-store"
    response.headers.add_header("Set-Cookie", "a=1")
    twin = copy.copy(response)
    assert twin.headerlist == response.headerlist
    result = call(response)
    assert result.body == b"h\xc3\xa9llo"
    assert result.headers["Cache-Control"] == "no-store" and result.headers["Set-Cookie"] == "a=1"
    # WebOb, Flask and Bottle take any WSGI application
    assert Request.blank("/").get_response(serve_file(Request.blank("/"), "notes.txt", services=services)).body == (
        b"h\xc3\xa9llo")


def test_a_head_answer_has_no_body_and_closes_the_file(services, root):
    big = os.path.join(root, "big.txt")
    with open(big, "wb") as f:
        f.write(b"x" * 200_000)
    result = call(serve_file(Request.blank("/", method="HEAD"), "big.txt", services=services), method="HEAD")
    assert result.body == b"" and result.headers["Content-Length"] == "200000"


# --- names ---------------------------------------------------------------------------------

BIDI = "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
INVISIBLE = "\u200b\u200c\u200d\u200e\u200f\u2060\ufeff\u00ad\u061c\u180e\u2028\u2029"


@pytest.mark.parametrize("name, expected", [
    ("invoice\u202Efdp.exe", "invoicefdp.exe"),  # shows as "invoiceexe.pdf" in a right-to-left override
    ("a" + BIDI + INVISIBLE + "b.txt", "ab.txt"),
    ("\u2067report\u2069.pdf", "report.pdf"),
    ("\udcff.txt", ".txt"),  # a lone surrogate (an undecodable byte on disk) cannot travel either
])
def test_format_characters_are_stripped_from_names(name, expected):
    assert safe_filename(name) == expected.strip(".")
    header = content_disposition(name)
    assert not any(c in header for c in BIDI + INVISIBLE)
    header.encode("ascii")


def test_uploaded_names_lose_their_format_characters(services):
    body = ('--b\r\nContent-Disposition: form-data; name="f"; filename="invoice\u202Efdp.exe"\r\n'
            "Content-Type: application/octet-stream\r\n\r\nMZ\r\n--b--\r\n").encode()
    request = Request.blank("/u", method="POST", body=body, content_type="multipart/form-data; boundary=b")
    (stored,) = uploaded_files(request, services=services)
    assert stored.filename == "invoicefdp.exe" and "\u202e" not in stored.name
    response = serve_file(Request.blank("/"), stored, services=services, save_as=True)
    assert response.headers["Content-Disposition"] == 'attachment; filename="invoicefdp.exe"'
