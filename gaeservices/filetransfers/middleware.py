"""XSendfileMiddleware: do the front server's X-Sendfile / X-Accel-Redirect job in-process.

In development and tests there is no Apache or nginx in front, so a response that
says ``X-Sendfile: /path`` or ``X-Accel-Redirect: /protected/name`` would reach the
browser empty. This middleware turns such a response into the file itself, with
everything the stream backend does (ranges, multipart ranges, If-Range, ETag and
Last-Modified validation, HEAD, 416, ``wsgi.file_wrapper``).

It serves only files inside the roots it was given: an ``X-Sendfile`` path outside
them, or an ``X-Accel-Redirect`` URI outside every configured location (or one with
``..``, a NUL byte, or a symlink leading out), gets 404 and a log line. Headers the
application set (Content-Type, Content-Disposition, Cache-Control, Set-Cookie...)
are kept; the ``X-Accel-*`` family and the body are replaced.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any
from urllib.parse import unquote_to_bytes

from .paths import UnsafePath, refuse, resolve, within
from .sources import real_root
from .stream import file_info, not_found, respond

__all__ = ["XSendfileMiddleware"]

_REPLACED = frozenset(
    ("content-length", "content-range", "etag", "last-modified", "accept-ranges", "x-sendfile",
     "x-content-type-options", "transfer-encoding")
)


class XSendfileMiddleware:
    """Serve X-Sendfile and X-Accel-Redirect responses of ``app`` from the allowed roots.

    ``roots``: directories X-Sendfile paths may lie in. ``locations``: nginx-style
    internal URI prefixes mapped to directories, for X-Accel-Redirect. Left out,
    both come from the file-transfer settings of ``services`` (the files root, and
    ``GAESERVICES_FILES_XACCEL``), read once here.
    """

    def __init__(
        self,
        app: Callable[..., Any],
        *,
        roots: Iterable[str] | None = None,
        locations: Mapping[str, str] | None = None,
        services: Any = None,
    ) -> None:
        self.app = app
        if roots is None or locations is None:
            from .backends import settings

            current = settings(services)
            if roots is None:
                roots = [current.root] + [directory for directory, _ in current.xaccel]
            if locations is None:
                locations = {location: directory for directory, location in current.xaccel}
        self.roots = tuple(real_root(os.fspath(root)) for root in roots)
        self.locations = sorted(
            (("/" + prefix.strip("/") + "/", real_root(os.fspath(directory))) for prefix, directory in locations.items()),
            key=lambda pair: len(pair[0]),
            reverse=True,
        )

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        captured: list[Any] = []

        def capture(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Callable[[bytes], Any]:
            for name, _ in headers:
                lowered = name.lower()
                if lowered == "x-sendfile" or lowered == "x-accel-redirect":
                    captured[:] = [status, headers]
                    return _no_write
            captured[:] = [None]
            return start_response(status, headers, exc_info)

        result = self.app(environ, capture)
        if not captured:  # the application starts its response lazily, on first iteration
            return _Deferred(self, environ, start_response, captured, result)
        if captured[0] is None:
            return result
        status, headers, body = self._answer(environ, captured[0], captured[1], result)
        start_response(status, headers)
        return body

    def _answer(
        self, environ: dict[str, Any], status: str, headers: list[tuple[str, str]], result: Iterable[bytes]
    ) -> tuple[str, list[tuple[str, str]], Iterable[bytes]]:
        if not status.startswith("200"):
            # Only a successful answer stands for the file; anything else goes
            # out as the application wrote it, minus the instruction.
            kept = [(n, v) for n, v in headers if n.lower() not in ("x-sendfile", "x-accel-redirect")]
            return status, kept, result
        _close(result)
        target: str | None = None
        content_type: str | None = None
        extra = []
        for name, value in headers:
            lowered = name.lower()
            if lowered == "x-sendfile":
                target = self._sendfile_path(value)
            elif lowered == "x-accel-redirect":
                target = self._accel_path(value)
            elif lowered == "content-type":
                content_type = value
            elif lowered not in _REPLACED and not lowered.startswith("x-accel-"):
                extra.append((name, value))
        if target is None:
            return not_found()
        try:
            st = os.stat(target)
        except OSError:
            return not_found()
        import stat

        if not stat.S_ISREG(st.st_mode):
            return not_found()
        return respond(environ, file_info(target, st), path=target, content_type=content_type, extra_headers=extra)

    def _sendfile_path(self, value: str) -> str | None:
        try:
            raw = os.fsdecode(value.encode("latin-1"))
            if "\x00" in raw or not os.path.isabs(raw):
                raise UnsafePath("not an absolute path")
            path = os.path.realpath(raw)
            if within(path, self.roots) is None:
                raise UnsafePath("outside the allowed roots")
        except (UnsafePath, UnicodeError) as exc:
            refuse(value, exc)
            return None
        return path

    def _accel_path(self, value: str) -> str | None:
        uri = value.split("?", 1)[0]
        for prefix, directory in self.locations:
            if uri.startswith(prefix):
                try:
                    name = os.fsdecode(unquote_to_bytes(uri[len(prefix):]))
                    return resolve(directory, name)[0]
                except UnsafePath as exc:
                    refuse(value, exc)
                    return None
                except OSError:
                    return None
        refuse(value, "outside every X-Accel-Redirect location")
        return None


def _no_write(data: bytes) -> None:
    raise RuntimeError("write() cannot be used with an X-Sendfile or X-Accel-Redirect response")


def _close(result: Any) -> None:
    close = getattr(result, "close", None)
    if close is not None:
        close()


class _Deferred:
    """The response of an application that calls start_response on first iteration."""

    def __init__(self, middleware: XSendfileMiddleware, environ: dict[str, Any],
                 start_response: Callable[..., Any], captured: list[Any], result: Iterable[bytes]) -> None:
        self.middleware = middleware
        self.environ = environ
        self.start_response = start_response
        self.captured = captured
        self.result = result
        self.body: Iterable[bytes] | None = None

    def __iter__(self) -> Iterator[bytes]:
        inner = iter(self.result)
        first = next(inner, None)
        captured = self.captured
        if captured and captured[0] is not None:
            status, headers, self.body = self.middleware._answer(self.environ, captured[0], captured[1], self.result)
            self.start_response(status, headers)
            if self.body is self.result:
                if first is not None:
                    yield first
                yield from inner
            else:
                yield from self.body
            return
        if first is not None:
            yield first
        yield from inner

    def close(self) -> None:
        _close(self.result)
        if self.body is not None and self.body is not self.result:
            _close(self.body)
