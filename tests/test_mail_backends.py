"""Every mail backend against the real thing: aiosmtpd servers (plain, STARTTLS, smtps,
AUTH), files on disk, the in-process outbox, the console, and App Engine's testbed stub.

One contract test is run unchanged against every backend that passes the message
on as bytes: what arrives parses to what was sent -- html, attachments and
non-ASCII text intact, Bcc only in the envelope.
"""

from __future__ import annotations

import email
import glob
import os
import socket
import threading
import time
from email import policy

import pytest
from mail_fixtures import PASSWORD, USER

from gaeservices import ConfigurationError, Services, send_mail, send_message
from gaeservices.exceptions import (
    InvalidMessageError,
    PermanentDeliveryError,
    TemporaryDeliveryError,
)
from gaeservices.mail import MailBackend
from gaeservices.mail.message import Envelope, build_message
from gaeservices.mail.smtp import SMTPBackend

pytest_plugins = ["mail_fixtures"]
# aiosmtpd warns about AUTH without STARTTLS: the smtps server is TLS from the
# first byte (aiosmtpd does not count that), and one test relays with AUTH in the clear.
pytestmark = pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS:UserWarning")

KEY = "k-signing-key-for-the-test-suite"
PDF = b"%PDF-1.4\n" + bytes(range(256)) * 40
PNG = b"\x89PNG\r\n\x1a\n" + os.urandom(3000)
CSV = "name,city\nZoë,Kraków\nJosé,São Paulo\n"
SUBJECT = "Grüße — 你好 🎉, a subject long enough to be folded over more than one line of the header"
BODY = "Héllo wörld ✓\n\nSecond paragraph — ünïcode 🎉, and a line long enough " + "to wrap " * 20 + "\n"
HTML = "<html><body><p>Héllo <b>wörld</b> 🎉</p></body></html>\n"


def services_for(tmp_path, mail, **extra):
    return Services(secret_key=KEY, data_dir=str(tmp_path / "data"), environ={}, mail=mail, **extra)


def rich_mail(services, **overrides):
    kwargs = dict(
        sender="Jöhn Dœ <john@exämple.com>",
        to=['"Ünïcode, Nämé" <u@example.com>'],
        cc=["c@example.com"],
        bcc=["hidden@example.com"],
        reply_to=["replies@example.com"],
        subject=SUBJECT,
        body=BODY,
        html=HTML,
        headers={"X-Campaign": "spring-2026", "In-Reply-To": "<earlier@example.com>"},
        attachments=[("résumé été.pdf", PDF), ("photo.png", PNG), ("cities.csv", CSV)],
        defer=False,
        services=services,
    )
    kwargs.update(overrides)
    return send_mail(**kwargs)


def check_rich(raw: bytes, message_id: str):
    got = email.message_from_bytes(raw, policy=policy.default)
    assert str(got["Message-ID"]).strip() == message_id
    assert str(got["Subject"]) == SUBJECT
    assert got["From"].addresses[0].display_name == "Jöhn Dœ"
    assert got["From"].addresses[0].addr_spec == "john@xn--exmple-cua.com"
    assert [(a.display_name, a.addr_spec) for a in got["To"].addresses] == [("Ünïcode, Nämé", "u@example.com")]
    assert str(got["Cc"]) == "c@example.com" and str(got["Reply-To"]) == "replies@example.com"
    assert "Bcc" not in got and b"hidden@example.com" not in raw
    assert str(got["X-Campaign"]) == "spring-2026"
    assert got.get_content_type() == "multipart/mixed"
    alternative = next(got.iter_parts())
    assert alternative.get_content_type() == "multipart/alternative"
    assert got.get_body(("plain",)).get_content().replace("\r\n", "\n") == BODY
    assert got.get_body(("html",)).get_content().replace("\r\n", "\n") == HTML
    attachments = [(p.get_filename(), p.get_content_type(), p.get_payload(decode=True)) for p in got.iter_attachments()]
    assert attachments == [
        ("résumé été.pdf", "application/pdf", PDF),
        ("photo.png", "image/png", PNG),
        ("cities.csv", "text/csv", CSV.encode()),
    ]


RECIPIENTS = ["u@example.com", "c@example.com", "hidden@example.com"]


# --- one contract, every backend that carries bytes ---------------------------------


