"""The ``xsendfile`` and ``xaccel`` backends: the front server sends the file.

The application answers with headers only; Apache (mod_xsendfile) or lighttpd reads
``X-Sendfile: /absolute/path``, nginx reads ``X-Accel-Redirect: /internal/uri``
and serves the file itself, ranges and conditional requests included. The worker
is free as soon as the headers are out.

The X-Accel-Redirect URI is percent-encoded, and nginx decodes it. X-Sendfile
has no one encoding: Debian's and Ubuntu's mod_xsendfile (0.12) read the path
raw, while mod_xsendfile 1.0 (``XSendFileUnescape on``, its default) and lighttpd
1.4.40 and later percent-decode it. So the path travels raw -- its bytes as
latin-1, PEP 3333's convention -- and a path holding ``%`` is refused (404,
logged): decoded, ``%2e%2e%2fother`` would become ``../other``, another file. A
path holding a control character is refused too: PEP 3333 lets none into a
header value. (Uploads are saved under names without ``%``.)
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import quote

from .content import download_headers
from .paths import UnsafePath, refuse, within
from .response import FileResponse, make_response, not_found_response
from .sources import local_file, real_root
from .stream_backend import PRIVATE

__all__ = ["XSendfileBackend", "XAccelBackend"]

_CONTROL = re.compile(r"[\x00-\x1f\x7f]").search

def _header_headers(source: Any, save_as: bool | str, content_type: str | None, trusted: bool,
                    cache_control: str | None) -> list[tuple[str, str]]:
    content_type, extra = download_headers(content_type, source.info.content_type, source.own_name,
                                           save_as=save_as, trusted=trusted, cache_control=cache_control)
    return [("Content-Type", content_type), ("X-Content-Type-Options", "nosniff"), *extra, ("Content-Length", "0")]


class _FrontServerBackend:
    __slots__ = ("root",)

    def __init__(self, *, root: str) -> None:
        self.root = root

    def serve(
        self,
        request: Any,
        file: Any,
        *,
        save_as: bool | str = False,
        content_type: str | None = None,
        root: str | None = None,
        trusted: bool = False,
        cache_control: str | None = PRIVATE,
    ) -> FileResponse:
        try:
            source = local_file(file, root or self.root)
            if source.path is None:
                raise UnsafePath("an open file without an absolute name cannot be handed over")
            header = self.header(source.path)
        except UnsafePath as exc:
            refuse(file, exc)
            return not_found_response()
        except OSError:
            return not_found_response()
        headers = _header_headers(source, save_as, content_type, trusted, cache_control)
        return make_response("200 OK", [header] + self.validators(source) + headers, [])

    def header(self, path: str) -> tuple[str, str]:
        raise NotImplementedError

    def validators(self, source: Any) -> list[tuple[str, str]]:
        return []


class XSendfileBackend(_FrontServerBackend):
    """``X-Sendfile: /absolute/path`` for Apache (mod_xsendfile) and lighttpd."""

    __slots__ = ()

    @classmethod
    def from_settings(cls, settings: Any, value: Any = None) -> XSendfileBackend:
        return cls(root=settings.root)

    def validators(self, source: Any) -> list[tuple[str, str]]:
        # mod_xsendfile keeps an ETag and Last-Modified the application sent, and
        # judges conditional requests by them; without one it derives the ETag
        # from the proxied request, which has no file: `ETag: "0"` for every file,
        # so a changed file would be confirmed current with 304.
        info = source.info
        if info.etag is None or info.last_modified is None:
            return []
        return [("ETag", info.etag), ("Last-Modified", info.last_modified)]

    def header(self, path: str) -> tuple[str, str]:
        if _CONTROL(path):  # X-Accel-Redirect percent-encodes them; here they would travel raw
            raise UnsafePath("control character in path")
        if "%" in path:  # read raw by some servers, percent-decoded by others
            raise UnsafePath("'%' in an X-Sendfile path")
        return ("X-Sendfile", os.fsencode(path).decode("latin-1"))


class XAccelBackend(_FrontServerBackend):
    """``X-Accel-Redirect: /internal/prefix/<relative path>`` for nginx.

    ``locations`` maps filesystem roots to nginx ``internal`` locations, e.g.
    ``{"/srv/media": "/protected/media/"}``; a file outside every mapped root is
    refused (404, logged).
    """

    __slots__ = ("locations",)

    def __init__(self, *, root: str, locations: Iterable[tuple[str, str]] | dict[str, str]) -> None:
        super().__init__(root=root)
        pairs = locations.items() if isinstance(locations, dict) else locations
        # Longest root first, so nested mappings pick the most specific location.
        self.locations = sorted(
            ((real_root(directory), "/" + location.strip("/") + "/") for directory, location in pairs),
            key=lambda pair: len(pair[0]),
            reverse=True,
        )

    @classmethod
    def from_settings(cls, settings: Any, value: Any = None) -> XAccelBackend:
        return cls(root=settings.root, locations=settings.xaccel)

    def header(self, path: str) -> tuple[str, str]:
        for directory, location in self.locations:
            if within(path, (directory,)):
                relative = os.path.relpath(path, directory).replace(os.sep, "/")
                return ("X-Accel-Redirect", location + quote(os.fsencode(relative), safe="/"))
        raise UnsafePath("outside every X-Accel-Redirect location")
