"""Real SMTP servers for the mail tests: aiosmtpd on free loopback ports.

``RecordingHandler`` keeps what the server received (envelope and bytes) and
can be told to answer otherwise: refuse some recipients, answer the message
with a 4xx or 5xx, run a hook while a message is being received. Certificates
for STARTTLS and smtps are made by the test run itself (``cryptography``).

Test modules load it with ``pytest_plugins = ["mail_fixtures"]`` and may import
its names too (PYTEST_DONT_REWRITE: it holds no asserts to rewrite).
"""

from __future__ import annotations

import datetime
import email
import ipaddress
import os
import ssl
import threading
import time
from email import policy

import pytest

USER, PASSWORD = "mailer", "s3cret:p@ss/word"


class Received:
    __slots__ = ("sender", "recipients", "raw", "peer")

    def __init__(self, sender, recipients, raw, peer=None):
        self.sender = sender
        self.recipients = list(recipients)
        self.raw = raw
        self.peer = peer

    @property
    def message(self):
        return email.message_from_bytes(self.raw, policy=policy.default)

    def __repr__(self):
        return f"<Received from {self.sender} to {self.recipients}>"


class RecordingHandler:
    """Keeps every accepted message; answers as told."""

    def __init__(self):
        self.received: list[Received] = []
        self.refuse_rcpt: dict[str, str] = {}  # address -> "550 ..." / "450 ..."
        self.data_answer: str | None = None  # e.g. "554 5.7.1 rejected", "451 4.3.0 later"
        self.on_data = None  # called (in the server's thread) before answering DATA
        self.authenticated: list[bytes] = []
        self.quits: list = []  # the peer of each connection that said QUIT
        self._lock = threading.Lock()
        self.arrived = threading.Condition(self._lock)

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        answer = self.refuse_rcpt.get(address)
        if answer:
            return answer
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        if self.on_data is not None:
            result = self.on_data(envelope)
            if result is not None:
                return result
        if self.data_answer:
            return self.data_answer
        with self._lock:
            self.received.append(
                Received(envelope.mail_from, envelope.rcpt_tos, envelope.original_content, session.peer)
            )
            self.arrived.notify_all()
        return "250 2.0.0 Ok: queued"

    async def handle_QUIT(self, server, session, envelope):
        with self._lock:
            self.quits.append(session.peer)
            self.arrived.notify_all()
        return "221 Bye"

    def wait_for_quit(self, peer, timeout=20.0):
        """Until the connection from ``peer`` has said QUIT."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while peer not in self.quits:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"no QUIT from {peer} (QUIT from {self.quits})")
                self.arrived.wait(left)

    def wait_for(self, count, timeout=20.0):
        deadline = time.monotonic() + timeout
        with self._lock:
            while len(self.received) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"{len(self.received)} of {count} messages arrived")
                self.arrived.wait(left)
            return list(self.received)


def make_certificate(folder) -> tuple[str, str]:
    """A throwaway self-signed certificate for localhost and 127.0.0.1: (cert path, key path)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path = os.path.join(folder, "cert.pem")
    key_path = os.path.join(folder, "key.pem")
    with open(cert_path, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(key_path, "wb") as f:
        f.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    return cert_path, key_path


def server_context(cert_path, key_path):
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_path, key_path)
    return context


def authenticator(handler):
    from aiosmtpd.smtp import AuthResult, LoginPassword

    def check(server, session, envelope, mechanism, auth_data):
        ok = (
            isinstance(auth_data, LoginPassword)
            and auth_data.login == USER.encode()
            and auth_data.password == PASSWORD.encode()
        )
        if ok:
            handler.authenticated.append(auth_data.login)
        return AuthResult(success=ok, handled=False)

    return check


def _start(handler, **options):
    try:
        import aiosmtpd  # noqa: F401
    except ImportError:
        from conftest import unavailable

        unavailable("aiosmtpd", "pip install 'gaeservices[mail]'")
    from gaeservices.mail.devserver import SMTPServerThread

    return SMTPServerThread(handler, **options).start()


@pytest.fixture
def smtp_handler():
    return RecordingHandler()


@pytest.fixture
def smtp_server(smtp_handler):
    """A plain SMTP server (no TLS, no AUTH) on a free port; ``.handler`` records."""
    server = _start(smtp_handler)
    server.handler = smtp_handler
    yield server
    server.stop()


@pytest.fixture(scope="session")
def certificate(tmp_path_factory):
    try:
        import cryptography  # noqa: F401
    except ImportError:
        from conftest import unavailable

        unavailable("cryptography", "pip install 'gaeservices[dev]'")
    return make_certificate(str(tmp_path_factory.mktemp("tls")))


@pytest.fixture
def starttls_server(smtp_handler, certificate):
    """STARTTLS required, AUTH (only after TLS) with USER/PASSWORD required."""
    server = _start(
        smtp_handler,
        tls_context=server_context(*certificate),
        require_starttls=True,
        authenticator=authenticator(smtp_handler),
        auth_required=True,
    )
    server.handler = smtp_handler
    yield server
    server.stop()


@pytest.fixture
def smtps_server(smtp_handler, certificate):
    """TLS from the first byte (smtps), AUTH required.

    aiosmtpd counts only STARTTLS as TLS when it decides whether to offer AUTH,
    so auth_require_tls is off here: this connection is encrypted from the start.
    """
    server = _start(
        smtp_handler,
        ssl_context=server_context(*certificate),
        authenticator=authenticator(smtp_handler),
        auth_required=True,
        auth_require_tls=False,
    )
    server.handler = smtp_handler
    yield server
    server.stop()


@pytest.fixture
def auth_server(smtp_handler):
    """AUTH required on a plain connection (auth_require_tls off), as some relays do on loopback."""
    server = _start(
        smtp_handler,
        authenticator=authenticator(smtp_handler),
        auth_required=True,
        auth_require_tls=False,
    )
    server.handler = smtp_handler
    yield server
    server.stop()
