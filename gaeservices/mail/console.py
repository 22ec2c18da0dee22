"""``console://``: print each message readably on standard output (the local default).

Nothing is sent anywhere: headers decoded, the text part, the HTML part's
size and each attachment's name, type and size, as ``gaeservices smtpd``
prints what it receives. With deferred sending the message is printed by the
process that runs the task (the demo's own dispatcher thread, or
``gaeservices worker``).
"""

from __future__ import annotations

import sys
import threading
from typing import Any, TextIO

from ..config import BackendURL
from .backend import SendResult
from .message import Envelope
from .readable import readable

__all__ = ["ConsoleMailBackend"]


class ConsoleMailBackend:
    """Prints messages to ``stream`` (standard output as it is at each message, by default)."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream
        self._lock = threading.Lock()  # one message's lines together
        self.count = 0

    @classmethod
    def from_url(cls, url: BackendURL, services: Any = None) -> ConsoleMailBackend:
        return cls()

    def check(self, message: bytes, envelope: Envelope) -> None:
        return None

    def send(self, message: bytes, envelope: Envelope) -> SendResult:
        with self._lock:
            self.count += 1
            text = readable(message, envelope, title=f"mail {self.count} (console://: not sent)")
            stream = self.stream or sys.stdout
            stream.write(text)
            stream.flush()
        return SendResult(envelope.recipients, response="printed")

    def close(self) -> None:
        return None