@pytest.fixture(params=["smtp", "starttls", "smtps", "auth", "file", "memory"])
def carrier(request, tmp_path, certificate):
    """(services, received()) where received() lists (sender, recipients, raw) that arrived."""
    kind = request.param
    if kind in ("smtp", "starttls", "smtps", "auth"):
        fixture = {"smtp": "smtp_server", "starttls": "starttls_server", "smtps": "smtps_server",
                   "auth": "auth_server"}[kind]
        server = request.getfixturevalue(fixture)
        cert = certificate[0]
        url = {
            "smtp": server.url,
            "starttls": f"smtp://{USER}:{PASSWORD.replace('/', '%2F').replace('@', '%40')}@localhost:{server.port}"
                        f"?starttls=1&cafile={cert}",
            "smtps": f"smtps://{USER}:{PASSWORD.replace('/', '%2F').replace('@', '%40')}@localhost:{server.port}"
                     f"?cafile={cert}",
            "auth": f"smtp://{USER}:{PASSWORD.replace('/', '%2F').replace('@', '%40')}@127.0.0.1:{server.port}",
        }[kind]
        services = services_for(tmp_path, url)

        def received():
            return [(r.sender, r.recipients, r.raw) for r in server.handler.received]

        yield services, received
        if kind != "smtp":
            assert server.handler.authenticated, "the server saw no login"
    elif kind == "file":
        folder = tmp_path / "outbox"
        services = services_for(tmp_path, f"file://{folder}")

        def received():
            found = []
            for path in sorted(glob.glob(str(folder / "*.eml"))):
                with open(path, "rb") as f:
                    raw = f.read()
                head = email.message_from_bytes(raw, policy=policy.default)
                assert raw.startswith(b"Return-Path: ") and raw.split(b"\r\n")[1].startswith(b"X-Envelope-To: ")
                message = raw.split(b"\r\n", 2)[2]  # the message as it would go on the wire
                found.append((str(head["Return-Path"]).strip("<>"), str(head["X-Envelope-To"]).split(", "), message))
            return found

        yield services, received
    else:
        services = services_for(tmp_path, "memory://")
        yield services, lambda: [(m.sender, list(m.recipients), m.raw) for m in services.mail.outbox]
    services.close()


def test_a_rich_message_arrives_intact(carrier):
    services, received = carrier
    assert isinstance(services.mail, MailBackend)
    message_id = rich_mail(services)
    ((sender, recipients, raw),) = received()
    assert sender == "john@xn--exmple-cua.com"
    assert recipients == RECIPIENTS
    check_rich(raw, message_id)


def test_a_ready_message_arrives_with_bcc_only_in_the_envelope(carrier):
    services, received = carrier
    from email.message import EmailMessage

    msg = EmailMessage()
    msg["From"] = "Ada <ada@example.com>"
    msg["To"] = "b@example.com"
    msg["Bcc"] = "hidden@example.com"
    msg["Subject"] = "ready-made"
    msg.set_content("Körper\n")
    message_id = send_message(msg, defer=False, services=services)
    ((sender, recipients, raw),) = received()
    assert (sender, recipients) == ("ada@example.com", ["b@example.com", "hidden@example.com"])
    got = email.message_from_bytes(raw, policy=policy.default)
    assert "Bcc" not in got and str(got["Message-ID"]) == message_id
    assert got.get_content().replace("\r\n", "\n") == "Körper\n"


# --- SMTP specifics ---------------------------------------------------------------


def smtp(server, **options):
    return SMTPBackend("127.0.0.1", server.port, **options)


def message(to=("a@example.com",), **kwargs):
    msg, envelope = build_message("s@example.com", list(to), "subject", "body", **kwargs)
    return msg.as_bytes(), envelope


def test_one_connection_serves_many_messages_and_threads(smtp_server):
    backend = smtp(smtp_server)
    raw, envelope = message()
    threads = [threading.Thread(target=lambda: [backend.send(raw, envelope) for _ in range(10)]) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(smtp_server.handler.received) == 40
    assert backend.connections_opened <= 4  # one per concurrent thread at most, not one per message
    backend.close()


def test_an_idle_connection_is_closed_with_quit(smtp_server):
    backend = smtp(smtp_server, idle=0.3)
    raw, envelope = message()
    backend.send(raw, envelope)
    (delivered,) = smtp_server.handler.wait_for(1)
    smtp_server.handler.wait_for_quit(delivered.peer)  # the idle connection said QUIT
    assert backend._pool == []
    backend.send(raw, envelope)  # and a new one is opened when needed
    assert backend.connections_opened == 2
    assert len(smtp_server.handler.wait_for(2)) == 2
    backend.close()


def test_a_connection_the_server_dropped_is_replaced_without_losing_the_message(smtp_server):
    backend = smtp(smtp_server)
    raw, envelope = message()
    backend.send(raw, envelope)
    smtp_server.stop()  # closes every connection, as a restart does
    smtp_server.start()
    backend.send(raw, envelope)
    assert len(smtp_server.handler.received) == 2
    assert backend.connections_opened == 2
    backend.close()


def test_a_server_that_is_down_is_a_temporary_failure():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens once closed
    backend = SMTPBackend("127.0.0.1", port, timeout=2)
    raw, envelope = message()
    with pytest.raises(TemporaryDeliveryError, match="cannot connect"):
        backend.send(raw, envelope)


def test_a_server_that_never_answers_times_out_as_a_temporary_failure():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)  # accepts the TCP connection, never says hello
    try:
        backend = SMTPBackend("127.0.0.1", listener.getsockname()[1], timeout=0.5)
        # The backend's timeout ends the wait for a greeting (without it, this never returns).
        with pytest.raises(TemporaryDeliveryError, match="timed out"):
            backend.send(*message())
    finally:
        listener.close()


