"""``memory://``: an outbox in this process, for tests.

``services.mail.outbox`` lists every message "sent", oldest first, as
:class:`SentMail` values (the parsed message, its envelope, the bytes). The
outbox belongs to one process: with deferred sending, read it where the
tasks run (``immediate://`` runs them inside ``send_mail``).
"""

from __future__ import annotations

import email
import threading
from email import policy
from email.message import EmailMessage
from typing import Any

from ..config import BackendURL
from .backend import SendResult
from .message import Envelope

__all__ = ["MemoryMailBackend", "SentMail"]


class SentMail:
    """One message in the outbox: ``message`` (parsed), ``sender``, ``recipients``, ``raw``."""

    __slots__ = ("raw", "sender", "recipients", "_message")

    def __init__(self, raw: bytes, envelope: Envelope) -> None:
        self.raw = raw
        self.sender = envelope.sender
        self.recipients = envelope.recipients
        self._message: EmailMessage | None = None

    @property
    def message(self) -> EmailMessage:
        if self._message is None:
            self._message = email.message_from_bytes(self.raw, policy=policy.default)
        return self._message

    @property
    def subject(self) -> str:
        return str(self.message["Subject"] or "")

    @property
    def message_id(self) -> str:
        return str(self.message["Message-ID"] or "").strip()

    def __repr__(self) -> str:
        return f"<SentMail {self.subject!r} from {self.sender} to {list(self.recipients)}>"


class MemoryMailBackend:
    """Keeps every message in :attr:`outbox`."""

    def __init__(self) -> None:
        self.outbox: list[SentMail] = []
        self._lock = threading.Lock()

    @classmethod
    def from_url(cls, url: BackendURL, services: Any = None) -> MemoryMailBackend:
        return cls()

    def check(self, message: bytes, envelope: Envelope) -> None:
        return None

    def send(self, message: bytes, envelope: Envelope) -> SendResult:
        with self._lock:
            self.outbox.append(SentMail(message, envelope))
        return SendResult(envelope.recipients, response="kept in the outbox")

    def clear(self) -> None:
        with self._lock:
            self.outbox.clear()

    def close(self) -> None:
        return None
