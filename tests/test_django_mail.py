"""Django's mail API on the mail service: EmailBackend (deferred) and SyncEmailBackend."""

from __future__ import annotations

import django
import pytest
from django_fixtures import SECRET_KEY, configure, django_test_db  # noqa: F401  (the fixture)

configure()

from django.core import mail  # noqa: E402
from django.core.mail import EmailMessage, EmailMultiAlternatives, mail_admins, mail_managers  # noqa: E402
from django.test import override_settings  # noqa: E402

from gaeservices.config import Services, set_services  # noqa: E402
from gaeservices.exceptions import InvalidMessageError  # noqa: E402
from gaeservices.tasks.worker import Dispatcher  # noqa: E402

pytestmark = pytest.mark.usefixtures("django_test_db")
DEFERRED = "gaeservices.django.mail.EmailBackend"
SYNC = "gaeservices.django.mail.SyncEmailBackend"


def people(name, address):
    """ADMINS/MANAGERS as each Django version wants them (6.0 deprecated the pairs)."""
    return [address] if django.VERSION >= (6,) else [(name, address)]


@pytest.fixture
def svc(tmp_path):
    services = Services(secret_key=SECRET_KEY, data_dir=str(tmp_path), mail="memory://", environ={})
    previous = set_services(services)
    with override_settings(EMAIL_BACKEND=DEFERRED, EMAIL_QUEUE_NAME="mail",
                           ADMINS=people("Ops", "ops@example.com"), MANAGERS=people("Boss", "boss@example.com"),
                           SERVER_EMAIL="server@example.com", DEFAULT_FROM_EMAIL="site@example.com"):
        yield services
    set_services(previous)
    services.close()


def drain(services):
    return Dispatcher(services, drain=True, poll=0.01).run()


def full_message():
    message = EmailMultiAlternatives(
        subject="Résumé ✓ ready",
        body="Bonjour Zoë — the report is attached.",
        from_email="Zoë Ünal <zoe@example.com>",
        to=["Ann <ann@example.com>", "bob@example.com"],
        cc=["carl@example.com"],
        bcc=["hidden@example.com"],
        reply_to=["Replies <reply@example.com>"],
        headers={"X-Campaign": "spring-2026", "X-Note": "naïve"},
    )
    message.attach_alternative("<p>Bonjour <b>Zoë</b></p>", "text/html")
    message.attach("report.pdf", b"%PDF-1.4 binary\x00\xff", "application/pdf")
    message.attach("notes.txt", "naïve notes", "text/plain")
    return message


def test_a_full_message_is_deferred_then_arrives_whole(svc):
    assert full_message().send() == 1
    assert svc.mail.outbox == []  # queued, not sent
    tasks = svc.queue.tasks(queue="mail")
    assert len(tasks) == 1 and tasks[0].state == "pending"
    drain(svc)
    [sent] = svc.mail.outbox
    assert sent.sender == "zoe@example.com"
    assert sorted(sent.recipients) == sorted(
        ["ann@example.com", "bob@example.com", "carl@example.com", "hidden@example.com"]
    )
    msg = sent.message
    assert msg["Subject"] == "Résumé ✓ ready"
    assert "Zoë Ünal" in str(msg["From"]) and "Ann <ann@example.com>" in str(msg["To"])
    assert str(msg["Cc"]) == "carl@example.com" and "Bcc" not in msg and b"hidden@" not in sent.raw
    assert "reply@example.com" in str(msg["Reply-To"])
    assert msg["X-Campaign"] == "spring-2026" and msg["X-Note"] == "naïve"
    assert msg.get_body(("plain",)).get_content().strip() == "Bonjour Zoë — the report is attached."
    assert "<b>Zoë</b>" in msg.get_body(("html",)).get_content()
    attachments = {part.get_filename(): part for part in msg.iter_attachments()}
    assert attachments["report.pdf"].get_content_type() == "application/pdf"
    assert attachments["report.pdf"].get_content() == b"%PDF-1.4 binary\x00\xff"
    assert attachments["notes.txt"].get_content().strip() == "naïve notes"


def test_count_fail_silently_and_refusals_before_queueing(svc):
    good = EmailMessage("hi", "body", "site@example.com", ["a@example.com"])
    nobody = EmailMessage("hi", "body", "site@example.com", [])
    bad = EmailMessage("hi", "body", "site@example.com", ["not an address at all"])
    from gaeservices.django.mail import EmailBackend

    backend = EmailBackend()
    with pytest.raises(InvalidMessageError):
        backend.send_messages([good, bad])
    quiet = EmailBackend(fail_silently=True)
    assert quiet.send_messages([good, bad, nobody, good]) == 2
    assert quiet.send_messages([]) == 0
    drain(svc)
    assert [list(m.recipients) for m in svc.mail.outbox] == [["a@example.com"]] * 3  # the first batch queued `good`


def test_sync_backend_sends_at_once(svc):
    with override_settings(EMAIL_BACKEND=SYNC):
        assert mail.send_mail("now", "right now", None, ["x@example.com"]) == 1
    [sent] = svc.mail.outbox
    assert sent.sender == "site@example.com" and sent.subject == "now"
    assert svc.queue.tasks() == []


def test_mail_admins_and_managers(svc):
    mail_admins("disk full", "the disk is full", html_message="<p>full</p>")
    mail_managers("report", "weekly report")
    drain(svc)
    by_rcpt = {tuple(m.recipients): m for m in svc.mail.outbox}
    assert by_rcpt[("ops@example.com",)].subject == "[Django] disk full"
    assert by_rcpt[("ops@example.com",)].sender == "server@example.com"
    assert by_rcpt[("boss@example.com",)].subject == "[Django] report"


@pytest.mark.skipif(django.VERSION < (6, 1), reason="MAILERS is Django 6.1's mail configuration")
def test_under_django_6_1_mailers(svc):
    mailers = {"default": {"BACKEND": DEFERRED, "OPTIONS": {"queue": "default"}},
               "now": {"BACKEND": SYNC}}
    with override_settings(MAILERS=mailers):
        assert EmailMessage("queued", "b", "site@example.com", ["q@example.com"]).send() == 1
        assert [t.queue for t in svc.queue.tasks()] == ["default"]
        assert EmailMessage("direct", "b", "site@example.com", ["d@example.com"]).send(using="now") == 1
        assert [m.subject for m in svc.mail.outbox] == ["direct"]
        drain(svc)
        assert [m.subject for m in svc.mail.outbox] == ["direct", "queued"]