def test_answers_are_classified(smtp_server):
    backend = smtp(smtp_server)
    raw, envelope = message(to=["ok@example.com", "gone@example.com", "full@example.com"])
    smtp_server.handler.refuse_rcpt = {"gone@example.com": "550 5.1.1 no such user", "full@example.com": "452 4.2.2 mailbox full"}
    result = backend.send(raw, envelope)
    assert result.accepted == ("ok@example.com",)
    assert result.refused == {"gone@example.com": "550 5.1.1 no such user"}
    assert result.deferred == {"full@example.com": "452 4.2.2 mailbox full"}
    assert result.response.startswith("250")
    assert smtp_server.handler.received[-1].recipients == ["ok@example.com"]

    smtp_server.handler.refuse_rcpt = {}
    smtp_server.handler.data_answer = "554 5.7.1 message refused as spam"
    with pytest.raises(PermanentDeliveryError) as refused:
        backend.send(*message())
    assert refused.value.code == 554 and "spam" in refused.value.response
    smtp_server.handler.data_answer = "451 4.3.0 try again later"
    with pytest.raises(TemporaryDeliveryError) as later:
        backend.send(*message())
    assert later.value.code == 451
    smtp_server.handler.data_answer = None
    smtp_server.handler.refuse_rcpt = {"a@example.com": "550 5.1.1 no such user"}
    with pytest.raises(PermanentDeliveryError, match="none of the recipients"):
        backend.send(*message())
    smtp_server.handler.refuse_rcpt = {}
    backend.send(*message())  # the connection is still good after all that
    backend.close()


def test_direct_sending_raises_when_not_everyone_got_it(smtp_server, tmp_path):
    services = services_for(tmp_path, smtp_server.url)
    smtp_server.handler.refuse_rcpt = {"gone@example.com": "550 5.1.1 no such user"}
    with pytest.raises(PermanentDeliveryError) as refused:
        send_mail("s@example.com", ["ok@example.com", "gone@example.com"], "s", "b", defer=False, services=services)
    assert refused.value.accepted == ("ok@example.com",)
    assert refused.value.refused == {"gone@example.com": "550 5.1.1 no such user"}
    services.close()


def test_tls_is_verified(starttls_server, smtps_server, certificate, tmp_path):
    raw, envelope = message()
    unverified = SMTPBackend("localhost", starttls_server.port, starttls=True, username=USER, password=PASSWORD, timeout=5)
    with pytest.raises(TemporaryDeliveryError, match="CERTIFICATE_VERIFY_FAILED|certificate verify failed"):
        unverified.send(raw, envelope)
    wrong_name = SMTPBackend("127.0.0.2", starttls_server.port, starttls=True, username=USER, password=PASSWORD,
                             cafile=certificate[0], timeout=5)
    with pytest.raises(TemporaryDeliveryError):
        wrong_name.send(raw, envelope)
    trusting = SMTPBackend("localhost", smtps_server.port, use_ssl=True, username=USER, password=PASSWORD,
                           verify=False, timeout=5)
    trusting.send(raw, envelope)
    trusting.close()


def test_starttls_is_never_skipped_and_a_wrong_password_is_temporary(smtp_server, starttls_server, certificate):
    raw, envelope = message()
    no_tls = SMTPBackend("127.0.0.1", smtp_server.port, starttls=True, timeout=5)
    with pytest.raises(TemporaryDeliveryError, match="does not offer STARTTLS"):
        no_tls.send(raw, envelope)
    assert smtp_server.handler.received == []
    wrong = SMTPBackend("localhost", starttls_server.port, starttls=True, username=USER, password="wrong",
                        cafile=certificate[0], timeout=5)
    with pytest.raises(TemporaryDeliveryError, match="login .* failed: 535"):
        wrong.send(raw, envelope)
    anonymous = SMTPBackend("localhost", starttls_server.port, starttls=True, cafile=certificate[0], timeout=5)
    with pytest.raises(TemporaryDeliveryError, match="530"):  # authentication required: configuration
        anonymous.send(raw, envelope)
    assert starttls_server.handler.received == []


