"""Front-server, redirect and public-URL backends, the middleware, local uploads and tokens."""

from __future__ import annotations

import os

import pytest
from webob import Request

from gaeservices.exceptions import UploadRejectedError
from gaeservices.config import Services
from gaeservices.filetransfers import (
    XSendfileMiddleware,
    prepare_upload,
    public_download_url,
    serve_file,
    upload_fields_html,
    uploaded_files,
)
from gaeservices.filetransfers.xsendfile import XAccelBackend

from filetransfers_helpers import call, multipart_parts


@pytest.fixture
def root(services):
    path = os.path.join(services.data_dir, "uploads")
    os.makedirs(os.path.join(path, "dir"))
    with open(os.path.join(path, "dir", "ünï code.txt"), "wb") as f:
        f.write(b"0123456789")
    return path


def test_xsendfile_header(services, root):
    response = serve_file(Request.blank("/"), "dir/ünï code.txt", services=services, backend="xsendfile", save_as=True)
    assert response.status_code == 200
    expected = os.fsencode(os.path.join(os.path.realpath(root), "dir", "ünï code.txt")).decode("latin-1")
    assert response.headers["X-Sendfile"] == expected
    assert response.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert "filename*=UTF-8''%C3%BCn%C3%AF%20code.txt" in response.headers["Content-Disposition"]
    assert call(response).body == b""


def test_xaccel_header_from_configured_mapping(tmp_path):
    media = tmp_path / "media"
    (media / "a b").mkdir(parents=True)
    (media / "a b" / "x.pdf").write_bytes(b"%PDF")
    services = Services(secret_key="k-signing-key-for-the-test-suite", data_dir=str(tmp_path / "data"), environ={
        "GAESERVICES_FILES_SERVE": "xaccel",
        "GAESERVICES_FILES_ROOT": str(media),
        "GAESERVICES_FILES_XACCEL": f"{media}=/protected/media",
    })
    response = serve_file(Request.blank("/"), "a b/x.pdf", services=services)
    assert response.headers["X-Accel-Redirect"] == "/protected/media/a%20b/x.pdf"
    assert response.headers["Content-Type"] == "application/pdf"


def test_xaccel_outside_every_location_is_404(tmp_path):
    (tmp_path / "f").write_bytes(b"x")
    backend = XAccelBackend(root=str(tmp_path), locations={str(tmp_path / "elsewhere"): "/p/"})
    assert serve_file(Request.blank("/"), "f", backend=backend).status_code == 404


def test_backend_is_read_when_used(tmp_path, root, services):
    environ = {}
    svc = Services(secret_key="k-signing-key-for-the-test-suite", data_dir=services.data_dir, environ=environ)
    assert "X-Sendfile" not in serve_file(Request.blank("/"), "dir/ünï code.txt", services=svc).headers
    environ["GAESERVICES_FILES_SERVE"] = "xsendfile"
    assert "X-Sendfile" in serve_file(Request.blank("/"), "dir/ünï code.txt", services=svc).headers
    environ["GAESERVICES_FILES_SERVE"] = "ftp"
    with pytest.raises(Exception, match="GAESERVICES_FILES_SERVE='ftp'"):
        serve_file(Request.blank("/"), "x", services=svc)


def test_public_urls(services, tmp_path):
    assert public_download_url("a.txt", services=services) is None
    svc = Services(secret_key="k-signing-key-for-the-test-suite", data_dir=str(tmp_path), environ={"GAESERVICES_FILES_PUBLIC": "https://cdn.example.com/m"})
    assert public_download_url("dir/ünï code.txt", services=svc) == "https://cdn.example.com/m/dir/%C3%BCn%C3%AF%20code.txt"
    assert public_download_url("../x", services=svc) is None
    assert public_download_url("x", backend="https://other.example/", services=svc) == "https://other.example/x"
    assert public_download_url("x", backend="none", services=svc) is None


def test_redirect_backend(tmp_path):
    svc = Services(secret_key="k-signing-key-for-the-test-suite", data_dir=str(tmp_path), environ={
        "GAESERVICES_FILES_PUBLIC": "https://cdn.example.com/", "GAESERVICES_FILES_SERVE": "redirect"})
    response = serve_file(Request.blank("/"), "a/b.txt", services=svc)
    assert response.status_code == 302 and response.headers["Location"] == "https://cdn.example.com/a/b.txt"

    class Stored:
        url = "https://bucket.example/k"

    assert serve_file(Request.blank("/"), Stored(), services=svc).headers["Location"] == "https://bucket.example/k"
    assert serve_file(Request.blank("/"), "../x", services=svc).status_code == 404


# --- the middleware ------------------------------------------------------------------


