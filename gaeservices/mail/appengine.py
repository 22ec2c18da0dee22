"""``appengine://``: App Engine's Mail API through the services SDK (the default there).

The Mail API takes fields, not a message: the message built by
:mod:`gaeservices.mail.message` is taken apart into what the API accepts --

- sender (From), To and Cc (only those in the envelope), Bcc (every other
  envelope recipient), Reply-To, Subject;
- the text/plain body, the text/html alternative;
- attachments with their file names and Content-IDs (the API derives each
  attachment's type from its file name, and refuses some extensions outright:
  those are refused by :meth:`check`, before the message is queued);
- of the other headers, only those App Engine allows
  (``google.appengine.api.mail.HEADER_WHITELIST``: In-Reply-To, References,
  List-Id, List-Unsubscribe, Auto-Submitted, On-Behalf-Of, Resent-*). The
  others, Message-ID and Date among them, are set by App Engine and dropped
  here (logged at debug level).

The sender must be one App Engine allows (an authorized sender of the app);
the API refusing one is a permanent failure, as a 5xx answer is over SMTP.
Quota, deadline and internal errors are temporary.
"""

from __future__ import annotations

import email
import logging
import mimetypes
from email import policy
from email.message import EmailMessage
from typing import Any

from google.appengine.api import mail as gae_mail
from google.appengine.runtime import apiproxy_errors

from ..config import BackendURL
from ..exceptions import InvalidMessageError, PermanentDeliveryError, TemporaryDeliveryError
from .backend import SendResult
from .message import Envelope

__all__ = ["AppEngineMailBackend"]

logger = logging.getLogger("gaeservices.mail.appengine")

_ALLOWED_HEADERS = {name.lower(): name for name in gae_mail.HEADER_WHITELIST}
_TEMPORARY = (
    apiproxy_errors.DeadlineExceededError,
    apiproxy_errors.OverQuotaError,
    apiproxy_errors.CapabilityDisabledError,
    apiproxy_errors.RPCFailedError,
    apiproxy_errors.InterruptedError,
)


class AppEngineMailBackend:
    """Sends through App Engine's Mail API."""

    def __init__(self) -> None:
        pass

    @classmethod
    def from_url(cls, url: BackendURL, services: Any = None) -> AppEngineMailBackend:
        return cls()

    def check(self, message: bytes, envelope: Envelope) -> None:
        self._convert(message, envelope)

    def send(self, message: bytes, envelope: Envelope) -> SendResult:
        converted = self._convert(message, envelope)
        try:
            converted.send()
        except _TEMPORARY as exc:
            raise TemporaryDeliveryError(f"App Engine's Mail API: {exc!r}", response=repr(exc)) from exc
        except gae_mail.Error as exc:
            raise PermanentDeliveryError(f"App Engine's Mail API refused the message: {exc!r}", response=repr(exc)) from exc
        except apiproxy_errors.ApplicationError as exc:  # codes ERROR_MAP does not name
            raise TemporaryDeliveryError(f"App Engine's Mail API: {exc!r}", response=repr(exc)) from exc
        return SendResult(envelope.recipients, response="accepted by App Engine's Mail API")

    def close(self) -> None:
        return None

    # -- the message as the API's fields -----------------------------------------

    def _convert(self, raw: bytes, envelope: Envelope) -> Any:
        msg: EmailMessage = email.message_from_bytes(raw, policy=policy.default)
        wanted = set(envelope.recipients)
        fields: dict[str, Any] = {}
        sender = msg["From"]
        fields["sender"] = str(sender) if sender is not None else envelope.sender
        shown: set[str] = set()
        for name, field in (("To", "to"), ("Cc", "cc")):
            header = msg[name]
            if header is None:
                continue
            picked = [str(a) for a in header.addresses if a.addr_spec in wanted and a.addr_spec not in shown]
            shown.update(a.addr_spec for a in header.addresses)
            if picked:
                fields[field] = picked
        hidden = [r for r in envelope.recipients if r not in shown]
        if hidden:
            fields["bcc"] = hidden
        if msg["Reply-To"] is not None:
            fields["reply_to"] = str(msg["Reply-To"])
        fields["subject"] = str(msg["Subject"] or "")
        text = msg.get_body(preferencelist=("plain",))
        html = msg.get_body(preferencelist=("html",))
        fields["body"] = text.get_content() if text is not None else ""
        if html is not None:
            fields["html"] = html.get_content()
        attachments = []
        for part in msg.iter_attachments():
            filename = part.get_filename() or ("attachment" + (mimetypes.guess_extension(part.get_content_type()) or ".bin"))
            extension = filename.rpartition(".")[2].lower() if "." in filename else ""
            if extension in gae_mail.EXTENSION_BLACKLIST:
                raise InvalidMessageError(
                    f"App Engine's Mail API refuses attachments ending in .{extension} ({filename!r})"
                )
            content_id = part["Content-ID"]
            attachments.append(
                gae_mail.Attachment(
                    filename, part.get_payload(decode=True) or b"",
                    content_id=str(content_id).strip() if content_id is not None else None,
                )
            )
        if attachments:
            fields["attachments"] = attachments
        headers = {}
        for name, value in msg.items():
            allowed = _ALLOWED_HEADERS.get(name.lower())
            if allowed is not None:
                headers[allowed] = str(value)
            elif name.lower() not in ("from", "to", "cc", "reply-to", "subject", "content-type",
                                      "content-transfer-encoding", "mime-version"):
                logger.debug("App Engine's Mail API does not take header %s: dropped", name)
        if headers:
            fields["headers"] = headers
        try:
            converted = gae_mail.EmailMessage(**fields)
            converted.check_initialized()
        except gae_mail.Error as exc:
            raise InvalidMessageError(f"App Engine's Mail API would refuse the message: {exc!r}") from exc
        return converted
