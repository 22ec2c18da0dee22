"""The django-filetransfers API on the file-transfer service, with Django requests and responses.

Migrating from django-filetransfers changes imports only:

.. code-block:: python

    # from filetransfers.api import prepare_upload, serve_file, public_download_url
    from gaeservices.django.filetransfers import prepare_upload, serve_file, public_download_url

and ``"filetransfers"`` in ``INSTALLED_APPS`` becomes ``"gaeservices.django"``, which
provides the same ``{% load filetransfers %}`` / ``{% render_upload_data upload_data %}``
template tag. Uploads arrive as Django's ``request.FILES``, saved by the default
storage (:mod:`gaeservices.django.storage`); downloads are Django responses.

The backends are the service's (``stream``, ``xsendfile``, ``xaccel``, ``blobstore``,
``redirect``; ``local`` or ``blobstore`` uploads; public URLs), chosen by the
``GAESERVICES_FILES_*`` settings -- or, where a Django project defines them in its
settings, by those -- or per call with ``backend=``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.http import HttpRequest, HttpResponse, StreamingHttpResponse

from ..filetransfers import api
from ..filetransfers import tokens
from ..filetransfers.stream_backend import PRIVATE
from .conf import services, setting
from .storage import checked_blob, is_blob_reference, upload_backend

__all__ = ["prepare_upload", "serve_file", "public_download_url", "verify_upload", "upload_fields_html"]

upload_fields_html = api.upload_fields_html


class _Request:
    """What the service reads of a request (its WSGI environ and method), from Django's."""

    __slots__ = ("environ", "method", "path")

    def __init__(self, request: HttpRequest) -> None:
        self.environ = request.META
        self.method = request.method
        self.path = request.path


def _backend(kind: str, given: Any) -> Any:
    if given is not None:
        return given
    return setting(f"GAESERVICES_FILES_{kind.upper()}") or None


def prepare_upload(
    request: HttpRequest, url: str, private: bool = False, backend: Any = None
) -> tuple[str, dict[str, str]]:
    """Where the upload form posts, and the hidden fields it carries (``{% render_upload_data %}``).

    ``private=True`` adds a one-time token; the view receiving the upload checks it
    with :func:`verify_upload`.
    """
    return api.prepare_upload(
        _Request(request), url, private=private, backend=_backend("upload", backend), services=services()
    )


def verify_upload(request: HttpRequest) -> None:
    """Use up a private upload's one-time token; ``UploadRejectedError`` (answer 403) if it fails.

    Call it before touching ``request.POST`` or ``request.FILES``: for local uploads
    the token travels in the upload URL, so a refused upload's body is never read.
    (Blobstore callbacks carry it in the form, which App Engine has stored already.)
    Every blob the callback names must have been created after the token was
    issued (the service's check): a callback posted with a genuine token and
    someone else's blob key is refused.
    """
    token = tokens.from_query(request.META)
    in_form = token is None
    if in_form:
        posted = request.POST.get(tokens.FIELD)
        token = posted if isinstance(posted, str) else None
    issued = tokens.redeem(services(), token, request.path)
    if in_form or upload_backend() == "blobstore":
        for field, upload in request.FILES.items():
            if is_blob_reference(upload):
                checked_blob(field, upload, issued)


class _Stored:
    """A file of a storage that has paths: its path (trusted: the storage built it) and name."""

    __slots__ = ("path", "name", "filename")

    def __init__(self, path: str, name: str) -> None:
        self.path = path
        self.name = name
        self.filename = name.rsplit("/", 1)[-1]


def _served(file: Any) -> Any:
    """A ``FieldFile`` as the service takes it: a blob's key, the storage's path, or itself."""
    storage = getattr(file, "storage", None)
    name = getattr(file, "name", None)
    if storage is None or not isinstance(name, str):
        return file
    if getattr(storage, "holds_blob_keys", False):
        return name
    try:
        return _Stored(storage.path(name), name)
    except NotImplementedError:  # a remote storage: its file, with its url
        return file


def serve_file(
    request: HttpRequest,
    file: Any,
    backend: Any = None,
    save_as: bool | str = False,
    content_type: str | None = None,
    *,
    trusted: bool = False,
    cache_control: str | None = PRIVATE,
) -> HttpResponse:
    """A Django response sending ``file`` (a ``FieldFile``, ``File``, name under the files root or blob key).

    Ranges, conditional requests, X-Sendfile / X-Accel-Redirect and Blobstore are the
    service's; ``trusted`` and ``cache_control`` as in
    :func:`gaeservices.filetransfers.serve_file` (uploads are never shown inline as
    active content).
    """
    response = api.serve_file(
        _Request(request),
        _served(file),
        save_as=save_as,
        content_type=content_type,
        backend=_backend("serve", backend),
        trusted=trusted,
        cache_control=cache_control,
        services=services(),
    )
    return to_django(response, request.method == "HEAD")


def public_download_url(file: Any, backend: Any = None) -> str | None:
    """A URL that downloads ``file`` without the application, or None."""
    return api.public_download_url(_served(file), backend=_backend("public", backend), services=services())


def to_django(response: Any, head: bool = False) -> HttpResponse:
    """A service ``FileResponse`` as a Django response, its headers exactly as built."""
    body: Iterable[bytes] = response.app_iter
    names = {name.lower() for name, _ in response.headerlist}
    if head or not body:
        response.close()
        django_response: HttpResponse = HttpResponse(b"", status=response.status_code)
    else:
        django_response = StreamingHttpResponse(body, status=response.status_code)
    if "content-type" not in names:
        del django_response["Content-Type"]  # a 304 or a redirect says none
    for name, value in response.headerlist:
        django_response[name] = value
    return django_response
