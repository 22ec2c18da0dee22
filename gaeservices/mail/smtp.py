"""``smtp://`` and ``smtps://``: any SMTP server, through the standard library's smtplib.

URL forms::

    smtp://[user:password@]host[:port][?starttls=1&timeout=S&idle=S&cafile=PATH&verify=0]
    smtps://[user:password@]host[:port][?timeout=S&idle=S&cafile=PATH&verify=0]

``smtp://`` talks plain SMTP (port 25 by default), upgraded with STARTTLS when
``starttls=1`` (the server must offer it: it is never silently skipped);
``smtps://`` is TLS from the first byte (port 465). Certificates are verified
against the system's CAs, or ``cafile``; ``verify=0`` turns verification off.
``timeout`` (seconds, default 30) bounds the connection and every answer.

Connections are kept and reused across messages: a worker sending a batch
pays for one TCP and TLS handshake and one login, not one per message. A
connection unused for ``idle`` seconds (default 30) is closed with QUIT by a
background thread, and one that the server closed meanwhile is replaced
before anything of a message was sent on it.

What fails how (see :mod:`gaeservices.mail.api` for what the task does):

- no connection, a timeout, a TLS or login failure, a 4xx answer, a lost
  connection: :class:`TemporaryDeliveryError` -- fixing the configuration or
  the server lets queued mail go out;
- a 5xx answer to the sender or the message: :class:`PermanentDeliveryError`;
- 5xx (4xx) to some recipients only: the message goes to the others, and
  :class:`~gaeservices.mail.backend.SendResult` lists the refused (deferred) ones.
"""

from __future__ import annotations

import logging
import os
import smtplib
import socket
import ssl
import threading
import time
import weakref
from typing import Any

from ..config import BackendURL, _redact
from ..exceptions import PermanentDeliveryError, TemporaryDeliveryError
from .backend import SendResult
from .message import Envelope

__all__ = ["SMTPBackend"]

logger = logging.getLogger("gaeservices.mail.smtp")

DEFAULT_TIMEOUT = 30.0
DEFAULT_IDLE = 30.0
_UNSAFE_IN_ENVELOPE = frozenset("\r\n\x00<>")
# 5xx answers about how we connect, not about the message: authentication
# required (530), mechanism too weak (534), encryption required (538). Fixing
# the configuration lets the message go, so they are retried, not failed.
_CONFIGURATION = frozenset((530, 534, 538))


def _answer(code: int | None, text: Any) -> str:
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    text = " ".join(str(text or "").split())
    return f"{code} {text}".strip() if code is not None else text


# Every backend, so that a forked child starts with fresh locks and no
# connections: a lock held by a thread of the parent at the fork would never be
# released in the child, and the parent's sockets are not the child's to use.
_BACKENDS: weakref.WeakSet[SMTPBackend] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for backend in list(_BACKENDS):
        backend._reset_after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


class _Stale(Exception):
    """A reused connection turned out dead before any of the message was sent."""


