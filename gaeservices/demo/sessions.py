"""Sessions and unique claims: a per-session counter, accounts with usernames
claimed race-free, and a log-in that cycles the session id.

Registering claims the username with :func:`~gaeservices.unique.claim`; the
claim's owner value *is* the account (a salted scrypt hash of its password),
so the name and its credentials are written in one atomic step: of any number
of simultaneous registrations of a name exactly one wins, and no name is ever
left claimed without a password. Logging in calls ``session.cycle_key()`` (an
id planted before the log-in is worth nothing after it), logging out
``session.invalidate()``; both show the session id changing.
"""

from __future__ import annotations

import hashlib
import hmac
import html
import re
import secrets
from collections.abc import Iterable
from typing import TYPE_CHECKING
from urllib.parse import parse_qs

from gaeservices.config import Services
from gaeservices.exceptions import SessionError, StoreError
from gaeservices.sessions import Session, SessionMiddleware
from gaeservices.unique import claim, owner_of

from .app import page, unavailable

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

PREFIX = "/sessions"
TITLE = "Sessions: a counter, accounts, log in and out"
NAMESPACE = "demo-username"
MAX_FORM = 8 * 1024
USERNAME = re.compile(r"[a-z0-9][a-z0-9_.-]{0,29}")
MIN_PASSWORD = 8


def wrap(app: WSGIApplication, services: Services) -> WSGIApplication:
    return SessionMiddleware(app, services=services)


def _form(environ: WSGIEnvironment) -> dict[str, str]:
    try:
        length = min(int(environ.get("CONTENT_LENGTH") or 0), MAX_FORM)
    except ValueError:
        length = 0
    fields = parse_qs(environ["wsgi.input"].read(length).decode("utf-8", "replace"))
    return {name: values[0] for name, values in fields.items()}


def _hash(password: str, salt: bytes) -> bytes:
    return hashlib.scrypt(password.encode(), salt=salt, n=2**14, r=8, p=1, dklen=32)


def _account(password: str) -> bytes:
    """A claim owner holding the password's salted hash: ``scrypt$salt$hash``."""
    salt = secrets.token_bytes(16)
    return b"scrypt$" + salt.hex().encode() + b"$" + _hash(password, salt).hex().encode()


def _password_matches(account: bytes | None, password: str) -> bool:
    if account is None:
        _hash(password, b"\0" * 16)  # the same work for an unknown name: no timing oracle
        return False
    kind, salt, digest = account.decode().split("$")
    return kind == "scrypt" and hmac.compare_digest(_hash(password, bytes.fromhex(salt)).hex(), digest)


def _short(sid: str | None) -> str:
    return f"{sid[:8]}…" if sid else "none yet"


def _log_in(session: Session, name: str) -> None:
    before = session.id
    session.cycle_key()
    session["user"] = name
    session["flash"] = f"Logged in as {name}. The session id before was {_short(before)}; it has a new one now."


def _post(session: Session, form: dict[str, str], services: Services) -> None:
    action = form.get("action")
    name = form.get("username", "").strip().casefold()
    password = form.get("password", "")
    if action == "register":
        if session.get("user"):
            session["flash"] = "Log out first."
        elif not USERNAME.fullmatch(name):
            session["flash"] = "A username is 1-30 letters, digits, '.', '_' or '-', starting with a letter or digit."
        elif len(password) < MIN_PASSWORD:
            session["flash"] = f"Choose a password of at least {MIN_PASSWORD} characters."
        elif claim(NAMESPACE, name, _account(password), services=services):
            _log_in(session, name)
            session["flash"] = "Registered. " + session["flash"]
        else:
            session["flash"] = f"The username {name!r} is taken."
    elif action == "login":
        if _password_matches(owner_of(NAMESPACE, name, services=services), password):
            _log_in(session, name)
        else:
            session["flash"] = "Wrong username or password."
    elif action == "logout":
        before = session.id
        session.invalidate()
        session["flash"] = f"Logged out: session {_short(before)} is ended for good."


def make_app(services: Services) -> WSGIApplication:
    def sessions(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        session = environ["gaeservices.session"]
        base = environ.get("SCRIPT_NAME", "")
        try:
            if environ["REQUEST_METHOD"] == "POST":
                _post(session, _form(environ), services)
                start_response("303 See Other", [("Location", base + "/"), ("Content-Type", "text/plain")])
                return [b""]
            session["views"] = session.get("views", 0) + 1
            body = _show(session)
            status = "200 OK"
        except (SessionError, StoreError) as error:
            kind = "store" if isinstance(error, StoreError) else "cache"
            body = unavailable("the session cannot be kept", services, kind, error)
            status = "503 Service Unavailable"
        start_response(status, [("Content-Type", "text/html; charset=utf-8"), ("Cache-Control", "no-store")])
        return [page(TITLE, body)]

    return sessions


def _show(session: Session) -> str:
    flash = session.pop("flash", "")
    user = session.get("user")
    views = session["views"]
    parts = [f"<p class='flash' id='flash'>{html.escape(flash)}</p>" if flash else ""]
    parts.append(
        f"<p><span class='big' id='count'>{views}</span> {'view' if views == 1 else 'views'} "
        "of this page in this session.</p>"
        f"<p class='note'>Session id <code id='sid'>{html.escape(_short(session.id))}</code>: the cookie "
        "holds only this id, signed; the data is in the store, with the cache in front.</p>"
    )
    if user:
        parts.append(
            "<h2>Account</h2>"
            f"<p>Logged in as <strong id='user'>{html.escape(user)}</strong>.</p>"
            "<form method='post'><input type='hidden' name='action' value='logout'>"
            "<button>Log out</button></form>"
        )
    else:
        def account_form(action: str, label: str, autocomplete: str) -> str:
            return (
                f"<form method='post' id='{action}'><input type='hidden' name='action' value='{action}'>"
                f"<label>Username<br><input type='text' name='username' required maxlength='30' "
                "autocomplete='username'></label>"
                f"<label>Password<br><input type='password' name='password' required "
                f"autocomplete='{autocomplete}'></label>"
                f"<button>{label}</button></form>"
            )

        parts.append(
            "<div class='cols'><div><h2>Log in</h2>"
            + account_form("login", "Log in", "current-password")
            + "</div><div><h2>Register</h2>"
            + account_form("register", "Register", "new-password")
            + "</div></div>"
        )
    parts.append(
        "<p class='note'>Usernames are reserved with <code>claim()</code>: of any number of simultaneous "
        "registrations of one name, exactly one wins, without a uniqueness constraint in the database. "
        "Logging in cycles the session id, so an id planted before is worthless; logging out ends it for "
        "good, in the store and the cache.</p>"
    )
    return "".join(parts)