def header_app(header, value, *, status="200 OK", extra=(), lazy=False):
    def app(environ, start_response):
        headers = [("Content-Type", "text/plain"), (header, value), ("Cache-Control", "private"), *extra]
        if lazy:
            def body():
                start_response(status, headers)
                yield b"ignored"
            return body()
        start_response(status, headers)
        return [b"ignored"]

    return app


@pytest.mark.parametrize("lazy", [False, True])
def test_middleware_serves_x_sendfile_with_stream_behaviour(root, lazy):
    path = os.path.join(root, "dir", "ünï code.txt")
    value = os.fsencode(path).decode("latin-1")
    app = XSendfileMiddleware(header_app("X-Sendfile", value, lazy=lazy,
                                         extra=[("Content-Disposition", "attachment")]), roots=[root])
    result = call(app)
    assert result.code == 200 and result.body == b"0123456789"
    assert result.headers["Cache-Control"] == "private"
    assert result.headers["Content-Disposition"] == "attachment"
    assert "X-Sendfile" not in result.headers
    etag = result.headers["ETag"]
    assert call(app, headers={"If-None-Match": etag}).code == 304
    ranged = call(app, headers={"Range": "bytes=2-3"}, file_wrapper=True)
    assert ranged.code == 206 and ranged.body == b"23"
    multi = call(app, headers={"Range": "bytes=0-0,-1"})
    assert [body for _, _, body in multipart_parts(multi)] == [b"0", b"9"]
    assert call(app, headers={"Range": "bytes=50-"}).code == 416
    head = call(app, method="HEAD")
    assert head.code == 200 and head.body == b"" and head.headers["Content-Length"] == "10"


def test_middleware_serves_x_accel_redirect(root):
    app = XSendfileMiddleware(header_app("X-Accel-Redirect", "/protected/dir/%C3%BCn%C3%AF%20code.txt",
                                         extra=[("X-Accel-Buffering", "no")]),
                              roots=[], locations={"/protected": root})
    result = call(app)
    assert result.code == 200 and result.body == b"0123456789"
    assert "X-Accel-Buffering" not in result.headers


def test_middleware_passes_other_responses_through(root):
    def plain(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"plain"]

    assert call(XSendfileMiddleware(plain, roots=[root])).body == b"plain"
    failed = XSendfileMiddleware(header_app("X-Sendfile", "/etc/passwd", status="403 Forbidden"), roots=[root])
    result = call(failed)
    assert result.code == 403 and result.body == b"ignored" and "X-Sendfile" not in result.headers


def test_middleware_defaults_to_configured_root(services, root):
    path = os.path.join(root, "dir", "ünï code.txt")
    app = XSendfileMiddleware(header_app("X-Sendfile", os.fsencode(path).decode("latin-1")), services=services)
    assert call(app).body == b"0123456789"


def test_serve_file_through_middleware_end_to_end(services, root):
    def view(environ, start_response):
        request = Request(environ)
        return serve_file(request, "dir/ünï code.txt", services=services, backend="xsendfile")(environ, start_response)

    result = call(XSendfileMiddleware(view, services=services), headers={"Range": "bytes=-4"})
    assert result.code == 206 and result.body == b"6789"


# --- local uploads ------------------------------------------------------------------


def multipart(fields, files):
    boundary = "----gaeservicesboundary"
    out = []
    for name, value in fields.items():
        out.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode())
    for name, (filename, ctype, data) in files.items():
        out.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
                   f"Content-Type: {ctype}\r\n\r\n".encode() + data + b"\r\n")
    out.append(f"--{boundary}--\r\n".encode())
    return b"".join(out), f"multipart/form-data; boundary={boundary}"


def post(path, fields, files):
    body, ctype = multipart(fields, files)
    return Request.blank(path, method="POST", body=body, content_type=ctype)


def test_local_upload_round_trip(services):
    url, data = prepare_upload(Request.blank("/form"), "/upload/done", services=services)
    assert (url, data) == ("/upload/done", {})
    request = post("/upload/done", data, {"file": ("../../évil name.txt", "text/plain", b"hello upload")})
    (uploaded,) = uploaded_files(request, services=services)
    assert uploaded.filename == "évil name.txt" and uploaded.size == 12 and uploaded.content_type == "text/plain"
    assert os.path.dirname(os.path.dirname(uploaded.path)) == os.path.join(services.data_dir, "uploads")
    # the stored name serves back, and so does the object itself
    for file in (uploaded.name, uploaded):
        response = Request.blank("/").get_response(serve_file(Request.blank("/"), file, services=services, save_as=True))
        assert response.body == b"hello upload"
        assert "%C3%A9vil%20name.txt" in response.headers["Content-Disposition"]


