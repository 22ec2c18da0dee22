"""Storages for the two upload flows of the file-transfer service.

``STORAGES = {"default": {"BACKEND": "gaeservices.django.storage.FileTransferStorage"}}``
(``settings_base`` sets it) gives the one the configured upload backend needs:

- ``local`` (the default off App Engine): :class:`LocalStorage`, Django's
  ``FileSystemStorage`` rooted at the files root (``GAESERVICES_FILES_ROOT``), so
  every uploaded ``FieldFile`` is a file ``serve_file`` can send, by its path or
  by its name, through any serve backend (streaming, X-Sendfile, X-Accel-Redirect);
- ``blobstore`` (the default on App Engine): :class:`BlobstoreStorage`. App Engine
  has already stored each uploaded file as a blob when it posts the form to the
  application; Django's parser hands the view a ``message/external-body`` part
  naming the blob, and saving it keeps the blob's key as the file's name.
"""

from __future__ import annotations

from typing import Any

from django.core.files.base import File
from django.core.files.storage import FileSystemStorage, Storage
from django.utils.deconstruct import deconstructible

from ..exceptions import UploadRejectedError
from ..filetransfers.backends import settings as files_settings
from .conf import services, setting

__all__ = ["FileTransferStorage", "LocalStorage", "BlobstoreStorage"]


def upload_backend() -> str:
    return str(setting("GAESERVICES_FILES_UPLOAD") or files_settings(services()).upload)


class FileTransferStorage:
    """The storage of the configured upload backend: :class:`LocalStorage` or :class:`BlobstoreStorage`."""

    def __new__(cls, **options: Any) -> Any:
        if upload_backend() == "blobstore":
            return BlobstoreStorage(**options)
        return LocalStorage(**options)


@deconstructible(path="gaeservices.django.storage.LocalStorage")
class LocalStorage(FileSystemStorage):
    """``FileSystemStorage`` whose default location is the file-transfer service's files root."""

    def __init__(self, location: Any = None, base_url: Any = None, **options: Any) -> None:
        if location is None:
            location = files_settings(services()).root
        super().__init__(location=location, base_url=base_url, **options)


def is_blob_reference(upload: Any) -> bool:
    """Whether a Django upload is App Engine's reference to a stored blob."""
    return str(getattr(upload, "content_type", "")).lower().startswith("message/external-body")


class _BlobPart:
    """A Django upload of a blob reference, as the service reads a Blobstore callback's part."""

    __slots__ = ("name", "type_options", "disposition_options", "headers", "file")

    def __init__(self, field: str, upload: Any) -> None:
        extra = getattr(upload, "content_type_extra", None) or {}
        self.name = field
        # Django's parser keeps a part's Content-Type parameters as bytes.
        self.type_options = {key: value.decode("latin-1") if isinstance(value, bytes) else value
                             for key, value in extra.items()}
        self.disposition_options = {"filename": upload.name}
        self.headers: dict[str, str] = {}
        upload.seek(0)
        self.file = upload


def checked_blob(field: str, upload: Any, issued: float | None = None) -> Any:
    """The service's check of a blob reference uploaded through Django (``blob_reference``)."""
    from ..filetransfers.blobstore import blob_reference

    return blob_reference(field, _BlobPart(field, upload), issued)


@deconstructible(path="gaeservices.django.storage.BlobstoreStorage")
class BlobstoreStorage(Storage):
    """Files are App Engine blobs, named by their keys."""

    holds_blob_keys = True

    def __init__(self, **options: Any) -> None:
        self.options = options

    @staticmethod
    def _blobstore() -> Any:
        from google.appengine.ext import blobstore

        return blobstore

    def _save(self, name: str, content: Any) -> str:
        if not is_blob_reference(content):
            raise UploadRejectedError(
                "the Blobstore keeps what App Engine's upload service received: save a file "
                "uploaded through prepare_upload's URL (a blob reference), not other content"
            )
        key = checked_blob(name, content).name
        if self._blobstore().BlobInfo.get(key) is None:
            raise UploadRejectedError(f"blob {key!r} does not exist")
        return key

    def get_available_name(self, name: str, max_length: int | None = None) -> str:
        return name  # a blob key is unique by construction

    def generate_filename(self, filename: str) -> str:
        return filename

    def _open(self, name: str, mode: str = "rb") -> File:
        return File(self._blobstore().BlobReader(name), name=name)

    def exists(self, name: str) -> bool:
        return self._blobstore().BlobInfo.get(name) is not None

    def size(self, name: str) -> int:
        info = self._blobstore().BlobInfo.get(name)
        if info is None:
            raise FileNotFoundError(name)
        return int(info.size)

    def delete(self, name: str) -> None:
        self._blobstore().delete(name)

    def url(self, name: str | None) -> str:
        raise NotImplementedError("blobs have no public URL: serve them with serve_file")
