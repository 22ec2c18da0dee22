"""Django email backends over the mail service.

.. code-block:: python

    EMAIL_BACKEND = "gaeservices.django.mail.EmailBackend"      # deferred (settings_base's default)
    EMAIL_QUEUE_NAME = "mail"                                    # the queue it goes through
    # or, with Django 6.1's MAILERS:
    MAILERS = {"default": {"BACKEND": "gaeservices.django.mail.EmailBackend", "OPTIONS": {"queue": "mail"}}}

``EmailBackend`` checks each message and queues a task that sends it through the
configured mail backend (``GAESERVICES_MAIL``: SMTP, App Engine, console, file,
memory); ``send_messages`` returns once the tasks are queued, and a message the
server refuses later is retried or recorded by the mail service, never lost.
``SyncEmailBackend`` sends at once and raises when a recipient is refused.

Django's ``EmailMessage`` / ``EmailMultiAlternatives`` are sent whole: the
message Django builds (``message()``: to, cc, reply-to, every extra header,
attachments with their MIME types, HTML alternatives, non-ASCII as Django encodes
it), to every recipient including bcc, from ``from_email``. ``fail_silently``
drops a message that cannot be sent or queued (and counts it as not sent);
``send_messages`` returns how many were sent or queued.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.core.mail.backends.base import BaseEmailBackend

from ..mail.api import send_message
from .conf import services, setting

__all__ = ["EmailBackend", "SyncEmailBackend"]


class EmailBackend(BaseEmailBackend):
    """Queue each message on ``EMAIL_QUEUE_NAME`` (or the ``queue`` option); a worker sends it."""

    defer = True

    def __init__(self, fail_silently: bool = False, *, queue: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.fail_silently = fail_silently
        self.queue = queue

    def send_messages(self, email_messages: Iterable[Any]) -> int:
        if not email_messages:
            return 0
        queue = self.queue or str(setting("EMAIL_QUEUE_NAME") or "") or None
        svc = services()
        sent = 0
        for message in email_messages:
            recipients = message.recipients()
            if not recipients:
                continue
            try:
                send_message(
                    message.message(),
                    sender=message.from_email,
                    recipients=recipients,
                    defer=self.defer,
                    services=svc,
                    queue=queue if self.defer else None,
                )
            except Exception:
                if not self.fail_silently:
                    raise
                continue
            sent += 1
        return sent


class SyncEmailBackend(EmailBackend):
    """Send each message now, through the configured mail backend."""

    defer = False
