"""Mail: send a message through the deferred mail service, and watch it go out.

The form calls ``send_mail(..., defer=True)``: the message is checked, queued on
``EMAIL_QUEUE_NAME``, and sent by the demo's dispatcher thread (the tasks
page starts it) through ``GAESERVICES_MAIL``. With the demo's defaults that is
``console://``: the message is printed in the demo's terminal. To see it
arrive over SMTP instead::

    gaeservices smtpd                                        # one terminal
    GAESERVICES_MAIL=smtp://127.0.0.1:1025 gaeservices demo  # another

With ``--disable-task-running`` the message waits in the queue, listed by
``gaeservices tasks list`` and sent by ``gaeservices tasks run --all`` or the
task admin page's "Run now". With ``GAESERVICES_MAIL=memory://`` the page shows
the outbox itself: the messages the backend delivered in this process.
"""

from __future__ import annotations

import html
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

from gaeservices.config import Services
from gaeservices.exceptions import InvalidMessageError
from gaeservices.mail import delivery_status, send_mail

from .app import page, recall, remember

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

PREFIX = "/mail"
TITLE = "Mail: send a message"
SENT_KEY = "demo:mail:sent"
MAX_FORM = 64 * 1024
ADMIN = "/_ah/admin/tasks/"

DEFAULTS = {
    "sender": "Demo <demo@example.com>",
    "to": "Ünïcode Reader <reader@example.com>",
    "subject": "Grüße from the gaeservices demo",
    "body": "Hello!\n\nThis message was queued by the demo and sent by its worker.\n",
}


def _sent(services: Services) -> list[dict[str, Any]]:
    return recall(services, SENT_KEY)


def _status(services: Services, message_id: str) -> str:
    status = delivery_status(message_id, services=services)
    if status is None:
        return (f"<span class='state s-queued'>queued</span> <span class='note'>run it from the "
                f"<a href='{ADMIN}?view=queued'>task admin page</a>, or wait for the worker</span>")
    if status.state == "sent":
        return "<span class='state s-done'>sent</span>"
    refused = "; ".join(f"{r}: {a}" for r, a in status.refused.items())
    view = "dead" if status.state == "failed" else "failed"
    return f"<span class='state s-{view}'>{html.escape(status.state)}</span> {html.escape(refused)}"


def _outbox(services: Services) -> str:
    """The memory:// backend's outbox (the messages delivered in this process), newest first."""
    outbox = getattr(services.mail, "outbox", None)
    if outbox is None:
        return ""
    rows = "".join(
        f"<tr><td>{html.escape(', '.join(m.recipients))}</td><td>{html.escape(m.subject)}</td>"
        f"<td><code>{html.escape(m.message_id)}</code></td><td class='n'>{len(m.raw):,} bytes</td></tr>"
        for m in list(outbox)[::-1][:20]
    )
    return "<h2>Outbox</h2>" + (
        f"<table id='outbox'><tr><th>to</th><th>subject</th><th>message-id</th><th class='n'>size</th></tr>"
        f"{rows}</table>" if rows else "<p class='note' id='outbox'>Nothing delivered yet.</p>"
    )


def _form(values: dict[str, str], error: str = "") -> str:
    def field(name: str, label: str) -> str:
        return (
            f"<label>{label}<br><input type='text' name='{name}' size='60' "
            f"value='{html.escape(values.get(name, ''), quote=True)}'></label>"
        )

    checked = {name: " checked" if values.get(name) else "" for name in ("html", "attach")}
    return (
        (f"<p class='flash error' id='error'>{html.escape(error)}</p>" if error else "")
        + "<form method='post'>"
        + field("sender", "From")
        + field("to", "To")
        + field("subject", "Subject")
        + "<label>Body<textarea name='body' rows='6'>"
        + html.escape(values.get("body", ""))
        + "</textarea></label>"
        + f"<label class='choice'><input type='checkbox' name='html' value='1'{checked['html']}> also as HTML</label>"
        + f"<label class='choice'><input type='checkbox' name='attach' value='1'{checked['attach']}> "
        "attach the body as note.txt</label><br>"
        + "<button>Send later (deferred)</button></form>"
    )


def make_app(services: Services) -> WSGIApplication:
    def mail_page(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        values = dict(DEFAULTS, html="1", attach="1")
        error = ""
        if environ["REQUEST_METHOD"] == "POST":
            size = min(int(environ.get("CONTENT_LENGTH") or 0), MAX_FORM)
            form = parse_qs(environ["wsgi.input"].read(size).decode("utf-8", "replace"))
            values = {name: (form.get(name) or [""])[0] for name in (*DEFAULTS, "html", "attach")}
            body = values["body"]
            try:
                message_id = send_mail(
                    values["sender"],
                    [values["to"]],
                    values["subject"],
                    body,
                    html=f"<p>{html.escape(body)}</p>".replace("\n", "<br>\n") if values["html"] else None,
                    attachments=[("note.txt", body)] if values["attach"] else (),
                    services=services,
                )
            except InvalidMessageError as exc:
                error = f"Not queued: {exc}"
            else:
                remember(services, SENT_KEY, {"id": message_id, "to": values["to"], "subject": values["subject"],
                                              "at": time.time()})
                start_response("303 See Other", [("Location", environ.get("SCRIPT_NAME", "") + "/")])
                return [b""]
        rows = "".join(
            f"<tr><td>{html.escape(item['to'])}</td><td>{html.escape(item['subject'])}</td>"
            f"<td class='status'>{_status(services, item['id'])}</td></tr>"
            for item in _sent(services)
        )
        table = (f"<h2>Queued here</h2><table id='sent'><tr><th>to</th><th>subject</th><th>state</th></tr>"
                 f"{rows}</table>" if rows else "<p class='note'>Nothing sent yet.</p>")
        backend = html.escape(services.describe("mail"))
        body_html = (
            _form(values, error)
            + f"<p class='note'>backend: <code>{backend}</code>; queue: "
            f"<code>{html.escape(services.email_queue_name)}</code>. With <code>console://</code> the "
            "message is printed in the demo's terminal; run <code>gaeservices smtpd</code> and start the "
            "demo with <code>GAESERVICES_MAIL=smtp://127.0.0.1:1025</code> to see it arrive there. "
            "Reload to see the status.</p>"
            + table
            + _outbox(services)
        )
        start_response("400 Bad Request" if error else "200 OK",
                       [("Content-Type", "text/html; charset=utf-8"), ("Cache-Control", "no-store")])
        return [page(TITLE, body_html)]

    return mail_page
