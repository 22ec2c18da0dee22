"""Serving a local file over plain WSGI: byte ranges, validators and conditional requests.

This is the HTTP logic behind the ``stream`` backend and :class:`XSendfileMiddleware`.
It speaks plain PEP 3333 (an environ in, a status, headers and body out) because it
runs on every download and WebOb would cost measurable time here.

Behaviour, in the order RFC 9110 evaluates it:

- ``If-Match`` / ``If-Unmodified-Since`` fail -> 412;
- ``If-None-Match`` (weak comparison) or ``If-Modified-Since`` hold -> 304
  (412 for methods other than GET and HEAD);
- ``Range`` is honoured for GET only, and only if ``If-Range`` (strong ETag, or the
  exact Last-Modified date) still matches; a malformed Range header is ignored
  (200); a well-formed one with nothing satisfiable gets 416 and
  ``Content-Range: bytes */size``;
- one range -> 206 with ``Content-Range``; several ranges are coalesced where they
  overlap or touch, and what stays separate is sent as ``multipart/byteranges``.
  More than :data:`MAX_RANGES` separate ranges is treated as abuse and answered
  with the whole file (200), as RFC 9110 allows.

Files are read 64 KiB at a time, so memory stays flat whatever the size. When the
server offers ``wsgi.file_wrapper``, the file is first seeked to the range and then
handed over as a bounded file-like object: its ``read`` stops at the range's end
and its ``seek(0, 2)`` lands there, so servers that read (wsgiref, waitress) or that
size the transfer with seek/tell send exactly the range without reading through
the prefix. The object exposes ``fileno()`` -- which lets servers use
``sendfile(2)`` -- only when the range runs to the end of the file, because some
servers sendfile to end of file regardless of Content-Length.

Stat-derived headers (ETag from mtime and size, Last-Modified, the guessed type)
are computed once per file and reused while a ``stat`` shows the same inode, size
and mtime. Which type a download is finally sent as, and whether it may be shown
inline, is :mod:`.content`'s decision; this module sends what it is given.
"""

from __future__ import annotations

import mimetypes
import os
import re
import secrets
from collections.abc import Callable, Iterable
from email.utils import formatdate, parsedate_tz, mktime_tz
from typing import Any, BinaryIO

from .content import DEFAULT_TYPE, INLINE_TYPES, media_type, with_charset

__all__ = [
    "CHUNK_SIZE",
    "MAX_RANGES",
    "FileInfo",
    "file_info",
    "respond",
    "parse_ranges",
    "not_found",
]

CHUNK_SIZE = 64 * 1024
MAX_RANGES = 20

_MAX_REMEMBERED = 4096
_RANGE_SPEC = re.compile(r"\s*([0-9]*)\s*-\s*([0-9]*)\s*")
_ETAG = re.compile(r'\s*(W/)?"([^"]*)"\s*')

Headers = list[tuple[str, str]]


class FileInfo:
    """What a file's stat tells about it, computed once and shared by its responses."""

    __slots__ = ("size", "mtime", "identity", "etag", "last_modified", "content_type", "inline", "headers")

    def __init__(self, st: os.stat_result | None, size: int, name: str | None) -> None:
        self.size = size
        self.identity: tuple[int, int, int, int] | None = None
        self.etag: str | None = None
        self.last_modified: str | None = None
        self.mtime = 0
        if st is not None:
            self.mtime = int(st.st_mtime)
            self.identity = (st.st_ino, st.st_dev, st.st_size, st.st_mtime_ns)
            self.etag = f'"{st.st_mtime_ns:x}-{size:x}"'
            self.last_modified = formatdate(self.mtime, usegmt=True)
        guessed = mimetypes.guess_type(name)[0] if name else None
        #: the type guessed from the name (text with charset=utf-8), and whether
        #: an untrusted file of that type may be shown inline (see .content)
        self.content_type = with_charset(guessed) if guessed else DEFAULT_TYPE
        self.inline = guessed is not None and media_type(guessed) in INLINE_TYPES
        headers = [("Content-Type", self.content_type), ("Content-Length", str(size))]
        if self.etag and self.last_modified:
            headers += [("ETag", self.etag), ("Last-Modified", self.last_modified)]
        headers += [("Accept-Ranges", "bytes"), ("X-Content-Type-Options", "nosniff")]
        self.headers: Headers = headers


