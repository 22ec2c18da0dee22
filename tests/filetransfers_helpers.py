"""Helpers shared by the file-transfer tests: call a WSGI app under wsgiref.validate."""

from __future__ import annotations

import email
import email.policy
import wsgiref.util
from wsgiref.validate import validator

from webob import Request
from webob.headers import ResponseHeaders


class Result:
    def __init__(self, status: str, headers: list, body: bytes) -> None:
        self.status = status
        self.code = int(status.split()[0])
        self.headers = ResponseHeaders(headers)
        self.body = body


def call(app, path="/", *, headers=None, method="GET", file_wrapper=None, validate=True, body=None, content_type=None):
    """Run ``app`` on a request and consume its body, with wsgiref.validate around it."""
    kwargs = {"method": method, "headers": headers or {}}
    if body is not None:
        kwargs["body"] = body
    if content_type is not None:
        kwargs["content_type"] = content_type
    environ = Request.blank(path, **kwargs).environ
    if file_wrapper is True:
        file_wrapper = wsgiref.util.FileWrapper
    if file_wrapper is not None:
        environ["wsgi.file_wrapper"] = file_wrapper
    captured = {}

    def start_response(status, response_headers, exc_info=None):
        captured["status"], captured["headers"] = status, response_headers
        return lambda data: None

    wrapped = validator(app) if validate else app
    result = wrapped(environ, start_response)
    try:
        data = b"".join(result)
    finally:
        close = getattr(result, "close", None)
        if close is not None:
            close()
    return Result(captured["status"], captured["headers"], data)


def multipart_parts(result: Result) -> list[tuple[str, str, bytes]]:
    """(content-type, content-range, body) of each part of a multipart/byteranges answer."""
    raw = b"Content-Type: " + result.headers["Content-Type"].encode() + b"\r\n\r\n" + result.body
    message = email.message_from_bytes(raw, policy=email.policy.HTTP)
    assert message.is_multipart()
    return [
        (part["Content-Type"], part["Content-Range"], part.get_payload(decode=True))
        for part in message.iter_parts()
    ]
