"""Mail: build a message with the standard library's modern email API, send it or defer it.

``send_mail(sender, to, subject, body, ...)`` and ``send_message(msg)`` check
the message (no CR/LF in a header, well-formed addresses) and queue a task on
``EMAIL_QUEUE_NAME`` that sends it through the configured backend
(``GAESERVICES_MAIL``): ``smtp://``, ``smtps://``, ``appengine://``,
``console://`` (the local default), ``file:///folder`` or ``memory://``.
Backends are imported only when used.
"""

from __future__ import annotations

from ..exceptions import (
    DeliveryError,
    InvalidMessageError,
    MailError,
    PermanentDeliveryError,
    TemporaryDeliveryError,
)
from .api import MAIL_RETRY, DeliveryStatus, deliver, delivery_status, send_mail, send_message, send_prepared
from .backend import MailBackend, SendResult
from .message import Envelope, build_message, prepare_message

__all__ = [
    "send_mail",
    "send_message",
    "send_prepared",
    "deliver",
    "delivery_status",
    "DeliveryStatus",
    "MAIL_RETRY",
    "MailBackend",
    "SendResult",
    "Envelope",
    "build_message",
    "prepare_message",
    "MailError",
    "InvalidMessageError",
    "DeliveryError",
    "TemporaryDeliveryError",
    "PermanentDeliveryError",
]
