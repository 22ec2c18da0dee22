"""The ``stream`` backend: the application itself sends the file (see :mod:`.stream`)."""

from __future__ import annotations

from typing import Any

from .disposition import disposition_headers
from .paths import UnsafePath, refuse
from .sources import local_file
from .stream import not_found, respond

__all__ = ["StreamBackend", "make_response", "not_found_response"]


def make_response(status: str, headers: list[tuple[str, str]], body: Any) -> Any:
    """A webob.Response around a ready status, header list and body.

    conditional_response stays off: the conditional logic already ran, and
    WebOb's would run it a second time, without If-Range or multiple ranges.
    """
    from webob import Response

    return Response(status=status, headerlist=headers, app_iter=body, conditional_response=False)


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
            extra_headers=disposition_headers(save_as, source.filename),
        )
        return make_response(status, headers, body)