_infos: dict[str, FileInfo] = {}


def file_info(path: str, st: os.stat_result) -> FileInfo:
    """The (remembered) FileInfo of ``path`` whose current stat is ``st``."""
    info = _infos.get(path)
    if info is not None and info.identity == (st.st_ino, st.st_dev, st.st_size, st.st_mtime_ns):
        return info
    info = FileInfo(st, st.st_size, path)
    if len(_infos) >= _MAX_REMEMBERED:
        _infos.pop(next(iter(_infos)), None)
    _infos[path] = info
    return info


# --- request headers ------------------------------------------------------------


def _etags(header: str) -> list[tuple[bool, str]] | None:
    """(weak, opaque) pairs of an If-Match / If-None-Match list; None for ``*``."""
    if header.strip() == "*":
        return None
    found = []
    for item in header.split(","):
        match = _ETAG.fullmatch(item)
        if match:
            found.append((bool(match.group(1)), match.group(2)))
    return found


def _matches(header: str, etag: str | None, *, strong: bool) -> bool:
    if etag is None:
        return False
    tags = _etags(header)
    if tags is None:
        return True
    opaque = etag[1:-1]
    return any(value == opaque and not (strong and weak) for weak, value in tags)


def _date(header: str) -> int | None:
    try:
        parsed = parsedate_tz(header)
        return mktime_tz(parsed) if parsed else None
    except (TypeError, ValueError, OverflowError, IndexError):
        return None


def _number(digits: str) -> int:
    # Python refuses to parse very long digit strings; anything this long is
    # beyond any file size anyway.
    return int(digits) if len(digits) <= 18 else 10**18


def parse_ranges(header: str, size: int) -> list[tuple[int, int]] | None:
    """The satisfiable byte ranges (inclusive) of a Range header, coalesced.

    None means "ignore the header" (malformed, another unit, or too many ranges);
    an empty list means nothing is satisfiable (416).
    """
    unit, sep, specs = header.partition("=")
    if not sep or unit.strip().lower() != "bytes":
        return None
    ranges = []
    seen = 0
    for spec in specs.split(","):
        if not spec.strip():
            continue
        seen += 1
        match = _RANGE_SPEC.fullmatch(spec)
        if match is None:
            return None
        first, last = match.groups()
        if first:
            start = _number(first)
            end = _number(last) if last else size - 1
            if last and end < start:
                return None
            if start < size:
                ranges.append((start, min(end, size - 1)))
        elif last:
            suffix = _number(last)
            if suffix > 0 and size > 0:
                ranges.append((max(0, size - suffix), size - 1))
        else:
            return None
    if not seen:
        return None
    ranges.sort()
    merged: list[tuple[int, int]] = []
    for start, end in ranges:
        if merged and start <= merged[-1][1] + 1:
            if end > merged[-1][1]:
                merged[-1] = (merged[-1][0], end)
        else:
            merged.append((start, end))
    if len(merged) > MAX_RANGES:
        return None
    return merged


# --- bodies -------------------------------------------------------------------------


class FileIter:
    """Yield ``length`` bytes of an open file in 64 KiB reads, then close it."""

    __slots__ = ("_read", "_file", "_remaining")

    def __init__(self, file: BinaryIO, length: int) -> None:
        self._file = file
        self._read = file.read
        self._remaining = length

    def __iter__(self) -> FileIter:
        return self

    def __next__(self) -> bytes:
        remaining = self._remaining
        if remaining <= 0:
            raise StopIteration
        data = self._read(CHUNK_SIZE if remaining > CHUNK_SIZE else remaining)
        if not data:
            self._remaining = 0
            raise StopIteration
        self._remaining = remaining - len(data)
        return data

    def close(self) -> None:
        self._remaining = 0
        self._file.close()


class BoundedFile:
    """A file seeked to a range's start whose end of file is the range's end."""

    __slots__ = ("_file", "_end")

    def __init__(self, file: BinaryIO, start: int, end: int) -> None:
        file.seek(start)
        self._file = file
        self._end = end  # exclusive

    def read(self, size: int = -1) -> bytes:
        left = self._end - self._file.tell()
        if left <= 0:
            return b""
        return self._file.read(left if size is None or size < 0 or size > left else size)

    def tell(self) -> int:
        return self._file.tell()

    def seek(self, offset: int, whence: int = 0) -> int:
        if whence == 2:
            return self._file.seek(self._end + offset)
        return self._file.seek(offset, whence)

    def seekable(self) -> bool:
        return True

    def close(self) -> None:
        self._file.close()


