"""Uploaded files, and the ``local`` upload backend (multipart straight to the application).

The local backend's upload URL is the success URL itself (with the one-time token
in its query string for a private upload): the browser posts the form there, and
:func:`~gaeservices.filetransfers.api.uploaded_files` checks, in this order and
before reading a byte of the body, the token's signature, age and path, the
declared length against ``max_upload_size``, and the token's single use; then it
reads the body (see :mod:`.formdata`), saving each file part under the files root
in a directory of its own with a random name, so one upload can never overwrite or
guess another's file. The other form fields are put back as the request's body,
url-encoded, so ``request.POST`` (or any framework reading the environ) finds them.
"""

from __future__ import annotations

import io
import logging
import os
import secrets
from typing import Any, BinaryIO
from urllib.parse import urlencode, urlsplit

from . import tokens
from .disposition import safe_filename

__all__ = ["UploadedFile", "LocalUploadBackend", "file_fields", "DEFAULT_MAX_UPLOAD_SIZE"]

DEFAULT_MAX_UPLOAD_SIZE = 32 * 1024 * 1024

logger = logging.getLogger("gaeservices.filetransfers")


class UploadedFile:
    """One uploaded file, whatever the backend.

    ``name`` is what to keep in your database and pass to ``serve_file`` later: a
    name under the files root (local), or the blob key (Blobstore). ``path`` is the
    local file (None for a blob); ``blob_key`` the blob's key (None for a local file).
    """

    __slots__ = ("field", "filename", "content_type", "size", "name", "path", "blob_key")

    def __init__(self, *, field: str, filename: str, content_type: str, size: int, name: str,
                 path: str | None = None, blob_key: str | None = None) -> None:
        self.field = field
        self.filename = filename
        self.content_type = content_type
        self.size = size
        self.name = name
        self.path = path
        self.blob_key = blob_key

    def __repr__(self) -> str:
        return f"<UploadedFile {self.field}={self.filename!r} {self.size} bytes as {self.name!r}>"


def file_fields(request: Any) -> list[tuple[str, Any]]:
    """The (field name, part) pairs of a multipart request that carry a file."""
    if request.method != "POST":
        return []
    return [(key, value) for key, value in request.POST.items()
            if getattr(value, "filename", None) is not None and hasattr(value, "file")]


def success_path(success_url: str) -> str:
    return urlsplit(success_url).path or "/"


def _short(filename: str, limit: int = 200) -> str:
    # Filesystems cap a name at 255 bytes; keep the extension, which gives the type.
    if len(filename.encode()) <= limit:
        return filename
    stem, ext = os.path.splitext(filename)
    ext = ext if len(ext.encode()) <= 20 else ""
    while len((stem + ext).encode()) > limit:
        stem = stem[:-1]
    return stem + ext


class LocalUploadBackend:
    """Uploads go to the application, which saves them under the files root."""

    __slots__ = ("root", "services", "max_upload_size")

    def __init__(self, *, root: str, services: Any, max_upload_size: int = DEFAULT_MAX_UPLOAD_SIZE) -> None:
        self.root = root
        self.services = services
        self.max_upload_size = max_upload_size

    @classmethod
    def from_settings(cls, settings: Any, value: Any = None) -> LocalUploadBackend:
        return cls(root=settings.root, services=settings.services, max_upload_size=settings.max_upload_size)

    def prepare_upload(self, request: Any, success_url: str, *, private: bool = False) -> tuple[str, dict[str, str]]:
        if not private:
            return success_url, {}
        # In the URL, not the form: it is checked before the body is read.
        token = tokens.issue(self.services, success_path(success_url))
        url, sep, fragment = success_url.partition("#")
        url += ("&" if "?" in url else "?") + urlencode({tokens.FIELD: token})
        return url + sep + fragment, {}

    def uploaded_files(self, request: Any, *, private: bool = False,
                       max_upload_size: int | None = None) -> list[UploadedFile]:
        from .formdata import boundary_of, declared_length, read_form

        environ = request.environ
        limit = self.max_upload_size if max_upload_size is None else max_upload_size
        token = tokens.from_query(environ)
        nonce = None
        if private or token is not None:
            nonce, _ = tokens.verify(self.services, token, request.path)
        boundary = boundary_of(environ.get("CONTENT_TYPE", "")) if environ["REQUEST_METHOD"] == "POST" else None
        length = declared_length(environ, limit) if boundary is not None else None
        if nonce is not None:
            tokens.use(self.services, nonce)
        if boundary is None:
            return []  # not a multipart post: no files (a urlencoded body stays for request.POST)
        parts, fields, skipped = read_form(environ, boundary, length=length, limit=limit, open_file=self._open)
        for field, why in skipped:
            logger.warning("ignored field %r of a local upload: %s", field, why)
        _replace_body(environ, fields)
        return [
            UploadedFile(field=part.field, filename=os.path.basename(part.path), content_type=part.content_type
                         or "application/octet-stream", size=part.size,
                         name=os.path.basename(os.path.dirname(part.path)) + "/" + os.path.basename(part.path),
                         path=part.path)
            for part in parts
        ]

    def _open(self, filename: str) -> tuple[str, BinaryIO]:
        # "%" would be percent-decoded by some X-Sendfile servers, read raw by others
        filename = _short(safe_filename(filename).replace("%", "_") or "upload")
        directory = os.path.join(self.root, secrets.token_hex(12))
        os.makedirs(directory)
        path = os.path.join(directory, filename)
        return path, open(path, "xb")


def _replace_body(environ: dict[str, Any], fields: list[tuple[str, bytes]]) -> None:
    """Put the form's other fields back as a url-encoded body, read by request.POST."""
    body = urlencode([(name.encode("utf-8"), value) for name, value in fields]).encode("ascii")
    environ["wsgi.input"] = io.BytesIO(body)
    environ["CONTENT_TYPE"] = "application/x-www-form-urlencoded; charset=utf-8"
    environ["CONTENT_LENGTH"] = str(len(body))
    environ.pop("wsgi.input_terminated", None)
