"""Local uploads: the token and the size are checked before the body is read; nothing is
kept from a refused or broken upload; the form's other fields stay readable.

These tests run on every Python the suite runs on, Python 3.13 included (no ``cgi``).
"""

from __future__ import annotations

import io
import os

import pytest
from webob import Request

from gaeservices.config import Services
from gaeservices.exceptions import ConfigurationError, MalformedUploadError, UploadRejectedError, UploadTooLargeError
from gaeservices.filetransfers import prepare_upload, uploaded_files
from gaeservices.filetransfers.formdata import MAX_PARTS


class CountingInput(io.BytesIO):
    """A wsgi.input that counts what the application read from it."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.consumed = 0

    def read(self, size=-1):
        data = super().read(size)
        self.consumed += len(data)
        return data

    readline = None  # the parser must not need it


def body_of(*parts: tuple[str, str | None, bytes], boundary: str = "b") -> bytes:
    out = []
    for name, filename, data in parts:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename is not None else "")
        out.append(f"--{boundary}\r\nContent-Disposition: {disposition}\r\n".encode()
                   + (b"Content-Type: application/octet-stream\r\n" if filename is not None else b"")
                   + b"\r\n" + data + b"\r\n")
    return b"".join(out) + f"--{boundary}--\r\n".encode()


def request(path: str, body: bytes, *, length: int | None | str = "auto", terminated=False):
    req = Request.blank(path, method="POST", content_type="multipart/form-data; boundary=b")
    stream = CountingInput(body)
    req.environ["wsgi.input"] = stream
    if length == "auto":
        req.environ["CONTENT_LENGTH"] = str(len(body))
    elif length is None:
        req.environ.pop("CONTENT_LENGTH", None)
    else:
        req.environ["CONTENT_LENGTH"] = str(length)
    if terminated:
        req.environ["wsgi.input_terminated"] = True
    return req, stream


@pytest.fixture
def svc(tmp_path, sqlite_url):
    services = Services(secret_key="k-signing-key-for-the-test-suite", data_dir=str(tmp_path / "data"),
                        store=sqlite_url, environ={"GAESERVICES_FILES_MAX_UPLOAD_SIZE": "100000"})
    yield services
    services.close()


def stored(services) -> list[str]:
    root = os.path.join(services.data_dir, "uploads")
    found = []
    for directory, _, names in os.walk(root):
        found += [os.path.join(directory, name) for name in names]
    return found


BIG = body_of(("f", "big.bin", b"x" * 300_000))


def test_a_private_upload_without_its_token_is_refused_unread(svc):
    req, stream = request("/done", BIG)
    with pytest.raises(UploadRejectedError, match="without one") as refused:
        uploaded_files(req, private=True, services=svc)
    assert refused.value.status == 403
    assert stream.consumed == 0 and stored(svc) == []


def test_a_forged_token_is_refused_unread(svc):
    url, _ = prepare_upload(Request.blank("/"), "/done", private=True, services=svc)
    req, stream = request(url[:-3] + "abc", body_of(("f", "a.txt", b"x")))
    with pytest.raises(UploadRejectedError, match="not valid"):
        uploaded_files(req, private=True, services=svc)
    assert stream.consumed == 0 and stored(svc) == []


@pytest.mark.parametrize("private", [False, True])
def test_an_oversized_body_is_refused_unread_with_413(svc, private):
    url, _ = prepare_upload(Request.blank("/"), "/done", private=private, services=svc)
    req, stream = request(url, BIG)
    with pytest.raises(UploadTooLargeError) as refused:
        uploaded_files(req, private=private, services=svc)
    assert refused.value.status == 413 and isinstance(refused.value, UploadRejectedError)
    assert stream.consumed == 0 and stored(svc) == []
    if private:  # the token was not spent on the refused body: a smaller file may follow
        req, _ = request(url, body_of(("f", "small.bin", b"x" * 1000)))
        assert [f.size for f in uploaded_files(req, private=True, services=svc)] == [1000]


def test_a_declared_length_that_lies_is_never_read_past(svc):
    # Content-Length says 1,000 bytes under the limit; the stream holds more.
    body = body_of(("f", "a.bin", b"y" * 500))
    req, stream = request("/done", body + b"z" * 500_000, length=len(body))
    (uploaded,) = uploaded_files(req, services=svc)
    assert uploaded.size == 500 and stream.consumed == len(body)


def test_a_body_of_undeclared_length_is_cut_at_the_limit_and_nothing_kept(svc):
    req, stream = request("/done", BIG, length=None, terminated=True)
    with pytest.raises(UploadTooLargeError):
        uploaded_files(req, services=svc)
    assert 100_000 < stream.consumed <= 100_001 + 64 * 1024 and stored(svc) == []
    small = body_of(("f", "a.bin", b"y" * 500))
    req, _ = request("/done", small, length=None, terminated=True)
    assert [f.size for f in uploaded_files(req, services=svc)] == [500]


def test_a_body_of_unknown_length_is_refused_with_411(svc):
    req, stream = request("/done", body_of(("f", "a.bin", b"y")), length=None)
    with pytest.raises(MalformedUploadError) as refused:
        uploaded_files(req, services=svc)
    assert refused.value.status == 411 and stream.consumed == 0


@pytest.mark.parametrize("body", [
    body_of(("f", "a.bin", b"x" * 5000))[:-40],                     # the client went away mid-file
    b"--b\r\nContent-Disposition: form-data; name=\"f\"; filename=\"a\"\r\n\r\n" + b"x" * 5000,
    b"no multipart here at all",
    body_of(("f", "a.bin", b"1"), ("g", "b.bin", b"2"))[:-10],       # a first file complete, a second not
    b"--b\r\nContent-Disposition: attachment; filename=\"a\"\r\n\r\nx\r\n--b--\r\n",
])
def test_a_broken_body_keeps_nothing(svc, body):
    req, _ = request("/done", body)
    with pytest.raises(MalformedUploadError) as refused:
        uploaded_files(req, services=svc)
    assert refused.value.status == 400 and stored(svc) == []


def test_too_many_parts_are_refused(svc):
    body = body_of(*[("n", None, b"") for _ in range(MAX_PARTS + 1)])
    req, _ = request("/done", body)
    with pytest.raises(MalformedUploadError):
        uploaded_files(req, services=svc)


def test_the_other_fields_stay_readable(svc):
    body = body_of(("title", None, "Résumé".encode()), ("f", "a.txt", b"abc"), ("tag", None, b"x&y=z"),
                   ("tag", None, b"2"))
    req, _ = request("/done?x=1", body)
    (uploaded,) = uploaded_files(req, services=svc)
    assert uploaded.size == 3 and uploaded.field == "f"
    assert req.POST["title"] == "Résumé" and req.POST.getall("tag") == ["x&y=z", "2"]
    assert "f" not in req.POST and req.GET["x"] == "1"


def test_an_empty_file_input_is_no_file(svc):
    req, _ = request("/done", body_of(("f", "", b""), ("g", "kept.txt", b"")))
    assert [(f.field, f.filename, f.size) for f in uploaded_files(req, services=svc)] == [("g", "kept.txt", 0)]


def test_large_files_stream_to_disk(svc, tmp_path):
    services = Services(secret_key="k-signing-key-for-the-test-suite", data_dir=str(tmp_path / "big"),
                        environ={"GAESERVICES_FILES_MAX_UPLOAD_SIZE": str(50 * 1024 * 1024)})
    data = os.urandom(1024 * 1024) * 20
    req, _ = request("/done", body_of(("f", "big.bin", data), ("g", "b.bin", b"\r\n-b\r\n--")))
    big, small = uploaded_files(req, services=services)
    with open(big.path, "rb") as f:
        assert f.read() == data
    with open(small.path, "rb") as f:
        assert f.read() == b"\r\n-b\r\n--"
    services.close()


def test_max_upload_size_per_call_and_setting(svc, tmp_path):
    req, _ = request("/done", body_of(("f", "a.bin", b"x" * 2000)))
    with pytest.raises(UploadTooLargeError):
        uploaded_files(req, services=svc, max_upload_size=1000)
    for bad in ("lots", "-1", "0", "1.5"):
        services = Services(secret_key="k-signing-key-for-the-test-suite", data_dir=str(tmp_path / "x"),
                            environ={"GAESERVICES_FILES_MAX_UPLOAD_SIZE": bad})
        with pytest.raises(ConfigurationError, match="GAESERVICES_FILES_MAX_UPLOAD_SIZE"):
            uploaded_files(request("/done", b"")[0], services=services)
        services.close()


def test_the_default_limit_is_32_mib(tmp_path):
    services = Services(secret_key="k-signing-key-for-the-test-suite", data_dir=str(tmp_path), environ={})
    req, stream = request("/done", b"", length=32 * 1024 * 1024 + 1)
    with pytest.raises(UploadTooLargeError):
        uploaded_files(req, services=services)
    assert stream.consumed == 0
    services.close()


def test_uploads_do_not_use_cgi(svc, monkeypatch):
    # Python 3.13 removed cgi, whose FieldStorage WebOb 1.8 parses forms with
    # (WebOb pulls in the legacy-cgi copy there): the upload path parses itself.
    import cgi

    import webob.request

    def gone(*args, **kwargs):
        raise AssertionError("cgi.FieldStorage was used")

    req, _ = request("/done", body_of(("title", None, b"t"), ("f", "a.txt", b"abc")))
    with monkeypatch.context() as patched:
        patched.setattr(cgi, "FieldStorage", gone)
        patched.setattr(webob.request, "cgi_FieldStorage", gone)
        assert [f.size for f in uploaded_files(req, services=svc)] == [3]
    assert req.POST["title"] == "t"  # WebOb's own form parsing, on what was left


def test_a_get_or_a_urlencoded_post_has_no_files(svc):
    assert uploaded_files(Request.blank("/done"), services=svc) == []
    req = Request.blank("/done", method="POST", POST={"a": "1"})
    assert uploaded_files(req, services=svc) == [] and req.POST["a"] == "1"


# --- through a real WSGI server ----------------------------------------------------------


def demo_form_action(port: int) -> str:
    import html
    import re
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/files/", timeout=10) as page:
        return html.unescape(re.search(r"action='([^']+)'", page.read().decode()).group(1))


def test_oversized_uploads_are_refused_unread_by_the_demo_under_gunicorn(tmp_path):
    # 300 MB declared, with and without a token: the answer comes while almost
    # all of it is unsent, and nothing is stored. Chunked, with no length
    # declared: cut at the limit.
    from filetransfers_fixtures import demo_environ, gunicorn, raw_exchange

    data_dir = str(tmp_path / "data")
    env = demo_environ(data_dir, GAESERVICES_FILES_MAX_UPLOAD_SIZE=str(1024 * 1024))
    with gunicorn("gaeservices.wsgi.demo:application", env, str(tmp_path)) as port:
        action = demo_form_action(port)
        prefix = body_of(("file", "huge.bin", b""))[:-len("\r\n--b--\r\n")]
        declared = 300 * 1024 * 1024

        def chunks(total):
            yield prefix
            block = b"x" * 65536
            for _ in range(total // len(block)):
                yield block

        for path, status in ((action, b"413"), ("/files/upload", b"403")):
            head = (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {declared}\r\n"
                    "Content-Type: multipart/form-data; boundary=b\r\n\r\n").encode()
            answer, sent = raw_exchange(port, head, chunks(declared))
            assert answer.startswith(b"HTTP/1.1 " + status), answer[:200]
            assert sent < 16 * 1024 * 1024, sent  # answered long before the 300 MB were sent

        head = (f"POST {demo_form_action(port)} HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n"
                "Content-Type: multipart/form-data; boundary=b\r\n\r\n").encode()
        answer, sent = raw_exchange(port, head, (b"%x\r\n%s\r\n" % (len(c), c) for c in chunks(3 * 1024 * 1024)))
        assert answer.startswith(b"HTTP/1.1 413"), answer[:200]

        # and an upload under the limit goes through
        import urllib.request

        body = body_of(("file", "ok.txt", b"fine"))
        request = urllib.request.Request(f"http://127.0.0.1:{port}{demo_form_action(port)}", data=body,
                                         headers={"Content-Type": "multipart/form-data; boundary=b"})
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 200  # followed the 303 to the listing
            assert "ok.txt" in response.read().decode()
    kept = [name for directory, _, names in os.walk(os.path.join(data_dir, "uploads")) for name in names]
    assert sorted(kept) == ["ok.txt"]  # the list of uploads is in the store
