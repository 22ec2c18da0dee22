"""Sessions and unique claims: a session counter, a log-in that cycles the key,
and usernames registered through ``claim``."""

from __future__ import annotations

import html
from collections.abc import Iterable
from typing import TYPE_CHECKING
from urllib.parse import parse_qs

from gaeservices.config import Services
from gaeservices.sessions import SessionMiddleware
from gaeservices.unique import claim, release

from .app import page

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

PREFIX = "/sessions"
TITLE = "Sessions: a counter, log in, unique usernames"


def wrap(app: WSGIApplication, services: Services) -> WSGIApplication:
    return SessionMiddleware(app, services=services)


def _form(environ: WSGIEnvironment) -> dict[str, str]:
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = 0
    fields = parse_qs(environ["wsgi.input"].read(length).decode("utf-8", "replace"))
    return {name: values[0] for name, values in fields.items()}


def make_app(services: Services) -> WSGIApplication:
    def sessions(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        session = environ["gaeservices.session"]
        base = environ.get("SCRIPT_NAME", "")
        message = ""
        if environ["REQUEST_METHOD"] == "POST":
            form = _form(environ)
            action = form.get("action")
            if action == "count":
                session["count"] = session.get("count", 0) + 1
            elif action == "register":
                name = form.get("username", "").strip().casefold()
                owner = session.get("owner") or session.setdefault("owner", _owner_id())
                if not name:
                    session["flash"] = "Choose a username."
                elif claim("demo-username", name, owner, services=services):
                    previous = session.get("user")
                    if previous and previous != name:
                        release("demo-username", previous, owner, services=services)
                    session.cycle_key()  # logging in: a new id, so a planted one is useless
                    session["user"] = name
                    session["flash"] = f"Registered and logged in as {name}."
                else:
                    session["flash"] = f"{name!r} is taken."
            elif action == "logout":
                session.invalidate()
            start_response("303 See Other", [("Location", base + "/"), ("Content-Type", "text/plain")])
            return [b""]
        message = session.pop("flash", "") if "flash" in session else ""
        user = session.get("user")
        body = (
            (f"<p class='note'>{html.escape(message)}</p>" if message else "")
            + f"<p>You clicked <strong id='count'>{session.get('count', 0)}</strong> times "
            "in this session.</p>"
            "<form method='post'><input type='hidden' name='action' value='count'>"
            "<button>Count</button></form>"
            + (
                f"<p>Logged in as <strong id='user'>{html.escape(user)}</strong>.</p>"
                "<form method='post'><input type='hidden' name='action' value='logout'>"
                "<button>Log out</button></form>"
                if user
                else "<p>Not logged in.</p>"
            )
            + "<h3>Register a username</h3>"
            "<form method='post'><input type='hidden' name='action' value='register'>"
            "<input name='username' required> <button>Register</button></form>"
            "<p class='note'>Usernames are reserved with <code>claim()</code>: of any number of "
            "simultaneous registrations of one name, exactly one wins. Logging in cycles the "
            f"session id ({_shown_id(session.id)}).</p>"
        )
        start_response("200 OK", [("Content-Type", "text/html; charset=utf-8")])
        return [page(TITLE, body)]

    return sessions


def _shown_id(sid: str | None) -> str:
    return f"now <code>{html.escape(sid[:6])}…</code>" if sid else "none yet"


def _owner_id() -> str:
    import secrets

    return secrets.token_urlsafe(12)
