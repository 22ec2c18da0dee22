"""``send_mail`` and ``send_message``: build, check, and send or defer a message.

With ``defer=True`` (the default) the call returns once a task is queued on
the queue named by ``EMAIL_QUEUE_NAME`` (``services.email_queue_name``); a
worker then runs :func:`deliver`, which sends through the configured backend
(``GAESERVICES_MAIL``). Everything that can be checked is checked before the
task is queued: a malformed address or a header holding CR/LF never reaches
the queue.

In the task:

- a refused connection, a timeout or a 4xx answer raises
  :class:`~gaeservices.exceptions.SingularTaskFailure`: the queue tries again
  with backoff (:data:`MAIL_RETRY`, or ``retry_options=``);
- a 5xx answer is recorded in the store with the server's answer and raises
  :class:`~gaeservices.exceptions.PermanentTaskFailure`: never tried again;
- the recipients the server accepted are recorded in the store under the
  Message-ID *before* the task is acknowledged, and every run first skips the
  recipients recorded there. So a retried or redelivered task never sends a
  message again once its acceptance is recorded. The one window left: a
  worker that dies after the server accepted the message and before the
  record is written (or a connection lost while waiting for the server's
  answer to the message) sends it again on the next run -- at least once,
  never lost.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable, Mapping
from email.message import Message
from typing import Any

from ..config import Services, get_services
from ..exceptions import (
    InvalidMessageError,
    PermanentDeliveryError,
    PermanentTaskFailure,
    SingularTaskFailure,
    TemporaryDeliveryError,
)
from ..tasks.api import RetryOptions
from ..tasks.api import defer as defer_task
from .backend import SendResult
from .message import AddressLike, AttachmentLike, Envelope, _build, prepare_message

__all__ = [
    "send_mail",
    "send_message",
    "send_prepared",
    "deliver",
    "delivery_status",
    "DeliveryStatus",
    "MAIL_RETRY",
    "RECORD_SECONDS",
]

logger = logging.getLogger("gaeservices.mail")

#: How long a delivery record is kept in the store: well beyond the longest a
#: mail task is retried (five days by default), so no late redelivery sends again.
RECORD_SECONDS = 30 * 86400
RECORD_PREFIX = "gaeservices:mail:"


#: The retry options of mail tasks (``retry_options=`` replaces them): 1 s, 2 s,
#: 4 s ... doubling up to 15 minutes, then every 15 minutes; given up after five
#: days, as mail servers give up on a message they could not pass on.
MAIL_RETRY = RetryOptions(
    min_backoff_seconds=1.0, max_backoff_seconds=900.0, max_doublings=10, task_age_limit=5 * 86400.0
)


def send_mail(
    sender: AddressLike,
    to: AddressLike | Iterable[AddressLike],
    subject: str,
    body: str,
    *,
    html: str | None = None,
    cc: AddressLike | Iterable[AddressLike] = (),
    bcc: AddressLike | Iterable[AddressLike] = (),
    reply_to: AddressLike | Iterable[AddressLike] = (),
    headers: Mapping[str, str] | None = None,
    attachments: Iterable[AttachmentLike] = (),
    defer: bool = True,
    services: Services | None = None,
    retry_options: Any = None,
    queue: str | None = None,
) -> str:
    """Build a message and send it (``defer=False``) or queue it; returns its Message-ID.

    Addresses are ``"a@example.com"``, ``"Name <a@example.com>"``,
    ``("Name", "a@example.com")`` or :class:`email.headerregistry.Address`;
    ``to``, ``cc``, ``bcc`` and ``reply_to`` take one or a list. Attachments
    are ``(filename, content[, mimetype])``, a path, or a MIME part.

    Raises InvalidMessageError (before anything is queued) for a malformed
    address, a header value holding CR/LF or another control character, or
    what the backend cannot send. With ``defer=False``, raises
    TemporaryDeliveryError / PermanentDeliveryError when a recipient did not
    accept the message (``.accepted`` lists those who did). ``queue`` names the
    queue a deferred message goes through (default ``EMAIL_QUEUE_NAME``).
    """
    msg, envelope, message_id = _build(
        sender, to, subject, body, html=html, cc=cc, bcc=bcc, reply_to=reply_to,
        headers=headers, attachments=attachments, direct=True,
    )
    raw = msg.as_bytes()
    return send_prepared(
        raw, envelope, message_id, defer=defer, services=services, retry_options=retry_options, queue=queue
    )


def send_message(
    msg: Message,
    *,
    sender: AddressLike | None = None,
    recipients: Iterable[AddressLike] | None = None,
    defer: bool = True,
    services: Services | None = None,
    retry_options: Any = None,
    queue: str | None = None,
) -> str:
    """Send or queue a ready :class:`email.message.EmailMessage`; returns its Message-ID.

    ``msg`` is checked as :func:`send_mail`'s messages are, and not changed:
    what is sent is ``msg`` without its Bcc header, with a Message-ID and a
    Date added when it has none. The envelope sender defaults to the Sender
    or From header; the recipients to every address in To, Cc and Bcc (give
    ``recipients`` when they are kept elsewhere, as Django keeps bcc).
    ``queue`` names the queue a deferred message goes through (default:
    ``EMAIL_QUEUE_NAME``, ``services.email_queue_name``).
    """
    raw, envelope, message_id = prepare_message(msg, sender=sender, recipients=recipients)
    return send_prepared(
        raw, envelope, message_id, defer=defer, services=services, retry_options=retry_options, queue=queue
    )


def send_prepared(
    raw: bytes,
    envelope: Envelope,
    message_id: str,
    *,
    defer: bool = True,
    services: Services | None = None,
    retry_options: Any = None,
    queue: str | None = None,
) -> str:
    """Send or queue a message already written out (``raw``, CRLF, no Bcc header).

    The layer under :func:`send_mail` and :func:`send_message`; ``raw`` must
    come from :func:`~gaeservices.mail.message.build_message` or
    :func:`~gaeservices.mail.message.prepare_message`.
    """
    services = services or get_services()
    backend = services.mail
    backend.check(raw, envelope)
    if not defer:
        _raise_unless_complete(backend.send(raw, envelope), message_id)
        return message_id
    defer_task(
        deliver,
        raw,
        envelope.sender,
        list(envelope.recipients),
        message_id,
        _queue=queue or services.email_queue_name,
        _retry_options=retry_options if retry_options is not None else MAIL_RETRY,
        _services=services,
    )
    return message_id


def _raise_unless_complete(result: SendResult, message_id: str) -> None:
    if result.complete:
        return
    refused = {**result.refused, **result.deferred}
    summary = "; ".join(f"{rcpt}: {answer}" for rcpt, answer in refused.items())
    cls = TemporaryDeliveryError if result.deferred else PermanentDeliveryError
    raise cls(
        f"mail {message_id} was not accepted for every recipient: {summary}",
        response=next(iter(refused.values())),
        accepted=result.accepted,
        refused=refused,
    )


# --- the task ------------------------------------------------------------------


def deliver(raw: bytes, sender: str, recipients: list[str], message_id: str) -> None:
    """The deferred task: send ``raw`` to the recipients not yet recorded as done.

    Runs in a worker with the process's :func:`~gaeservices.get_services`.
    """
    services = get_services()
    store = services.store
    key = RECORD_PREFIX + message_id
    status = DeliveryStatus.decode(message_id, store.get(key))
    remaining = [r for r in recipients if r not in status.sent and r not in status.refused]
    if not remaining:
        logger.info("mail %s was delivered before: not sent again", message_id)
        return
    try:
        result = services.mail.send(raw, Envelope(sender, remaining))
    except PermanentDeliveryError as exc:
        answer = exc.response or str(exc)
        refused = {r: exc.refused.get(r, answer) for r in remaining}
        _record(store, key, recipients, {}, refused, fresh=status.updated is None)
        raise PermanentTaskFailure(f"mail {message_id} refused: {answer}") from exc
    except InvalidMessageError as exc:  # the backend found what check() could not
        _record(store, key, recipients, {}, {r: str(exc) for r in remaining}, fresh=status.updated is None)
        raise PermanentTaskFailure(f"mail {message_id} cannot be sent: {exc}") from exc
    except TemporaryDeliveryError as exc:
        raise SingularTaskFailure(f"mail {message_id} not sent yet: {exc}") from exc
    # Before the task is acknowledged: what the server accepted is never sent again.
    _record(
        store, key, recipients, {r: result.response for r in result.accepted}, result.refused,
        fresh=status.updated is None,
    )
    if result.deferred:
        summary = "; ".join(f"{r}: {a}" for r, a in result.deferred.items())
        raise SingularTaskFailure(f"mail {message_id} deferred for {summary}")
    if not result.accepted:
        summary = "; ".join(f"{r}: {a}" for r, a in result.refused.items())
        raise PermanentTaskFailure(f"mail {message_id} refused: {summary}")


def _record(
    store: Any,
    key: str,
    recipients: list[str],
    sent: dict[str, str],
    refused: dict[str, str],
    *,
    fresh: bool,
) -> None:
    """Merge what happened into the record (``fresh``: none was found before sending)."""
    now = time.time()

    def merge(current: bytes | None) -> bytes:
        data = json.loads(current) if current else {"recipients": [], "sent": {}, "refused": {}}
        for r in recipients:
            if r not in data["recipients"]:
                data["recipients"].append(r)
        data["sent"].update(sent)
        data["refused"].update(refused)
        data["updated"] = now
        return json.dumps(data, separators=(",", ":")).encode()

    # The first record is an insert that cannot overwrite one written meanwhile (by
    # another run of the same task); when one was, or when one was read, merge.
    if fresh and store.add(key, merge(None), timeout=RECORD_SECONDS):
        return
    store.update(key, merge, timeout=RECORD_SECONDS)


class DeliveryStatus:
    """What the store records about a deferred message: ``sent`` and ``refused``
    recipients (each with the server's answer), ``pending`` ones, ``state``."""

    __slots__ = ("message_id", "recipients", "sent", "refused", "updated")

    def __init__(
        self,
        message_id: str,
        recipients: list[str] | None = None,
        sent: dict[str, str] | None = None,
        refused: dict[str, str] | None = None,
        updated: float | None = None,
    ) -> None:
        self.message_id = message_id
        self.recipients = recipients or []
        self.sent = sent or {}
        self.refused = refused or {}
        self.updated = updated

    @classmethod
    def decode(cls, message_id: str, raw: bytes | None) -> DeliveryStatus:
        if not raw:
            return cls(message_id)
        data = json.loads(raw)
        return cls(message_id, data["recipients"], data["sent"], data["refused"], data.get("updated"))

    @property
    def pending(self) -> list[str]:
        return [r for r in self.recipients if r not in self.sent and r not in self.refused]

    @property
    def state(self) -> str:
        """``sent`` (every recipient), ``failed`` (none, for good), ``partial`` or ``pending``."""
        if self.pending or not self.recipients:
            return "pending"
        if not self.refused:
            return "sent"
        return "failed" if not self.sent else "partial"

    def __repr__(self) -> str:
        return f"<DeliveryStatus {self.message_id} {self.state} sent={list(self.sent)} refused={self.refused}>"


def delivery_status(message_id: str, *, services: Services | None = None) -> DeliveryStatus | None:
    """What is recorded about a deferred message's delivery, or None (not yet tried)."""
    services = services or get_services()
    raw = services.store.get(RECORD_PREFIX + message_id)
    return None if raw is None else DeliveryStatus.decode(message_id, raw)