def test_two_uploads_of_one_name_do_not_collide(services):
    first = uploaded_files(post("/u", {}, {"f": ("same.txt", "text/plain", b"1")}), services=services)[0]
    second = uploaded_files(post("/u", {}, {"f": ("same.txt", "text/plain", b"2")}), services=services)[0]
    assert first.name != second.name
    with open(first.path, "rb") as a, open(second.path, "rb") as b:
        assert (a.read(), b.read()) == (b"1", b"2")


def test_forged_blob_reference_is_ignored_locally(services):
    body = (b'------b\r\nContent-Disposition: form-data; name="f"; filename="x"\r\n'
            b'Content-Type: message/external-body; blob-key="someone-elses"\r\n\r\nx\r\n------b--\r\n')
    request = Request.blank("/u", method="POST", body=body, content_type="multipart/form-data; boundary=----b")
    assert uploaded_files(request, services=services) == []


def test_private_upload_token_is_single_use(services, sqlite_url, tmp_path):
    svc = Services(secret_key="k-signing-key-for-the-test-suite", data_dir=str(tmp_path / "d"), store=sqlite_url, environ={})
    url, data = prepare_upload(Request.blank("/"), "http://example.com/private/done?x=1", private=True, services=svc)
    # the token travels in the URL, where it is checked before the body is read
    assert data == {} and upload_fields_html(data) == ""
    assert url.startswith("http://example.com/private/done?x=1&gaeservices_upload_token=")
    path = url[len("http://example.com"):]
    files = {"f": ("a.txt", "text/plain", b"mine")}
    assert len(uploaded_files(post(path, {}, files), private=True, services=svc)) == 1
    before = set(os.listdir(os.path.join(svc.data_dir, "uploads")))
    with pytest.raises(UploadRejectedError, match="already used"):
        uploaded_files(post(path, {}, files), private=True, services=svc)
    assert set(os.listdir(os.path.join(svc.data_dir, "uploads"))) == before  # nothing stored
    with pytest.raises(UploadRejectedError, match="without one"):
        uploaded_files(post("/private/done", {}, files), private=True, services=svc)
    with pytest.raises(UploadRejectedError, match="without one"):  # in the form it comes too late
        uploaded_files(post("/private/done", {"gaeservices_upload_token": token_of(url)}, files), private=True,
                       services=svc)
    with pytest.raises(UploadRejectedError, match="not valid"):
        uploaded_files(post(path.replace("token=", "token=x"), {}, files), private=True, services=svc)
    other, _ = prepare_upload(Request.blank("/"), "/elsewhere", private=True, services=svc)
    with pytest.raises(UploadRejectedError, match="another URL"):
        uploaded_files(post("/private/done?" + other.partition("?")[2], {}, files), private=True, services=svc)
    assert set(os.listdir(os.path.join(svc.data_dir, "uploads"))) == before
    svc.close()


def token_of(url):
    from urllib.parse import parse_qs, urlsplit

    return parse_qs(urlsplit(url).query)["gaeservices_upload_token"][0]


def test_private_token_single_use_in_postgres(postgres_url, tmp_path):
    svc = Services(secret_key="k-signing-key-for-the-test-suite", data_dir=str(tmp_path), store=postgres_url, environ={})
    url, _ = prepare_upload(Request.blank("/"), "/done", private=True, services=svc)
    files = {"f": ("a.txt", "text/plain", b"x")}
    assert uploaded_files(post(url, {}, files), private=True, services=svc)
    other_machine = Services(secret_key="k-signing-key-for-the-test-suite", data_dir=str(tmp_path / "other"), store=postgres_url, environ={})
    with pytest.raises(UploadRejectedError, match="already used"):
        uploaded_files(post(url, {}, files), private=True, services=other_machine)
    svc.close()
    other_machine.close()


def test_token_signed_with_rotated_key_still_redeems(tmp_path, sqlite_url):
    old = Services(secret_key="old-signing-key-for-the-test-suite", data_dir=str(tmp_path), store=sqlite_url, environ={})
    url, _ = prepare_upload(Request.blank("/"), "/done", private=True, services=old)
    new = Services(secret_key="new-signing-key-for-the-test-suite,old-signing-key-for-the-test-suite", data_dir=str(tmp_path), store=sqlite_url, environ={})
    assert uploaded_files(post(url, {}, {"f": ("a", "text/plain", b"x")}), private=True, services=new)
    stranger = Services(secret_key="other-signing-key-for-the-test-suite", data_dir=str(tmp_path), store=sqlite_url, environ={})
    url, _ = prepare_upload(Request.blank("/"), "/done", private=True, services=stranger)
    with pytest.raises(UploadRejectedError):
        uploaded_files(post(url, {}, {"f": ("a", "text/plain", b"x")}), private=True, services=new)
    for svc in (old, new, stranger):
        svc.close()