def test_the_envelope_is_checked_again_by_the_backend(smtp_server):
    backend = smtp(smtp_server)
    raw, _ = message()
    with pytest.raises(PermanentDeliveryError, match="envelope"):
        backend.send(raw, Envelope("s@example.com", ["a@example.com>\r\nRCPT TO:<b@example.com"]))
    assert smtp_server.handler.received == []


def test_smtp_urls_are_checked_when_services_is_built(tmp_path):
    for bad, fragment in [
        ("smtp://", "one host"),
        ("smtp://a:25,b:25", "one host"),
        ("smtp://host:25/path", "no path"),
        ("smtps://host?starttls=1", "smtps:// is TLS from the start"),
        ("smtp://host?starttls=maybe", "not a flag"),
        ("smtp://host?timeout=soon", "not a number"),
        ("smtp://host?idle=-1", "idle"),
        ("smtp://host?tls=1", "unknown option"),
        ("smtp://:secret@host", "needs a user"),
        ("smtp://host:99999", "bad port"),
        ("file://host/dir", "no host"),
        ("file://", "path is required"),
        ("console://x", "no host or path"),
        ("carrier-pigeon://", "unknown backend"),
    ]:
        with pytest.raises(ConfigurationError, match=fragment):
            Services(environ={"GAESERVICES_MAIL": bad}, data_dir=str(tmp_path))
    with pytest.raises(ConfigurationError) as caught:
        Services(environ={"GAESERVICES_MAIL": "smtp://u:hunter2@host:25/x"}, data_dir=str(tmp_path))
    assert "hunter2" not in str(caught.value) and "GAESERVICES_MAIL" in str(caught.value)
    services = Services(environ={"GAESERVICES_MAIL": "smtps://u:hunter2@mail.example.com"}, data_dir=str(tmp_path))
    assert "hunter2" not in repr(services) and "hunter2" not in repr(services.mail)
    assert (services.mail.port, services.mail.use_ssl) == (465, True)
    with pytest.raises(ConfigurationError, match="EMAIL_QUEUE_NAME"):
        Services(environ={"EMAIL_QUEUE_NAME": "mail queue"}, data_dir=str(tmp_path))


def test_the_defaults_are_the_console_here_and_app_engine_there(tmp_path):
    assert Services(environ={}, data_dir=str(tmp_path)).backend_url("mail").scheme == "console"
    env = {"GAE_ENV": "standard", "GAE_SERVICE": "default", "GAE_INSTANCE": "x", "GAESERVICES_SECRET_KEY": KEY}
    assert Services(environ=env, data_dir=str(tmp_path)).backend_url("mail").scheme == "appengine"


# --- console, file -----------------------------------------------------------------


def test_the_console_prints_the_message_readably(tmp_path, capsys):
    services = services_for(tmp_path, "console://")
    rich_mail(services)
    out = capsys.readouterr().out
    assert f"Subject: {SUBJECT}" in out
    assert "From: Jöhn Dœ <john@xn--exmple-cua.com>" in out
    assert "envelope: from <john@xn--exmple-cua.com> to <u@example.com>, <c@example.com>, <hidden@example.com>" in out
    assert BODY.rstrip("\n") in out
    assert "résumé été.pdf  application/pdf  10,249 bytes" in out
    assert "photo.png  image/png  3,008 bytes" in out
    assert "[text/html part:" in out
    services.close()


def test_file_writes_are_atomic_and_one_per_message(tmp_path):
    folder = tmp_path / "mails"
    services = services_for(tmp_path, f"file://{folder}")
    for i in range(5):
        send_mail("s@example.com", "a@example.com", f"n{i}", "b", defer=False, services=services)
    names = sorted(os.listdir(folder))
    assert len(names) == 5 and all(n.endswith(".eml") and not n.startswith(".tmp") for n in names)
    subjects = [email.message_from_bytes((folder / n).read_bytes(), policy=policy.default)["Subject"] for n in names]
    assert subjects == [f"n{i}" for i in range(5)]  # names sort by time

    # a failure while writing leaves no partial file under a real name
    def fail(*args):
        raise OSError("disk full")

    original = os.fsync
    os.fsync = fail
    try:
        with pytest.raises(OSError):
            send_mail("s@example.com", "a@example.com", "lost", "b", defer=False, services=services)
    finally:
        os.fsync = original
    assert sorted(os.listdir(folder)) == names
    services.close()


