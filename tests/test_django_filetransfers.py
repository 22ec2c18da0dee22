"""The django-filetransfers API, template tag and storages over the file-transfer service."""

from __future__ import annotations

import re

import pytest
from django_fixtures import SECRET_KEY, configure, django_test_db  # noqa: F401  (the fixture)

configure()

from django.core.files.base import ContentFile  # noqa: E402
from django.core.files.storage import default_storage  # noqa: E402
from django.core.files.uploadedfile import SimpleUploadedFile  # noqa: E402
from django.db.models.fields.files import FieldFile, FileField  # noqa: E402
from django.template import engines  # noqa: E402
from django.test import Client, RequestFactory, override_settings  # noqa: E402

from gaeservices.config import Services, set_services  # noqa: E402
from gaeservices.django.filetransfers import prepare_upload, public_download_url, serve_file  # noqa: E402
from gaeservices.django.storage import BlobstoreStorage, FileTransferStorage, LocalStorage  # noqa: E402
from gaeservices.exceptions import UploadRejectedError  # noqa: E402

pytestmark = pytest.mark.usefixtures("django_test_db")
STORAGES = {
    "default": {"BACKEND": "gaeservices.django.storage.FileTransferStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}


@pytest.fixture
def svc(tmp_path):
    services = Services(secret_key=SECRET_KEY, data_dir=str(tmp_path), environ={})
    previous = set_services(services)
    with override_settings(STORAGES=STORAGES):
        yield services
    set_services(previous)
    services.close()


def field_file(storage, name):
    return FieldFile(None, FileField(storage=storage), name)


def test_local_storage_lives_in_the_files_root_and_serves_through_the_stream_backend(svc, tmp_path):
    storage = FileTransferStorage()
    assert isinstance(storage, LocalStorage) and storage.location == str(tmp_path / "uploads")
    name = storage.save("reports/q3 é.txt", ContentFile(b"0123456789"))
    request = RequestFactory().get("/")
    response = serve_file(request, field_file(storage, name), save_as=True)
    assert response.status_code == 200
    assert b"".join(response.streaming_content) == b"0123456789"
    assert response["Content-Type"] == "text/plain; charset=utf-8"
    assert "filename*=UTF-8''q3%20%C3%A9.txt" in response["Content-Disposition"]
    assert response["Cache-Control"] == "private" and response["Accept-Ranges"] == "bytes"

    ranged = serve_file(RequestFactory().get("/", HTTP_RANGE="bytes=2-4"), field_file(storage, name))
    assert ranged.status_code == 206 and b"".join(ranged.streaming_content) == b"234"
    assert ranged["Content-Range"] == "bytes 2-4/10"

    again = serve_file(RequestFactory().get("/", HTTP_IF_NONE_MATCH=response["ETag"]), field_file(storage, name))
    assert again.status_code == 304 and again.content == b"" and "Content-Type" not in again

    head = serve_file(RequestFactory().head("/"), field_file(storage, name))
    assert head.status_code == 200 and head.content == b"" and head["Content-Length"] == "10"

    # by name, as django-filetransfers users keep it, and an unsafe name is a 404
    assert serve_file(request, name).status_code == 200
    assert serve_file(request, "../" + name).status_code == 404


def test_an_uploaded_page_is_never_served_as_active_content(svc):
    storage = FileTransferStorage()
    name = storage.save("page.html", ContentFile(b"<script>alert(1)</script>"))
    response = serve_file(RequestFactory().get("/"), field_file(storage, name))
    assert response["Content-Type"] == "application/octet-stream"
    assert response["Content-Disposition"].startswith("attachment")


def test_the_upload_form_round_trip_with_the_template_tag(svc):
    client = Client()
    page = client.get("/upload/").content.decode()
    assert 'action="/upload/"' in page and "gaeservices_upload_token" not in page
    answer = client.post("/upload/", {"file": SimpleUploadedFile("notes.txt", b"some notes")})
    name = answer.json()["name"]
    assert default_storage.open(name).read() == b"some notes"
    download = client.get(f"/download/{name}")
    assert b"".join(download.streaming_content) == b"some notes"
    assert 'filename="notes.txt"' in download["Content-Disposition"]


def test_a_private_upload_needs_its_one_time_token(svc):
    client = Client()
    page = client.get("/private-upload/").content.decode()
    action = re.search(r'action="([^"]+)"', page).group(1).replace("&amp;", "&")
    assert "gaeservices_upload_token=" in action  # in the URL: checked before the body is read
    refused = client.post("/private-upload/", {"file": SimpleUploadedFile("a.txt", b"a")})
    assert refused.status_code == 403
    assert client.post(action, {"file": SimpleUploadedFile("a.txt", b"a")}).status_code == 200
    assert client.post(action, {"file": SimpleUploadedFile("a.txt", b"a")}).status_code == 403  # replayed


def test_render_upload_data_escapes_names_and_values():
    template = engines["django"].from_string("{% load filetransfers %}{% render_upload_data data %}")
    html = template.render({"data": {'x"><script>': '"><img src=x onerror=alert(1)>'}})
    assert "<script>" not in html and "<img" not in html
    assert html.count("<input") == 1 and "&quot;&gt;&lt;img" in html


def test_prepare_upload_and_public_urls(svc):
    request = RequestFactory().get("/form/")
    assert prepare_upload(request, "/done/?next=1") == ("/done/?next=1", {})
    url, data = prepare_upload(request, "/done/", private=True)
    assert url.startswith("/done/?gaeservices_upload_token=") and data == {}
    storage = FileTransferStorage()
    name = storage.save("a b.txt", ContentFile(b"x"))
    assert public_download_url(field_file(storage, name)) is None
    with override_settings(GAESERVICES_FILES_PUBLIC="https://cdn.example.com/media/"):
        assert public_download_url(name) == "https://cdn.example.com/media/a%20b.txt"
    with override_settings(GAESERVICES_FILES_SERVE="xsendfile"):
        sent = serve_file(RequestFactory().get("/"), field_file(storage, name))
        assert sent["X-Sendfile"] == storage.path(name) and sent.content == b""


@pytest.fixture
def blobstore(testbed, svc):
    with override_settings(GAESERVICES_FILES_UPLOAD="blobstore", GAESERVICES_FILES_SERVE="blobstore"):
        yield testbed


def test_the_blobstore_flow_keeps_blob_keys_and_serves_them_by_key(blobstore):
    from test_filetransfers_blobstore import make_blob

    make_blob(blobstore, "blob-1", b"hello blob", filename="r.txt")
    storage = FileTransferStorage()
    assert isinstance(storage, BlobstoreStorage)
    part = SimpleUploadedFile("r.txt", b"", content_type="message/external-body")
    part.content_type_extra = {"blob-key": "blob-1", "access-type": "X-AppEngine-BlobKey"}
    name = storage.save("r.txt", part)
    assert name == "blob-1" and storage.exists(name) and storage.size(name) == 10
    assert storage.open(name).read() == b"hello blob"
    response = serve_file(RequestFactory().get("/", HTTP_RANGE="bytes=0-4"), field_file(storage, name))
    assert response["X-AppEngine-BlobKey"] == "blob-1" and response["X-AppEngine-BlobRange"] == "bytes=0-4"
    url, _ = prepare_upload(RequestFactory().get("/"), "/done/")
    assert "/_ah/upload/" in url
    with pytest.raises(UploadRejectedError):  # not a blob reference
        storage.save("x.txt", ContentFile(b"bytes"))
    missing = SimpleUploadedFile("r.txt", b"", content_type="message/external-body")
    missing.content_type_extra = {"blob-key": "no-such-blob"}
    with pytest.raises(UploadRejectedError):
        storage.save("r.txt", missing)
    storage.delete(name)
    assert not storage.exists(name)
