"""The ``stream`` backend: the application itself sends the file (see :mod:`.stream`)."""

from __future__ import annotations

from typing import Any

from webob import Response

from .disposition import disposition_headers
from .paths import UnsafePath, refuse
from .sources import local_file
from .stream import not_found, respond

__all__ = ["FileResponse", "StreamBackend", "make_response", "not_found_response"]


class FileResponse(Response):
    """A webob.Response whose status, headers and body are already final.

    It is an ordinary Response to the application (headers can still be read and
    changed), but building and calling it skips what WebOb would redo per request:
    parsing the status, adding a default type, making Location absolute (a
    relative Location is valid HTTP) and running its own conditional logic, which
    would repeat ours without If-Range or multiple ranges.
    """

    def __init__(self, status: str, headerlist: list[tuple[str, str]], app_iter: Any) -> None:
        self._status = status
        self._headers = None
        self._headerlist = headerlist
        self._app_iter = app_iter
        self.conditional_response = False

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        start_response(self._status, self._headerlist)
        app_iter = self._app_iter
        if environ["REQUEST_METHOD"] == "HEAD" and app_iter:
            close = getattr(app_iter, "close", None)
            if close is not None:
                close()
            return []
        return app_iter


make_response = FileResponse


def not_found_response() -> Any:
    return make_response(*not_found())


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
    ) -> Any:
        try:
            source = local_file(file, root or self.root)
        except UnsafePath as exc:
            refuse(file, exc)
            return not_found_response()
        except OSError:
            return not_found_response()
        opener = source.opener
        status, headers, body = respond(
            request.environ,
            source.info,
            path=source.path if opener is None else None,
            opener=opener,
            content_type=content_type,
            extra_headers=(disposition_headers(save_as, source.own_name()) if save_as else []),
        )
        return make_response(status, headers, body)
