"""Reading a multipart/form-data upload: limits first, files straight to their place.

The parsing is the ``multipart`` library's (``PushMultipartParser``: sans-IO, kept
up, pure Python, on every Python this project supports -- WebOb's own parser is
``cgi.FieldStorage``, which Python 3.13 removed and which reads a whole body
before anyone can refuse it). This module does the IO around it:

- a body whose declared ``Content-Length`` is over the limit is refused before a
  byte of it is read (:exc:`UploadTooLargeError`, 413); one of undeclared length
  (``wsgi.input_terminated``, chunked) is read until the limit is passed and then
  refused; one of neither kind is refused (411), since reading it is undefined;
- no more than the declared length is ever read;
- each file part is written, 64 KiB at a time, straight into the file it will stay
  in, so memory stays flat whatever the size; the other fields are kept in memory
  (bounded by the same limit);
- at most :data:`MAX_PARTS` parts, each with at most 8 header lines of 4 KiB;
- on any failure -- too large, malformed, the client gone mid-body -- every file
  written for the request is removed before the error is raised: nothing is kept.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, BinaryIO

from ..exceptions import MalformedUploadError, UploadTooLargeError

__all__ = ["MAX_PARTS", "CHUNK_SIZE", "Part", "declared_length", "boundary_of", "read_form"]

MAX_PARTS = 1000
CHUNK_SIZE = 64 * 1024


class Part:
    """A file part, written: its field, the client's name and type for it, where and how big."""

    __slots__ = ("field", "filename", "content_type", "path", "size")

    def __init__(self, field: str, filename: str, content_type: str | None, path: str, size: int) -> None:
        self.field = field
        self.filename = filename
        self.content_type = content_type
        self.path = path
        self.size = size


def boundary_of(content_type: str) -> str | None:
    """The boundary of a ``multipart/form-data`` Content-Type, or None for any other type."""
    from multipart import parse_options_header

    media, options = parse_options_header(content_type)
    if media != "multipart/form-data":
        return None
    boundary = options.get("boundary")
    if not boundary or len(boundary) > 200:
        raise MalformedUploadError("multipart/form-data without a usable boundary")
    return boundary


def declared_length(environ: dict[str, Any], limit: int) -> int | None:
    """The body's declared length, refused when over ``limit``; None when the server
    marks an undeclared one as terminated (chunked). Reads nothing."""
    value = environ.get("CONTENT_LENGTH")
    if value:
        if not value.isdigit():
            raise MalformedUploadError(f"Content-Length {value!r} is not a length")
        length = int(value)
        if length > limit:
            raise UploadTooLargeError(f"the upload is {length} bytes; at most {limit} are accepted")
        return length
    if environ.get("wsgi.input_terminated"):
        return None
    raise MalformedUploadError("an upload must declare its length (Content-Length)", 411)


def read_form(
    environ: dict[str, Any],
    boundary: str,
    *,
    length: int | None,
    limit: int,
    open_file: Callable[[str], tuple[str, BinaryIO]],
) -> tuple[list[Part], list[tuple[str, bytes]], list[tuple[str, str]]]:
    """Read the body: (file parts written, other fields, skipped parts as (field, why)).

    ``open_file(filename)`` gives a new file for a part (its path and the file
    open for writing); every path it gave is removed if reading fails. A file
    field left empty by the browser (no name, no bytes) is skipped, as is a
    ``message/external-body`` part (a Blobstore reference, which only App
    Engine's upload service may send).
    """
    from multipart import MultipartError, PushMultipartParser

    read = environ["wsgi.input"].read
    remaining = length if length is not None else limit + 1
    files: list[Part] = []
    fields: list[tuple[str, bytes]] = []
    skipped: list[tuple[str, str]] = []
    created: list[str] = []
    target: BinaryIO | None = None  # the file part being written
    value: bytearray | None = None  # the field being read
    segment: Any = None
    path = ""
    try:
        parser = PushMultipartParser(boundary, content_length=-1 if length is None else length,
                                     max_segment_count=MAX_PARTS)
        while not parser.closed:
            chunk = read(CHUNK_SIZE if remaining > CHUNK_SIZE else remaining) if remaining > 0 else b""
            if chunk:
                remaining -= len(chunk)
                if length is None and remaining <= 0:
                    raise UploadTooLargeError(f"the upload is larger than the {limit} bytes accepted")
            for event in parser.parse(chunk):
                if isinstance(event, (bytes, bytearray)):
                    if target is not None:
                        target.write(event)
                    elif value is not None:
                        value += event
                    elif segment.filename == "" and not _blob_reference(segment):
                        # no name, as an empty file input has, yet content: keep it
                        path, target = open_file("")
                        created.append(path)
                        target.write(event)
                elif event is None:  # the end of a part
                    if target is not None:
                        size = target.tell()
                        target.close()
                        target = None
                        files.append(Part(segment.name, segment.filename, segment.content_type, path, size))
                    elif value is not None:
                        fields.append((segment.name, bytes(value)))
                        value = None
                else:
                    segment = event
                    if segment.filename is None:
                        value = bytearray()
                    elif _blob_reference(segment):
                        skipped.append((segment.name, "a blob reference posted to a local upload"))
                    elif segment.filename:
                        path, target = open_file(segment.filename)
                        created.append(path)
    except MultipartError as exc:
        _remove(created, target)
        raise MalformedUploadError(f"the upload is not a valid multipart/form-data body: {exc}") from None
    except BaseException:
        _remove(created, target)
        raise
    return files, fields, skipped


def _blob_reference(segment: Any) -> bool:
    return (segment.content_type or "").startswith("message/external-body")


def _remove(paths: list[str], target: BinaryIO | None) -> None:
    if target is not None:
        target.close()
    for path in paths:
        try:
            os.unlink(path)
        except OSError:
            pass
        try:
            os.rmdir(os.path.dirname(path))
        except OSError:
            pass
