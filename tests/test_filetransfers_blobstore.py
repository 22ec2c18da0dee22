"""The blobstore backend, through the App Engine SDK's testbed stubs."""

from __future__ import annotations

import base64
import datetime
import hashlib

import pytest
from webob import Request

from gaeservices.config import Services
from gaeservices.exceptions import UploadRejectedError
from gaeservices.filetransfers import prepare_upload, serve_file, uploaded_files


@pytest.fixture
def gae(testbed, tmp_path, sqlite_url):
    env = {"GAE_ENV": "standard", "GAE_SERVICE": "default", "GAE_INSTANCE": "i"}
    svc = Services(secret_key="k-signing-key-for-the-test-suite", data_dir=str(tmp_path), store=sqlite_url, environ=env)
    yield svc
    svc.close()


def utcnow() -> datetime.datetime:
    """Now in UTC, naive: how the SDK's datastore holds a BlobInfo's creation."""
    return datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)


def make_blob(testbed, key, content, *, filename="file.txt", content_type="text/plain", creation=None):
    """Store a blob as App Engine's upload service would: bytes plus its BlobInfo."""
    from google.appengine.api import datastore
    from google.appengine.api.blobstore import blobstore as api_blobstore

    stub = testbed.get_stub("blobstore")
    stub.CreateBlob(key, content)
    entity = datastore.Get(datastore.Key.from_path(api_blobstore.BLOB_INFO_KIND, key, namespace=""))
    entity["content_type"] = content_type
    entity["filename"] = filename
    entity["creation"] = creation or utcnow()
    entity["md5_hash"] = hashlib.md5(content).hexdigest()
    datastore.Put(entity)


def test_defaults_on_app_engine(gae, testbed):
    make_blob(testbed, "blob-1", b"hello blob", filename="rapport é.txt")
    response = serve_file(Request.blank("/"), "blob-1", services=gae, save_as=True)
    assert response.status_code == 200
    assert response.headers["X-AppEngine-BlobKey"] == "blob-1"
    assert response.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Cache-Control"] == "private"
    assert "filename*=UTF-8''rapport%20%C3%A9.txt" in response.headers["Content-Disposition"]
    assert Request.blank("/").get_response(response).body == b""


@pytest.mark.parametrize("claimed", ["text/html", "image/svg+xml", "application/xhtml+xml", "text/javascript",
                                     "application/x-unknown"])
def test_a_blobs_claimed_active_type_is_never_sent(gae, testbed, claimed):
    # A blob's BlobInfo holds the type its uploader's browser claimed.
    make_blob(testbed, "blob-x", b"<script>alert(1)</script>", filename="x.html", content_type=claimed)
    for options in ({}, {"content_type": claimed}):
        response = serve_file(Request.blank("/"), "blob-x", services=gae, **options)
        assert response.headers["Content-Type"] == "application/octet-stream"
        assert response.headers["Content-Disposition"] == 'attachment; filename="x.html"'
        assert response.headers["Content-Security-Policy"] == "sandbox"
    trusted = serve_file(Request.blank("/"), "blob-x", services=gae, trusted=True)
    assert trusted.headers["Content-Type"] == claimed and "Content-Disposition" not in trusted.headers


def test_range_is_forwarded(gae, testbed):
    make_blob(testbed, "blob-2", b"0123456789")
    ranged = serve_file(Request.blank("/", headers={"Range": "bytes=2-5"}), "blob-2", services=gae)
    assert ranged.headers["X-AppEngine-BlobRange"] == "bytes=2-5"
    for header in ("bytes=0-1,4-5", "bytes=x", "bytes=1-2\r\nX-Evil: 1"):
        response = serve_file(Request.blank("/", headers={"Range": header}), "blob-2", services=gae)
        assert "X-AppEngine-BlobRange" not in response.headers
    head = serve_file(Request.blank("/", method="HEAD", headers={"Range": "bytes=2-5"}), "blob-2", services=gae)
    assert "X-AppEngine-BlobRange" not in head.headers


def test_unknown_blob_is_404_and_given_type_skips_the_lookup(gae, testbed):
    assert serve_file(Request.blank("/"), "no-such-blob", services=gae).status_code == 404
    response = serve_file(Request.blank("/"), "no-such-blob", services=gae, content_type="image/png", save_as="x.png")
    assert response.headers["Content-Type"] == "image/png"  # no datastore read needed, App Engine checks the key


