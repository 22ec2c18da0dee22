"""Uploaded files, and the ``local`` upload backend (multipart straight to the application).

The local backend's upload URL is the success URL itself: the browser posts the
form there, and :func:`~gaeservices.filetransfers.api.uploaded_files` saves each
file part under the files root, in a directory of its own with a random name, so
one upload can never overwrite or guess another's file.
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
from typing import Any
from urllib.parse import urlsplit

from . import tokens
from .disposition import safe_filename

__all__ = ["UploadedFile", "LocalUploadBackend", "file_fields"]

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

    __slots__ = ("root", "services")

    def __init__(self, *, root: str, services: Any) -> None:
        self.root = root
        self.services = services

    @classmethod
    def from_settings(cls, settings: Any, value: Any = None) -> LocalUploadBackend:
        return cls(root=settings.root, services=settings.services)

    def prepare_upload(self, request: Any, success_url: str, *, private: bool = False) -> tuple[str, dict[str, str]]:
        data = {}
        if private:
            data[tokens.FIELD] = tokens.issue(self.services, success_path(success_url))
        return success_url, data

    def uploaded_files(self, request: Any, *, private: bool = False) -> list[UploadedFile]:
        parts = file_fields(request)
        token = request.POST.get(tokens.FIELD) if request.method == "POST" else None
        if private or token is not None:
            tokens.redeem(self.services, token if isinstance(token, str) else None, request.path)
        files = []
        for field, part in parts:
            if part.type and part.type.lower().startswith("message/external-body"):
                # A blob reference can only come from App Engine's upload service;
                # sent straight to this application it is a forgery.
                logger.warning("ignored a blob reference in field %r of a local upload", field)
                continue
            files.append(self._save(field, part))
        return files

    def _save(self, field: str, part: Any) -> UploadedFile:
        filename = _short(safe_filename(part.filename or "") or "upload")
        directory = secrets.token_hex(12)
        os.makedirs(os.path.join(self.root, directory), exist_ok=True)
        path = os.path.join(self.root, directory, filename)
        source = part.file
        source.seek(0)
        with open(path, "xb") as target:
            shutil.copyfileobj(source, target, 64 * 1024)
            size = target.tell()
        return UploadedFile(
            field=field,
            filename=filename,
            content_type=part.type or "application/octet-stream",
            size=size,
            name=f"{directory}/{filename}",
            path=path,
        )