# --- App Engine, through the SDK's testbed ------------------------------------------------


@pytest.fixture
def gae_services(testbed, tmp_path):
    """(services, stub, requests): the Mail API requests, as App Engine receives them.

    The stub's own record of a message re-decodes binary attachments as text
    (it sets bytes as a legacy MIME payload), so bytes are checked on the
    request itself, captured by an API proxy hook before the stub runs.
    """
    from google.appengine.api import apiproxy_stub_map

    requests = []
    apiproxy_stub_map.apiproxy.GetPreCallHooks().Append(
        "capture-mail", lambda service, call, request, response: requests.append(request), "mail"
    )
    services = services_for(tmp_path, "appengine://")
    yield services, testbed.get_stub("mail"), requests
    services.close()


def test_app_engine_sends_the_fields_it_allows(gae_services):
    services, stub, requests = gae_services
    rich_mail(services)
    (request,) = requests
    assert request.Sender == "Jöhn Dœ <john@xn--exmple-cua.com>"
    assert list(request.To) == ['"Ünïcode, Nämé" <u@example.com>']
    assert list(request.Cc) == ["c@example.com"]
    assert list(request.Bcc) == ["hidden@example.com"]
    assert request.ReplyTo == "replies@example.com"
    assert request.Subject == SUBJECT
    assert request.TextBody.replace("\r\n", "\n") == BODY
    assert request.HtmlBody.replace("\r\n", "\n") == HTML
    assert [(a.FileName, a.Data) for a in request.Attachment] == [
        ("résumé été.pdf", PDF), ("photo.png", PNG), ("cities.csv", CSV.encode())
    ]
    # Of the other headers, only those App Engine allows: X-Campaign is dropped
    assert [(h.name, h.value) for h in request.Header] == [("In-Reply-To", "<earlier@example.com>")]
    (sent,) = stub.get_sent_messages()  # and the stub took it
    assert sent.subject == SUBJECT


def test_app_engine_refuses_a_forbidden_attachment_before_queueing(gae_services):
    services, stub, requests = gae_services
    with pytest.raises(InvalidMessageError, match=r"\.exe"):
        send_mail("s@example.com", "a@example.com", "s", "b", attachments=[("setup.exe", b"MZ")], services=services)
    assert stub.get_sent_messages() == []


def test_the_smtp_client_and_server_agree_on_dot_stuffing(smtp_server):
    backend = smtp(smtp_server)
    body = ".\n..\n.hidden line\nend\n"
    msg, envelope = build_message("s@example.com", "a@example.com", "dots", body)
    backend.send(msg.as_bytes(), envelope)
    got = smtp_server.handler.received[0].message
    assert got.get_content().replace("\r\n", "\n") == body
    backend.close()


def test_a_quoted_local_part_goes_in_the_envelope_as_written(smtp_server):
    backend = smtp(smtp_server)
    msg, envelope = build_message("s@example.com", ['"john doe"@example.com'], "s", "b")
    backend.send(msg.as_bytes(), envelope)
    assert smtp_server.handler.received[0].recipients == ['"john doe"@example.com']
    backend.close()


# Python 3.12+ warns that forking a threaded process may deadlock the child: that is
# the very situation this test sets up, to show the backend survives it.
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_a_forked_process_does_not_use_its_parents_connection_or_locks(smtp_server):
    import signal

    backend = smtp(smtp_server)
    raw, envelope = message()
    backend.send(raw, envelope)
    # Another thread of the parent holds the pool's lock at the moment of the fork
    # (as the idle reaper may): the child must not wait for it for ever.
    held, release = threading.Event(), threading.Event()

    def hold():
        with backend._lock:
            held.set()
            release.wait(10)

    holder = threading.Thread(target=hold)
    holder.start()
    held.wait(5)
    pid = os.fork()
    if pid == 0:  # the child: a connection of its own, never the parent's socket
        status = 1
        try:
            backend.send(raw, envelope)
            status = 0 if backend.connections_opened == 2 else 3
        finally:
            os._exit(status)
    release.set()
    holder.join()
    deadline = time.monotonic() + 20
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            pytest.fail("the forked child hung")
        time.sleep(0.02)
    assert os.waitstatus_to_exitcode(status) == 0
    backend.send(raw, envelope)  # the parent's connection was left alone and still works
    assert backend.connections_opened == 1
    peers = [r.peer for r in smtp_server.handler.received]
    assert len(peers) == 3 and peers[0] == peers[2] != peers[1]
    backend.close()