def test_blob_info_and_key_objects(gae, testbed):
    from google.appengine.ext import blobstore

    make_blob(testbed, "blob-3", b"abc", content_type="application/pdf")
    for file in (blobstore.BlobKey("blob-3"), blobstore.BlobInfo.get("blob-3")):
        response = serve_file(Request.blank("/"), file, services=gae)
        assert response.headers["X-AppEngine-BlobKey"] == "blob-3"
        assert response.headers["Content-Type"] == "application/pdf"


def test_prepare_upload_uses_create_upload_url(gae):
    url, data = prepare_upload(Request.blank("/"), "/files/done", services=gae)
    assert url.startswith("http") and "/_ah/upload/" in url
    assert data == {}
    url, data = prepare_upload(Request.blank("/"), "/files/done", private=True, services=gae)
    assert set(data) == {"gaeservices_upload_token"}


def callback(path, blobs, fields=None):
    """The request App Engine's upload service posts to the success URL."""
    boundary = "==boundary=="
    out = []
    for name, value in (fields or {}).items():
        out.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n')
    for name, (key, filename, content, creation) in blobs.items():
        md5 = base64.urlsafe_b64encode(hashlib.md5(content).digest()).decode()
        out.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
            f'Content-Type: message/external-body; blob-key="{key}"; access-type="X-AppEngine-BlobKey"\r\n\r\n'
            f"Content-Type: text/plain\r\nContent-Length: {len(content)}\r\nContent-MD5: {md5}\r\n"
            f'content-disposition: form-data; name="{name}"; filename="{filename}"\r\n'
            f"X-AppEngine-Upload-Creation: {creation:%Y-%m-%d %H:%M:%S.%f}\r\n\r\n\r\n"
        )
    out.append(f"--{boundary}--\r\n")
    return Request.blank(path, method="POST", body="".join(out).encode(),
                         content_type=f"multipart/form-data; boundary={boundary}")


def test_uploaded_files_from_the_callback(gae, testbed):
    now = utcnow()
    make_blob(testbed, "up-1", b"uploaded!", filename="a.txt", creation=now)
    (uploaded,) = uploaded_files(callback("/files/done", {"file": ("up-1", "a.txt", b"uploaded!", now)}), services=gae)
    assert (uploaded.field, uploaded.filename, uploaded.size, uploaded.blob_key) == ("file", "a.txt", 9, "up-1")
    assert uploaded.content_type == "text/plain" and uploaded.path is None
    response = serve_file(Request.blank("/"), uploaded, services=gae, save_as=True)
    assert response.headers["X-AppEngine-BlobKey"] == "up-1"
    assert response.headers["Content-Disposition"] == 'attachment; filename="a.txt"'


def test_private_callback_cannot_be_replayed_or_forged(gae, testbed):
    _, data = prepare_upload(Request.blank("/"), "/files/done", private=True, services=gae)
    now = utcnow()
    blobs = {"file": ("up-2", "mine.txt", b"mine", now)}
    assert uploaded_files(callback("/files/done", blobs, data), private=True, services=gae)
    with pytest.raises(UploadRejectedError, match="already used"):
        uploaded_files(callback("/files/done", blobs, data), private=True, services=gae)
    with pytest.raises(UploadRejectedError, match="without one"):
        uploaded_files(callback("/files/done", blobs), private=True, services=gae)
    # a fresh token cannot claim an older blob -- someone else's upload
    _, fresh = prepare_upload(Request.blank("/"), "/files/done", private=True, services=gae)
    old = {"file": ("victim", "theirs.txt", b"theirs", now - datetime.timedelta(hours=1))}
    with pytest.raises(UploadRejectedError, match="predates"):
        uploaded_files(callback("/files/done", old, fresh), private=True, services=gae)


def test_private_callback_forged_with_a_fresh_creation_date_is_refused(gae, testbed):
    # A callback posted straight to the success URL states any creation time it
    # likes; the blob's own record says when it was really made.
    make_blob(testbed, "victim-2", b"theirs", creation=utcnow() - datetime.timedelta(hours=1))
    _, fresh = prepare_upload(Request.blank("/"), "/files/done", private=True, services=gae)
    forged = {"file": ("victim-2", "theirs.txt", b"theirs", utcnow())}
    with pytest.raises(UploadRejectedError, match="predates"):
        uploaded_files(callback("/files/done", forged, fresh), private=True, services=gae)


def test_blobstore_backend_chosen_per_call_off_app_engine(services, testbed):
    make_blob(testbed, "blob-4", b"x")
    response = serve_file(Request.blank("/"), "blob-4", services=services, backend="blobstore")
    assert response.headers["X-AppEngine-BlobKey"] == "blob-4"
