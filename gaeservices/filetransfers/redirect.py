"""Public URLs (``none``, or a base URL + the file's name) and the ``redirect`` backend.

A public URL is one a browser can fetch without the application: a CDN, a bucket,
a web server's static directory. ``public_download_url`` returns None where there
is none, so templates can fall back to a ``serve_file`` view.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from .paths import UnsafePath, check_name, refuse
from .content import check_header_value
from .response import FileResponse, make_response, not_found_response
from .stream_backend import PRIVATE

__all__ = ["NoPublicURL", "BaseURL", "RedirectBackend", "file_name"]


def file_name(file: Any) -> str | None:
    """The storage name of ``file``: the string itself, or its ``name`` attribute."""
    if isinstance(file, str):
        return file
    name = getattr(file, "name", None)
    return name if isinstance(name, str) else None


class NoPublicURL:
    """Files have no public URL: every download goes through the application."""

    __slots__ = ()

    @classmethod
    def from_settings(cls, settings: Any, value: Any = None) -> NoPublicURL:
        return cls()

    def public_url(self, file: Any) -> str | None:
        return None


class BaseURL:
    """A file's public URL is ``base_url`` + its name, percent-encoded per segment."""

    __slots__ = ("base_url",)

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url if base_url.endswith("/") else base_url + "/"

    @classmethod
    def from_settings(cls, settings: Any, value: Any = None) -> BaseURL:
        return cls(value or settings.public_url)

    def public_url(self, file: Any) -> str | None:
        url = getattr(file, "url", None)
        if isinstance(url, str) and not isinstance(file, str) and "://" in url:
            return url
        name = file_name(file)
        if name is None:
            return None
        try:
            parts = check_name(name)
        except UnsafePath as exc:
            refuse(name, exc)
            return None
        return self.base_url + "/".join(quote(part, safe="") for part in parts)


class RedirectBackend:
    """Answer a download with 302 to the file's public URL (its ``url``, or the public backend's).

    What the browser is then shown is up to the server at that URL: it must apply
    the same rules to user content (see :mod:`.content`), or be on another origin.
    """

    __slots__ = ("settings",)

    def __init__(self, settings: Any) -> None:
        self.settings = settings

    @classmethod
    def from_settings(cls, settings: Any, value: Any = None) -> RedirectBackend:
        return cls(settings)

    def serve(self, request: Any, file: Any, *, save_as: bool | str = False,
              content_type: str | None = None, root: str | None = None, trusted: bool = False,
              cache_control: str | None = PRIVATE) -> FileResponse:
        from .backends import backend

        url = getattr(file, "url", None)
        if not isinstance(url, str) or isinstance(file, str):
            url = backend("public", None, self.settings).public_url(file)
        if not url or "\r" in url or "\n" in url:
            return not_found_response()
        headers = [("Location", url), ("Content-Length", "0")]
        if cache_control is not None:  # the URL may be a signed one, meant for this client alone
            headers.append(("Cache-Control", check_header_value(cache_control, "cache_control")))
        return make_response("302 Found", headers, [])
