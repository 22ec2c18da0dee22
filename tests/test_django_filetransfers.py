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


def blob_part(key, filename, content):
    """A blob reference as Django's parser hands over App Engine's callback part."""
    import base64
    import datetime
    import hashlib

    md5 = base64.urlsafe_b64encode(hashlib.md5(content).digest()).decode()
    created = datetime.datetime.now(datetime.timezone.utc)
    part = SimpleUploadedFile(filename, (
        f"Content-Type: text/plain\r\nContent-Length: {len(content)}\r\nContent-MD5: {md5}\r\n"
        f"X-AppEngine-Upload-Creation: {created:%Y-%m-%d %H:%M:%S.%f}\r\n\r\n").encode(),
        content_type="message/external-body")
    part.content_type_extra = {"blob-key": key.encode(), "access-type": b"X-AppEngine-BlobKey"}
    return part


def test_the_blobstore_flow_keeps_blob_keys_and_serves_them_by_key(blobstore):
    from test_filetransfers_blobstore import make_blob

    make_blob(blobstore, "blob-1", b"hello blob", filename="r.txt")
    storage = FileTransferStorage()
    assert isinstance(storage, BlobstoreStorage)
    name = storage.save("r.txt", blob_part("blob-1", "r.txt", b"hello blob"))
    assert name == "blob-1" and storage.exists(name) and storage.size(name) == 10
    assert storage.open(name).read() == b"hello blob"
    response = serve_file(RequestFactory().get("/", HTTP_RANGE="bytes=0-4"), field_file(storage, name))
    assert response["X-AppEngine-BlobKey"] == "blob-1" and response["X-AppEngine-BlobRange"] == "bytes=0-4"
    url, _ = prepare_upload(RequestFactory().get("/"), "/done/")
    assert "/_ah/upload/" in url
    with pytest.raises(UploadRejectedError):  # not a blob reference
        storage.save("x.txt", ContentFile(b"bytes"))
    with pytest.raises(UploadRejectedError, match="does not exist"):
        storage.save("r.txt", blob_part("no-such-blob", "r.txt", b"x"))
    bare = SimpleUploadedFile("r.txt", b"", content_type="message/external-body")
    bare.content_type_extra = {"blob-key": b"blob-1"}
    with pytest.raises(UploadRejectedError, match="not a valid blob reference"):  # no upload headers
        storage.save("r.txt", bare)
    storage.delete(name)
    assert not storage.exists(name)


def test_a_forged_blobstore_callback_naming_someone_elses_blob_is_refused(blobstore):
    # The callback is posted straight to the success URL with a fresh token from
    # the form and another user's older blob: the token is genuine, the blob is not
    # this upload's. The service refuses it; so must the Django flow.
    import datetime

    from test_filetransfers_blobstore import callback, make_blob

    now = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)
    make_blob(blobstore, "victim", b"theirs", filename="theirs.txt", creation=now - datetime.timedelta(hours=1))
    client = Client()
    form = client.get("/private-upload/").content.decode()
    token = re.search(r'name="gaeservices_upload_token" value="([^"]+)"', form).group(1)
    forged = callback("/private-upload/", {"file": ("victim", "theirs.txt", b"theirs", now)},
                      {"gaeservices_upload_token": token})
    refused = client.post("/private-upload/", forged.body, content_type=forged.headers["Content-Type"])
    assert refused.status_code == 403 and "predates" in refused.content.decode()
    # the token in the query string instead of the form is no way around it
    form = client.get("/private-upload/").content.decode()
    token = re.search(r'name="gaeservices_upload_token" value="([^"]+)"', form).group(1)
    forged = callback("/private-upload/", {"file": ("victim", "theirs.txt", b"theirs", now)})
    refused = client.post(f"/private-upload/?gaeservices_upload_token={token}", forged.body,
                          content_type=forged.headers["Content-Type"])
    assert refused.status_code == 403

    # App Engine's own callback for a blob made after the token was issued is saved
    form = client.get("/private-upload/").content.decode()
    token = re.search(r'name="gaeservices_upload_token" value="([^"]+)"', form).group(1)
    now = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)
    make_blob(blobstore, "mine", b"mine", filename="mine.txt", creation=now)
    genuine = callback("/private-upload/", {"file": ("mine", "mine.txt", b"mine", now)},
                       {"gaeservices_upload_token": token})
    saved = client.post("/private-upload/", genuine.body, content_type=genuine.headers["Content-Type"])
    assert saved.status_code == 200 and saved.json() == {"name": "mine"}
