"""The mail backend contract: what every ``GAESERVICES_MAIL`` backend provides.

A backend receives a message already built, checked and written out (the
bytes that go on the wire, CRLF line ends, no Bcc header) and its
:class:`~gaeservices.mail.message.Envelope`. It either hands the message on
and says which recipients it was accepted for (:class:`SendResult`), or
raises :class:`~gaeservices.exceptions.TemporaryDeliveryError` (nothing was
accepted; worth trying again) or
:class:`~gaeservices.exceptions.PermanentDeliveryError` (refused for good).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Protocol, runtime_checkable

from .message import Envelope

__all__ = ["MailBackend", "SendResult"]


class SendResult:
    """How one message went: ``accepted`` recipients, the ``refused`` ones (for
    good) and the ``deferred`` ones (for now), each with the server's answer,
    and the server's ``response`` to the message itself."""

    __slots__ = ("accepted", "refused", "deferred", "response")

    def __init__(
        self,
        accepted: Iterable[str],
        *,
        refused: Mapping[str, str] | None = None,
        deferred: Mapping[str, str] | None = None,
        response: str = "",
    ) -> None:
        self.accepted = tuple(accepted)
        self.refused = dict(refused or {})
        self.deferred = dict(deferred or {})
        self.response = response

    @property
    def complete(self) -> bool:
        """True when every recipient accepted the message."""
        return not (self.refused or self.deferred)

    def __repr__(self) -> str:
        return (
            f"<SendResult accepted={list(self.accepted)} refused={self.refused} "
            f"deferred={self.deferred} response={self.response!r}>"
        )


@runtime_checkable
class MailBackend(Protocol):
    """What every mail backend provides."""

    def check(self, message: bytes, envelope: Envelope) -> None:
        """Raise InvalidMessageError for a message this backend could never send.

        Called before a message is queued, so that what the backend is sure to
        refuse (App Engine: a forbidden attachment type) fails in the caller.
        """

    def send(self, message: bytes, envelope: Envelope) -> SendResult:
        """Hand ``message`` on for ``envelope.recipients``.

        Returns when at least one recipient accepted it; raises
        TemporaryDeliveryError or PermanentDeliveryError when none did.
        """

    def close(self) -> None:
        """Release connections."""
