"""File transfers: uploads, downloads and public URLs over streaming, X-Sendfile,
X-Accel-Redirect and App Engine's Blobstore (see docs/filetransfers.md).

Public names resolve on first use, so importing this package costs nothing.
"""

from __future__ import annotations

from typing import Any

_LAZY = {
    "prepare_upload": "api",
    "serve_file": "api",
    "public_download_url": "api",
    "uploaded_files": "api",
    "upload_fields_html": "api",
    "UploadedFile": "uploads",
    "FileResponse": "response",
    "XSendfileMiddleware": "middleware",
    "content_disposition": "disposition",
}

__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value