class TailFile(BoundedFile):
    """A BoundedFile that runs to the end of the file, so sendfile(2) is safe."""

    __slots__ = ()

    def fileno(self) -> int:
        return self._file.fileno()


class MultipartIter:
    """The body of a multipart/byteranges response, read part by part."""

    __slots__ = ("_file", "_parts", "_remaining", "_trailer")

    def __init__(self, file: BinaryIO, parts: list[tuple[bytes, int, int]], trailer: bytes) -> None:
        self._file = file
        self._parts = iter(parts)
        self._remaining = 0
        self._trailer = trailer

    def __iter__(self) -> MultipartIter:
        return self

    def __next__(self) -> bytes:
        remaining = self._remaining
        if remaining > 0:
            data = self._file.read(CHUNK_SIZE if remaining > CHUNK_SIZE else remaining)
            if data:
                self._remaining = remaining - len(data)
                return data
            self._remaining = 0
        part = next(self._parts, None)
        if part is not None:
            head, start, end = part
            self._file.seek(start)
            self._remaining = end - start + 1
            return head
        trailer, self._trailer = self._trailer, b""
        if trailer:
            return trailer
        raise StopIteration

    def close(self) -> None:
        self._file.close()


def _read_small(path: str, size: int) -> bytes:
    # One open and one read: for small files this beats a buffered file object
    # several times over, and nothing stays open afterwards.
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
    try:
        data = os.read(fd, size)
        while len(data) < size:
            more = os.read(fd, size - len(data))
            if not more:
                break
            data += more
        return data
    finally:
        os.close(fd)


# --- the response ---------------------------------------------------------------------


def not_found() -> tuple[str, Headers, list[bytes]]:
    body = b"Not Found\n"
    return (
        "404 Not Found",
        [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body))),
         ("X-Content-Type-Options", "nosniff")],
        [body],
    )


# RFC 9110 section 15.4.5: a 304 carries what a 200 would of these.
_KEPT_ON_304 = frozenset(("cache-control", "expires", "vary", "content-location"))


def _not_modified(validators: Headers, extra: Headers, cache: Headers) -> tuple[str, Headers, list[bytes]]:
    headers = validators + [("X-Content-Type-Options", "nosniff")] + cache
    if extra:
        headers += [h for h in extra if h[0].lower() in _KEPT_ON_304]
    return "304 Not Modified", headers, []


