"""The ``blobstore`` backend: App Engine stores the uploads and sends the downloads.

Downloads answer with ``X-AppEngine-BlobKey``; App Engine's front end replaces the
empty body with the blob. A client's single byte range is forwarded as
``X-AppEngine-BlobRange`` (App Engine serves one range; several, or a malformed
header, are dropped and the whole blob is sent). Blobs never change once written,
so If-Range always holds for a given key and the range is forwarded regardless.

Uploads go to a URL from ``blobstore.create_upload_url``; App Engine stores each
file as a blob and then posts the form to the success URL with every file part
replaced by a ``message/external-body`` reference carrying its blob key. For a
private upload the one-time token (see :mod:`.tokens`) must redeem, and every blob
must have been created after the token was issued: a callback forged with an
older blob's key -- someone else's file -- is rejected. The creation time is read
from the blob's BlobInfo, not from the callback, which anyone can write; a blob
without one (a Cloud Storage upload) can only be checked against the callback's.
"""

from __future__ import annotations

import calendar
import logging
import re
from typing import Any

from ..exceptions import UploadRejectedError
from . import tokens
from .content import DEFAULT_TYPE, download_headers, served_type
from .response import FileResponse, make_response, not_found_response
from .stream_backend import PRIVATE
from .uploads import UploadedFile, file_fields, success_path

__all__ = ["BlobstoreBackend", "blob_reference"]

logger = logging.getLogger("gaeservices.filetransfers")

_SINGLE_RANGE = re.compile(r"bytes=(?:[0-9]{1,18}-[0-9]{0,18}|-[0-9]{1,18})")
_CLOCK_SKEW = 300  # seconds a blob's creation may precede its token's issue


class BlobstoreBackend:
    """Serve blobs by key and upload through App Engine's Blobstore."""

    __slots__ = ("services", "max_bytes_per_blob", "max_bytes_total", "gs_bucket_name")

    def __init__(self, *, services: Any, max_bytes_per_blob: int | None = None,
                 max_bytes_total: int | None = None, gs_bucket_name: str | None = None) -> None:
        self.services = services
        self.max_bytes_per_blob = max_bytes_per_blob
        self.max_bytes_total = max_bytes_total
        self.gs_bucket_name = gs_bucket_name

    @classmethod
    def from_settings(cls, settings: Any, value: Any = None) -> BlobstoreBackend:
        return cls(services=settings.services, max_bytes_total=settings.max_upload_size)

    # -- downloads --------------------------------------------------------------

    def serve(self, request: Any, file: Any, *, save_as: bool | str = False,
              content_type: str | None = None, root: str | None = None, trusted: bool = False,
              cache_control: str | None = PRIVATE) -> FileResponse:
        from google.appengine.ext import blobstore

        key, info = _key_and_info(file, blobstore)
        if key is None:
            return not_found_response()
        # The blob's record is read for its type, or for its name when the answer needs one.
        needs_name = save_as is True or (
            not trusted and content_type is not None and not served_type(content_type, DEFAULT_TYPE, trusted=False)[1])
        if info is None and (content_type is None or (needs_name and not getattr(file, "filename", None))):
            info = blobstore.BlobInfo.get(key)
            if info is None:
                return not_found_response()
        filename = getattr(file, "filename", None) or (info.filename if info is not None else None)
        # The blob's stored type is what its uploader claimed: the same rules apply to it.
        content_type, extra = download_headers(
            content_type, (info.content_type if info is not None else None) or DEFAULT_TYPE, lambda: filename,
            save_as=save_as, trusted=trusted, cache_control=cache_control)
        headers = [
            (blobstore.BLOB_KEY_HEADER, key),
            ("Content-Type", content_type),
            ("X-Content-Type-Options", "nosniff"),
            *extra,
        ]
        client_range = request.environ.get("HTTP_RANGE")
        if client_range and request.method == "GET":
            client_range = client_range.replace(" ", "")
            if _SINGLE_RANGE.fullmatch(client_range):
                headers.append((blobstore.BLOB_RANGE_HEADER, client_range))
        return make_response("200 OK", headers, [])

    def public_url(self, file: Any) -> str | None:
        return None  # a blob is only reachable through the application

    # -- uploads ----------------------------------------------------------------

    def prepare_upload(self, request: Any, success_url: str, *, private: bool = False) -> tuple[str, dict[str, str]]:
        from google.appengine.ext import blobstore

        path = success_path(success_url)
        query = success_url.partition("?")[2]
        url = blobstore.create_upload_url(
            path + ("?" + query if query else ""),
            max_bytes_per_blob=self.max_bytes_per_blob,
            max_bytes_total=self.max_bytes_total,
            gs_bucket_name=self.gs_bucket_name,
        )
        data = {tokens.FIELD: tokens.issue(self.services, path)} if private else {}
        return url, data

    def uploaded_files(self, request: Any, *, private: bool = False,
                       max_upload_size: int | None = None) -> list[UploadedFile]:
        from .formdata import declared_length
        from .uploads import DEFAULT_MAX_UPLOAD_SIZE

        if request.method == "POST":
            # App Engine's callback carries references, not the files: it is small.
            # Anything big posted here is not one, and is refused unread.
            limit = max_upload_size or self.max_bytes_total or DEFAULT_MAX_UPLOAD_SIZE
            declared_length(request.environ, limit)
        parts = file_fields(request)
        token = request.POST.get(tokens.FIELD) if request.method == "POST" else None
        issued = None
        if private or token is not None:
            issued = tokens.redeem(self.services, token if isinstance(token, str) else None, request.path)
        files = []
        for field, part in parts:
            if not (part.type or "").lower().startswith("message/external-body"):
                logger.warning("ignored field %r of a Blobstore callback: not a blob", field)
                continue
            files.append(blob_reference(field, part, issued))
        return files


def blob_reference(field: str, part: Any, issued: float | None = None) -> UploadedFile:
    """The blob that a Blobstore callback's ``part`` names; UploadRejectedError if it is not one.

    ``part`` is a form part as App Engine posts it: ``type_options`` holding the
    ``blob-key``, ``disposition_options`` the ``filename``, ``headers``, and ``file``
    the upload's own headers. With ``issued`` (when a private upload's token was
    issued) the blob must have been created after it: the part's creation time is
    whatever the poster wrote, so the blob's own record is the truth (a Cloud
    Storage upload has none, and only the part's can be checked).
    """
    from google.appengine.ext import blobstore

    try:
        info = blobstore.parse_blob_info(part)
    except (blobstore.BlobInfoParseError, ValueError) as exc:
        raise UploadRejectedError(f"field {field!r} is not a valid blob reference: {exc}") from None
    if issued is not None:
        stored = blobstore.BlobInfo.get(info.key())
        creation = stored.creation if stored is not None else info.creation
        if calendar.timegm(creation.utctimetuple()) < issued - _CLOCK_SKEW:
            raise UploadRejectedError(f"blob {info.key()} predates this upload's token")
    key = str(info.key())
    return UploadedFile(field=field, filename=info.filename, content_type=info.content_type,
                        size=info.size, name=key, blob_key=key)


def _key_and_info(file: Any, blobstore: Any) -> tuple[str | None, Any]:
    if isinstance(file, blobstore.BlobInfo):
        return str(file.key()), file
    key: str | None
    if isinstance(file, (str, blobstore.BlobKey)):
        key = str(file)
    else:
        found = getattr(file, "blob_key", None)
        key = str(found) if found else None
    if key is not None and ("\r" in key or "\n" in key or not key.strip()):
        return None, None
    return key, None
