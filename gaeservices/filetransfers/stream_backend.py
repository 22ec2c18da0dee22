"""The ``stream`` backend: the application itself sends the file (see :mod:`.stream`)."""

from __future__ import annotations

from typing import Any

from .content import download_headers
from .paths import UnsafePath, refuse
from .response import FileResponse, make_response, not_found_response
from .sources import local_file
from .stream import respond

__all__ = ["FileResponse", "StreamBackend", "make_response", "not_found_response", "PRIVATE"]

PRIVATE = "private"
_PRIVATE_HEADERS = [("Cache-Control", PRIVATE)]


class StreamBackend:
    """Send the file from this process, with ranges and conditional requests."""

    __slots__ = ("root",)

    def __init__(self, *, root: str) -> None:
        self.root = root

    @classmethod
    def from_settings(cls, settings: Any, value: Any = None) -> StreamBackend:
        return cls(root=settings.root)

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
        except UnsafePath as exc:
            refuse(file, exc)
            return not_found_response()
        except OSError:
            return not_found_response()
        info = source.info
        cache: list[tuple[str, str]] = []
        extra: list[tuple[str, str]]
        if content_type is None and not save_as and cache_control is PRIVATE and (trusted or info.inline):
            extra, cache = [], _PRIVATE_HEADERS  # the common case, without building anything
        else:
            content_type, extra = download_headers(content_type, info.content_type, source.own_name,
                                                   save_as=save_as, trusted=trusted, cache_control=cache_control)
            if content_type == info.content_type:
                content_type = None
        opener = source.opener
        status, headers, body = respond(
            request.environ,
            info,
            path=source.path if opener is None else None,
            opener=opener,
            content_type=content_type,
            extra_headers=extra,
            cache_headers=cache,
        )
        return make_response(status, headers, body)