class SMTPBackend:
    """Sends through one SMTP server, reusing connections across messages and threads."""

    def __init__(
        self,
        host: str,
        port: int | None = None,
        *,
        username: str | None = None,
        password: str | None = None,
        use_ssl: bool = False,
        starttls: bool = False,
        timeout: float = DEFAULT_TIMEOUT,
        idle: float = DEFAULT_IDLE,
        cafile: str | None = None,
        verify: bool = True,
        local_hostname: str | None = None,
    ) -> None:
        if use_ssl and starttls:
            raise ValueError("use_ssl (smtps://) and starttls exclude each other")
        self.host = host
        self.port = port or (465 if use_ssl else 25)
        self.username = username
        self.password = password
        self.use_ssl = use_ssl
        self.starttls = starttls
        self.timeout = timeout
        self.idle = idle
        self.cafile = cafile
        self.verify = verify
        self.local_hostname = local_hostname
        self._context: ssl.SSLContext | None = None
        self._pool: list[tuple[smtplib.SMTP, float]] = []
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._reaper: threading.Thread | None = None
        self.connections_opened = 0  # for tests and operators: how often we connected
        _BACKENDS.add(self)

    def _reset_after_fork(self) -> None:
        """In a forked child: new locks, no connections (the parent's are left alone)."""
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._pool = []
        self._reaper = None

    @classmethod
    def from_url(cls, url: BackendURL, services: Any = None) -> SMTPBackend:
        host, port = url.hosts[0]
        return cls(
            host,
            port,
            username=url.username,
            password=url.password,
            use_ssl=url.scheme == "smtps",
            starttls=url.option("starttls", False, bool),
            timeout=url.option("timeout", DEFAULT_TIMEOUT, float),
            idle=url.option("idle", DEFAULT_IDLE, float),
            cafile=url.option("cafile"),
            verify=url.option("verify", True, bool),
            local_hostname=url.option("local_hostname"),
        )

    def __repr__(self) -> str:
        scheme = "smtps" if self.use_ssl else "smtp"
        user = f"{self.username}:***@" if self.username else ""
        return _redact(f"<SMTPBackend {scheme}://{user}{self.host}:{self.port}>")

    # -- the contract -----------------------------------------------------------

    def check(self, message: bytes, envelope: Envelope) -> None:
        return None

    def send(self, message: bytes, envelope: Envelope) -> SendResult:
        for address in (envelope.sender, *envelope.recipients):
            if _UNSAFE_IN_ENVELOPE.intersection(address):
                raise PermanentDeliveryError(f"envelope address {address!r} holds CR, LF, NUL or angle brackets")
        connection = self._take()
        reused = connection is not None
        if connection is None:
            connection = self._connect()
        try:
            try:
                result = self._transaction(connection, message, envelope, reused)
            except _Stale:
                self._discard(connection)
                connection = self._connect()
                result = self._transaction(connection, message, envelope, False)
        except BaseException:
            self._discard(connection)
            raise
        self._give_back(connection)
        return result

    def close(self) -> None:
        """QUIT every idle connection; the backend stays usable."""
        with self._lock:
            pool, self._pool = self._pool, []
            self._wake.notify_all()
        for connection, _ in pool:
            self._quit(connection)

    # -- one message ------------------------------------------------------------

    def _transaction(self, connection: smtplib.SMTP, message: bytes, envelope: Envelope, reused: bool) -> SendResult:
        where = "MAIL FROM"
        try:
            connection.ehlo_or_helo_if_needed()
            options = ""
            if connection.does_esmtp:
                if connection.has_extn("size"):
                    options += f" SIZE={len(message)}"
                if connection.has_extn("8bitmime") and not message.isascii():
                    options += " BODY=8BITMIME"
            code, text = connection.docmd("mail", f"FROM:<{envelope.sender}>{options}")
            if code == 421 and reused:  # the server timed the idle connection out
                raise _Stale()
            if code != 250:
                self._reset(connection, code)
                raise self._refusal(code, text, f"the server refused the sender {envelope.sender}")
            accepted: list[str] = []
            refused: dict[str, str] = {}
            deferred: dict[str, str] = {}
            where = "RCPT TO"
            for recipient in envelope.recipients:
                code, text = connection.docmd("rcpt", f"TO:<{recipient}>")
                if code in (250, 251):
                    accepted.append(recipient)
                elif 400 <= code < 500 or code == -1:
                    deferred[recipient] = _answer(code, text)
                else:
                    refused[recipient] = _answer(code, text)
            if not accepted:
                self._reset(connection, None)
                answers = {**refused, **deferred}
                cls = TemporaryDeliveryError if deferred else PermanentDeliveryError
                raise cls(
                    "the server accepted none of the recipients: "
                    + "; ".join(f"{r}: {a}" for r, a in answers.items()),
                    code=int(next(iter(answers.values())).split()[0]) if answers else None,
                    response=next(iter(answers.values()), ""),
                    refused=answers,
                )
            where = "DATA"
            code, text = connection.data(message)  # raises for a refused DATA, returns the final answer
            if code != 250:
                self._reset(connection, code)
                raise self._refusal(code, text, "the server refused the message")
        except smtplib.SMTPResponseException as exc:  # SMTPDataError and the like
            if exc.smtp_code == 421:
                raise TemporaryDeliveryError(
                    f"{where}: the server is closing the connection: {_answer(421, exc.smtp_error)}",
                    code=421, response=_answer(421, exc.smtp_error),
                ) from exc
            raise self._refusal(exc.smtp_code, exc.smtp_error, f"{where}: the server refused the message") from exc
        except (smtplib.SMTPServerDisconnected, OSError) as exc:
            if reused and where == "MAIL FROM":
                raise _Stale() from exc
            raise TemporaryDeliveryError(
                f"{where}: the connection to {self.host}:{self.port} was lost ({exc!r})"
                + (": the server may have taken the message" if where == "DATA" else "")
            ) from exc
        return SendResult(accepted, refused=refused, deferred=deferred, response=_answer(code, text))

    @staticmethod
    def _refusal(code: int, text: Any, what: str) -> Exception:
        answer = _answer(code, text)
        if 500 <= code < 600 and code not in _CONFIGURATION:
            return PermanentDeliveryError(f"{what}: {answer}", code=code, response=answer)
        return TemporaryDeliveryError(f"{what}: {answer}", code=code if code > 0 else None, response=answer)

    @staticmethod
    def _reset(connection: smtplib.SMTP, code: int | None) -> None:
        if code == 421:
            return
        try:
            connection.rset()
        except (smtplib.SMTPException, OSError):
            pass

    # -- connections ------------------------------------------------------------

    def _ssl_context(self) -> ssl.SSLContext:
        if self._context is None:
            context = ssl.create_default_context(cafile=self.cafile)
            if not self.verify:
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
            self._context = context
        return self._context

    def _connect(self) -> smtplib.SMTP:
        if self.local_hostname is None:
            self.local_hostname = socket.getfqdn()  # once: it can mean a DNS lookup
        connection: smtplib.SMTP | None = None
        try:
            if self.use_ssl:
                connection = smtplib.SMTP_SSL(
                    self.host, self.port, local_hostname=self.local_hostname,
                    timeout=self.timeout, context=self._ssl_context(),
                )
            else:
                connection = smtplib.SMTP(self.host, self.port, local_hostname=self.local_hostname, timeout=self.timeout)
            if self.starttls:
                connection.ehlo()
                if not connection.has_extn("starttls"):
                    raise TemporaryDeliveryError(
                        f"{self.host}:{self.port} does not offer STARTTLS, and starttls=1 requires it"
                    )
                connection.starttls(context=self._ssl_context())
                connection.ehlo()
            if self.username:
                connection.login(self.username, self.password or "")
        except TemporaryDeliveryError:
            if connection is not None:
                connection.close()
            raise
        except smtplib.SMTPAuthenticationError as exc:
            if connection is not None:
                connection.close()
            answer = _answer(exc.smtp_code, exc.smtp_error)
            raise TemporaryDeliveryError(
                f"login to {self.host}:{self.port} as {self.username!r} failed: {answer}",
                code=exc.smtp_code, response=answer,
            ) from exc
        except (smtplib.SMTPException, OSError) as exc:
            if connection is not None:
                connection.close()
            code = getattr(exc, "smtp_code", None)
            answer = _answer(code, getattr(exc, "smtp_error", "")) if code else ""
            raise TemporaryDeliveryError(
                f"cannot connect to {self.host}:{self.port}: {answer or repr(exc)}", code=code, response=answer
            ) from exc
        self.connections_opened += 1
        return connection

    def _take(self) -> smtplib.SMTP | None:
        expired = []
        found = None
        with self._lock:
            now = time.monotonic()
            while self._pool:
                connection, last_used = self._pool.pop()
                if now - last_used < self.idle:
                    found = connection
                    break
                expired.append(connection)
        for connection in expired:
            self._quit(connection)
        return found

    def _give_back(self, connection: smtplib.SMTP) -> None:
        with self._lock:
            self._pool.append((connection, time.monotonic()))
            if self._reaper is None or not self._reaper.is_alive():
                self._reaper = threading.Thread(target=self._reap, name="gaeservices-smtp-idle", daemon=True)
                self._reaper.start()

    def _discard(self, connection: smtplib.SMTP) -> None:
        try:
            connection.close()
        except OSError:
            pass

    def _reap(self) -> None:
        """Close connections idle for ``idle`` seconds; end when none are left."""
        while True:
            expired: list[tuple[smtplib.SMTP, float]] = []
            with self._lock:
                if not self._pool:
                    self._reaper = None
                    return
                now = time.monotonic()
                keep: list[tuple[smtplib.SMTP, float]] = []
                for connection, last_used in self._pool:
                    (expired if now - last_used >= self.idle else keep).append((connection, last_used))
                self._pool = keep
                if not expired and keep:
                    oldest = min(last_used for _, last_used in keep)
                    self._wake.wait(max(0.01, oldest + self.idle - now))
            for connection, _ in expired:
                self._quit(connection)

    @staticmethod
    def _quit(connection: smtplib.SMTP) -> None:
        try:
            connection.quit()
        except (smtplib.SMTPException, OSError):
            try:
                connection.close()
            except OSError:
                pass