def _plain(status: str, headers: Headers) -> tuple[str, Headers, list[bytes]]:
    return status, [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", "0")] + headers, []


def respond(
    environ: dict[str, Any],
    info: FileInfo,
    *,
    path: str | None = None,
    opener: Callable[[], BinaryIO] | None = None,
    content_type: str | None = None,
    extra_headers: Iterable[tuple[str, str]] = (),
    cache_headers: Headers = [],
) -> tuple[str, Headers, Iterable[bytes]]:
    """Status, headers and body answering ``environ`` with the file described by ``info``.

    The file is ``path`` (opened when the body needs it) or whatever ``opener``
    returns (an open binary file positioned anywhere; it is seeked and closed here).
    ``extra_headers`` (Content-Disposition, Cache-Control...) go on every 200 and
    206; of them, Cache-Control, Expires, Vary and Content-Location go on 304s too.
    ``cache_headers`` (Cache-Control) go on 200, 206 and 304 as they are (never
    changed here).
    """
    method = environ["REQUEST_METHOD"]
    extra = extra_headers if type(extra_headers) is list else list(extra_headers)
    etag = info.etag
    validators: Headers = [("ETag", etag), ("Last-Modified", info.last_modified)] if etag else []  # type: ignore[list-item]

    # Preconditions (RFC 9110 section 13.2.2).
    if_match = environ.get("HTTP_IF_MATCH")
    if if_match is not None:
        if not _matches(if_match, etag, strong=True):
            return _plain("412 Precondition Failed", validators)
    else:
        since = environ.get("HTTP_IF_UNMODIFIED_SINCE")
        if since is not None and etag is not None:
            date = _date(since)
            if date is not None and info.mtime > date:
                return _plain("412 Precondition Failed", validators)
    if_none_match = environ.get("HTTP_IF_NONE_MATCH")
    if if_none_match is not None:
        if if_none_match == etag or _matches(if_none_match, etag, strong=False):
            if method in ("GET", "HEAD"):
                return _not_modified(validators, extra, cache_headers)
            return _plain("412 Precondition Failed", validators)
    elif etag is not None and method in ("GET", "HEAD"):
        since = environ.get("HTTP_IF_MODIFIED_SINCE")
        if since is not None:
            if since == info.last_modified:
                not_modified = True
            else:
                date = _date(since)
                not_modified = date is not None and info.mtime <= date
            if not_modified:
                return _not_modified(validators, extra, cache_headers)

    size = info.size
    headers = info.headers
    if cache_headers:
        extra = extra + cache_headers
    if content_type is not None:
        headers = [("Content-Type", content_type)] + headers[1:]

    ranges = None
    range_header = environ.get("HTTP_RANGE")
    if range_header is not None and method == "GET":
        if_range = environ.get("HTTP_IF_RANGE")
        if if_range is None or _if_range_holds(if_range.strip(), info):
            ranges = parse_ranges(range_header, size)
            if ranges == []:
                return _plain("416 Range Not Satisfiable", [("Content-Range", f"bytes */{size}")] + validators)
            if ranges is not None and ranges[0] == (0, size - 1):
                ranges = None  # the whole file: a plain 200 says it best

    if ranges is None:
        headers = headers + extra if extra else list(headers)
        if method == "HEAD":
            return "200 OK", headers, []
        return "200 OK", headers, _body(environ, path, opener, 0, size, size)

    file_headers = [h for h in headers if h[0] not in ("Content-Type", "Content-Length")]
    ctype = headers[0][1]
    if len(ranges) == 1:
        start, end = ranges[0]
        length = end - start + 1
        out = [("Content-Type", ctype), ("Content-Length", str(length)),
               ("Content-Range", f"bytes {start}-{end}/{size}")] + file_headers + extra
        return "206 Partial Content", out, _body(environ, path, opener, start, length, size)

    boundary = secrets.token_hex(16)
    parts = [
        (
            (f"{'--' if i == 0 else chr(13) + chr(10) + '--'}{boundary}\r\nContent-Type: {ctype}\r\n"
             f"Content-Range: bytes {start}-{end}/{size}\r\n\r\n").encode("latin-1"),
            start,
            end,
        )
        for i, (start, end) in enumerate(ranges)
    ]
    trailer = f"\r\n--{boundary}--\r\n".encode("latin-1")
    length = sum(len(head) + end - start + 1 for head, start, end in parts) + len(trailer)
    out = [("Content-Type", f"multipart/byteranges; boundary={boundary}"),
           ("Content-Length", str(length))] + file_headers + extra
    return "206 Partial Content", out, MultipartIter(_open(path, opener), parts, trailer)


def _open(path: str | None, opener: Callable[[], BinaryIO] | None) -> BinaryIO:
    if opener is not None:
        return opener()
    assert path is not None
    return open(path, "rb", buffering=0)


def _if_range_holds(if_range: str, info: FileInfo) -> bool:
    if if_range.startswith('"') or if_range.startswith("W/"):
        # If-Range needs a strong match: a weak tag never holds.
        return info.etag is not None and if_range == info.etag
    date = _date(if_range)
    return date is not None and info.etag is not None and date == info.mtime


def _body(
    environ: dict[str, Any],
    path: str | None,
    opener: Callable[[], BinaryIO] | None,
    start: int,
    length: int,
    size: int,
) -> Iterable[bytes]:
    if path is not None and start == 0 and length <= CHUNK_SIZE and length == size:
        return [_read_small(path, length)] if length else []
    file = _open(path, opener)
    wrapper = environ.get("wsgi.file_wrapper")
    if wrapper is not None and _has_fileno(file):
        end = start + length
        bounded = TailFile(file, start, end) if end >= size else BoundedFile(file, start, end)
        return wrapper(bounded, CHUNK_SIZE)
    if start:
        file.seek(start)
    return FileIter(file, length)


def _has_fileno(file: Any) -> bool:
    try:
        file.fileno()
    except (AttributeError, OSError, ValueError):
        return False
    return True
