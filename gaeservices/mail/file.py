"""``file:///folder``: each message in a ``.eml`` file of its own, written atomically.

A file is written under a temporary name in the same folder, flushed to disk,
then renamed into place: a reader (or a crash) never sees half a message.
Names sort by time: ``20260102-030405.123456-<random>.eml``. The file is the
message as it would go on the wire, preceded by ``Return-Path`` (the envelope
sender) and ``X-Envelope-To`` (every recipient, Bcc included, which the
message's own headers never show), so a test or a person can see where it
would have gone. Mail clients open ``.eml`` files directly.
"""

from __future__ import annotations

import os
import secrets
import tempfile
from datetime import datetime, timezone
from typing import Any

from ..config import BackendURL
from .backend import SendResult
from .message import Envelope

__all__ = ["FileMailBackend", "write_eml"]


def write_eml(folder: str, message: bytes, envelope: Envelope | None = None) -> str:
    """Write ``message`` atomically as a new ``.eml`` file in ``folder``; return its path."""
    os.makedirs(folder, exist_ok=True)
    head = b""
    if envelope is not None:
        head = (
            b"Return-Path: <" + envelope.sender.encode("ascii") + b">\r\n"
            b"X-Envelope-To: " + ", ".join(envelope.recipients).encode("ascii") + b"\r\n"
        )
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S.%f")
    name = f"{stamp}-{secrets.token_hex(4)}.eml"
    fd, temporary = tempfile.mkstemp(prefix=".tmp-", suffix=".eml", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(head + message)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(temporary, 0o644)
        path = os.path.join(folder, name)
        os.replace(temporary, path)
    except BaseException:
        try:
            os.unlink(temporary)
        except OSError:
            pass
        raise
    return path


class FileMailBackend:
    """Writes each message to ``folder`` as a ``.eml`` file."""

    def __init__(self, folder: str) -> None:
        self.folder = folder

    @classmethod
    def from_url(cls, url: BackendURL, services: Any = None) -> FileMailBackend:
        from urllib.parse import unquote

        return cls(unquote(url.path))

    def check(self, message: bytes, envelope: Envelope) -> None:
        return None

    def send(self, message: bytes, envelope: Envelope) -> SendResult:
        path = write_eml(self.folder, message, envelope)
        return SendResult(envelope.recipients, response=f"written to {path}")

    def close(self) -> None:
        return None
