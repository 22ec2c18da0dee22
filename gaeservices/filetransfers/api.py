"""File transfers for any WSGI application: uploads, downloads and public URLs.

The same calls work whichever backend does the work -- the application streaming
the file, a front server (X-Sendfile, X-Accel-Redirect), or App Engine's Blobstore
-- so moving between a laptop, your servers and App Engine changes configuration,
not code. Requests are WebOb requests (wrap a plain environ with
``webob.Request(environ)``); downloads are :class:`~.response.FileResponse` values,
which are WSGI applications.
"""

from __future__ import annotations

import html
from collections.abc import Mapping
from typing import Any

from .backends import backend, settings
from .response import FileResponse
from .stream_backend import PRIVATE
from .uploads import UploadedFile

__all__ = [
    "prepare_upload",
    "serve_file",
    "public_download_url",
    "uploaded_files",
    "upload_fields_html",
    "UploadedFile",
]


def prepare_upload(
    request: Any,
    success_url: str,
    *,
    private: bool = False,
    backend: Any = None,
    services: Any = None,
) -> tuple[str, dict[str, str]]:
    """Where an upload form must post, and the hidden fields it must carry.

    After the upload, the request reaching ``success_url`` holds the files (see
    :func:`uploaded_files`). ``private=True`` adds a one-time token, so the upload's
    callback cannot be replayed to claim someone else's file: in the URL for the
    local backend (checked before the body is read), in the fields for the Blobstore.
    """
    chosen = _backend("upload", backend, services)
    return chosen.prepare_upload(request, success_url, private=private)


def uploaded_files(
    request: Any,
    *,
    private: bool = False,
    max_upload_size: int | None = None,
    backend: Any = None,
    services: Any = None,
) -> list[UploadedFile]:
    """The files of a finished upload (a local multipart post or a Blobstore callback).

    Raises :class:`~gaeservices.exceptions.UploadRejectedError`, and nothing is
    stored, when the upload is refused; answer with its ``status``: 403 when it was
    prepared ``private`` and its token is missing, invalid, expired or already used;
    413 (:class:`~gaeservices.exceptions.UploadTooLargeError`) when its body is over
    ``max_upload_size`` bytes (default: ``GAESERVICES_FILES_MAX_UPLOAD_SIZE``, 32
    MiB); 400 or 411 (:class:`~gaeservices.exceptions.MalformedUploadError`) when
    it is not a complete multipart body or declares no length. The token and the
    declared length are checked before the body is read. Call it before reading
    ``request.POST``: it reads the body itself, then leaves the other fields there.
    """
    chosen = _backend("upload", backend, services)
    return chosen.uploaded_files(request, private=private, max_upload_size=max_upload_size)


def serve_file(
    request: Any,
    file: Any,
    *,
    save_as: bool | str = False,
    content_type: str | None = None,
    backend: Any = None,
    root: str | None = None,
    trusted: bool = False,
    cache_control: str | None = PRIVATE,
    services: Any = None,
) -> FileResponse:
    """A response that sends ``file``: a :class:`FileResponse`, which is a WSGI application.

    ``file`` is a name under the files root (``root``, default the configured
    one), an open binary file, an :class:`UploadedFile`, a storage object with a
    ``path``, or a blob key. ``save_as=True`` asks the browser to save it under its
    own name, a string under that name; False shows it inline -- if it may be:
    unless ``trusted=True`` (the application's own files, never uploads), only
    types no browser executes are shown inline; HTML, SVG, XML, script and
    unknown types are sent as sandboxed ``application/octet-stream`` attachments,
    whatever ``content_type`` says (see :mod:`.content`). ``cache_control`` is
    the Cache-Control value (None sends none); the default, ``private``, keeps
    shared caches from storing one user's download for others. A name that is
    missing or not allowed gets 404.
    """
    chosen = _backend("serve", backend, services)
    return chosen.serve(request, file, save_as=save_as, content_type=content_type, root=root, trusted=trusted,
                        cache_control=cache_control)


def public_download_url(file: Any, *, backend: Any = None, services: Any = None) -> str | None:
    """A URL that downloads ``file`` without going through the application, or None."""
    return _backend("public", backend, services).public_url(file)


def upload_fields_html(upload_data: Mapping[str, str]) -> str:
    """``upload_data`` as hidden ``<input>`` elements, every name and value escaped."""
    return "".join(
        f'<input type="hidden" name="{html.escape(str(name), quote=True)}" '
        f'value="{html.escape(str(value), quote=True)}">'
        for name, value in upload_data.items()
    )


def _backend(kind: str, given: Any, services: Any) -> Any:
    if given is not None and not isinstance(given, str):
        return given
    return backend(kind, given, settings(services))
