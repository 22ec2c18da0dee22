"""The task admin page: queues, their tasks, and run now / retry / delete / purge.

A WSGI application, to mount at ``/_ah/admin/tasks`` (any prefix works: links
are built from ``SCRIPT_NAME``)::

    from gaeservices.tasks.admin_app import TaskAdminApp

    admin = TaskAdminApp(services, is_admin=lambda environ: environ.get("REMOTE_USER") == "ops")

**Nobody gets in unless the application says who may.** Access needs one of:

- ``is_admin``, a keyword argument: a callable given the WSGI environ that
  returns ``True`` (exactly) for an administrator -- the application's own
  login, e.g. Django's ``request.user.is_staff`` or App Engine's
  ``users.is_current_user_admin()``;
- ``environ["gaeservices.is_admin"]``, the same callable put on the environ by a
  middleware in front (a framework's authentication layer), per request;
- HTTP Basic credentials from ``GAESERVICES_ADMIN_BASIC_AUTH=user:password``
  (or ``basic_auth=``), compared in constant time. The password must be at
  least 16 characters; serve the page over HTTPS, as Basic sends it with every
  request.

A request any of them admits is served. Without any, every request is refused
(403, saying how to configure one): the page is never open by default.

Every change is a POST carrying a CSRF token: the token is signed with the
application's keys and bound to a random cookie of this page (``SameSite=Strict``,
``HttpOnly``), so another site can neither read one nor make one that verifies;
a missing or forged token is refused with 403, and so is a request the browser
marks as cross-site (``Sec-Fetch-Site``). GET never changes anything. Every
value shown is HTML-escaped, and the page runs no script at all (its Content
Security Policy allows none).

What each backend allows is :mod:`gaeservices.tasks.inspection`'s; an action
the backend cannot do says so on the page.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import html
import json
import re
import secrets
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timezone
from typing import Any
from urllib.parse import quote, urlencode

from ..config import Services, get_services
from ..exceptions import ConfigurationError
from .inspection import VIEWS, Inspector, QueueRow, TaskRow, UnsupportedActionError, inspector_for

__all__ = [
    "TaskAdminApp",
    "ADMIN_ENVIRON_KEY",
    "BASIC_AUTH_VARIABLE",
    "CSRF_COOKIE",
    "MIN_PASSWORD_LENGTH",
]

ADMIN_ENVIRON_KEY = "gaeservices.is_admin"
BASIC_AUTH_VARIABLE = "GAESERVICES_ADMIN_BASIC_AUTH"
CSRF_COOKIE = "gaeservices_tasks_csrf"
MIN_PASSWORD_LENGTH = 16
CSRF_MAX_AGE = 12 * 3600  # a token older than this is refused: reload the page
NOTE_MAX_AGE = 600
MAX_FORM = 16 * 1024
_COOKIE_VALUE = re.compile(r"^[A-Za-z0-9_-]{43}$")
_REALM = "gaeservices task admin"
_FROM_ENVIRON: Any = object()

AdminCheck = Callable[[dict[str, Any]], Any]

STYLE = """
:root{color-scheme:light dark;--fg:#1d232a;--mute:#5f6b76;--line:#dde2e6;--bg:#fff;--alt:#f5f7f8;
--accent:#1f5fa8;--ok:#1e7a3c;--warn:#9a6200;--bad:#b3261e}
@media (prefers-color-scheme:dark){:root{--fg:#e4e8eb;--mute:#9aa5ae;--line:#333a40;--bg:#15191c;
--alt:#1c2125;--accent:#7fb2ec;--ok:#6cc28a;--warn:#e0b25c;--bad:#f08a80}}
*{box-sizing:border-box}
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;color:var(--fg);background:var(--bg);
margin:0 auto;padding:1.2rem 1.5rem 3rem;max-width:84rem}
header{display:flex;align-items:baseline;gap:1rem;flex-wrap:wrap;border-bottom:1px solid var(--line);
padding-bottom:.6rem;margin-bottom:1rem}
header h1{font-size:1.35rem;margin:0} header .meta{color:var(--mute);font-size:.9em}
h2{font-size:1.05rem;margin:1.6rem 0 .5rem}
a{color:var(--accent);text-decoration:none} a:hover{text-decoration:underline}
table{border-collapse:collapse;width:100%;font-size:.93em}
.scroll{overflow-x:auto} table.queues{min-width:52rem} table.queues code{word-break:normal} table.tasks{min-width:62rem} td.call{min-width:16rem}
th,td{padding:.35rem .55rem;border-bottom:1px solid var(--line);text-align:left;vertical-align:top}
th{font-weight:600;color:var(--mute);font-size:.85em;text-transform:uppercase;letter-spacing:.03em}
tbody tr:nth-child(even){background:var(--alt)}
td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}
code{font:.92em/1.35 ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;word-break:break-all}
.call code.args{color:var(--mute)}
.state{display:inline-block;padding:0 .45rem;border-radius:.7rem;font-size:.82em;border:1px solid currentColor}
.s-queued{color:var(--accent)} .s-scheduled{color:var(--mute)} .s-running{color:var(--warn)}
.s-failed{color:var(--warn)} .s-dead{color:var(--bad)} .s-done{color:var(--ok)}
.note{padding:.55rem .8rem;border-radius:.3rem;margin:.8rem 0;border-left:4px solid var(--ok);background:var(--alt)}
.note.error{border-left-color:var(--bad)}
.limits{color:var(--mute);max-width:60rem}
nav.views{display:flex;gap:.25rem;flex-wrap:wrap;margin:.4rem 0 .6rem}
nav.views a{padding:.2rem .65rem;border:1px solid var(--line);border-radius:1rem}
nav.views a.on{background:var(--accent);border-color:var(--accent);color:var(--bg)}
form.act{display:inline;margin:0}
button{font:inherit;font-size:.85em;padding:.15rem .55rem;border:1px solid var(--line);border-radius:.25rem;
background:var(--bg);color:var(--fg);cursor:pointer}
button:hover{border-color:var(--accent)} button.danger{color:var(--bad)}
details summary{cursor:pointer} pre{white-space:pre-wrap;font-size:.85em;max-height:20rem;overflow:auto;
background:var(--alt);padding:.5rem;margin:.3rem 0}
td.actions{white-space:nowrap} td.actions form+form{margin-left:.25rem}
.err{color:var(--bad)} .muted{color:var(--mute)} .pager{margin-top:.8rem;display:flex;gap:1rem}
input[type=text]{font:inherit;padding:.15rem .4rem;border:1px solid var(--line);border-radius:.25rem;
background:var(--bg);color:var(--fg)}
"""
_STYLE_HASH = base64.b64encode(hashlib.sha256(STYLE.encode()).digest()).decode()
_HEADERS = [
    ("Cache-Control", "no-store"),
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "DENY"),
    ("Referrer-Policy", "same-origin"),
    (
        "Content-Security-Policy",
        f"default-src 'none'; style-src 'sha256-{_STYLE_HASH}'; img-src data:; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    ),
]
_VIEW_LABELS = {
    "queued": "Queued",
    "scheduled": "Scheduled",
    "running": "Running",
    "failed": "Failed",
    "dead": "Dead",
    "done": "Done",
}
# which buttons each view of task gets (if the backend does the action)
_ROW_ACTIONS = {
    "queued": ("run", "delete"),
    "scheduled": ("run", "delete"),
    "failed": ("run", "retry", "delete"),
    "running": ("delete",),
    "dead": ("retry", "delete"),
    "done": ("delete",),
}
_BUTTONS = {"run": "Run now", "retry": "Retry", "delete": "Delete"}


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


class _Refusal(Exception):
    def __init__(self, status: str, message: str, headers: Sequence[tuple[str, str]] = ()) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = list(headers)


class TaskAdminApp:
    """The admin page's WSGI application.

    ``services``: whose queue to show (the process default if None).
    ``is_admin``: the application's admin check (see the module docstring).
    ``basic_auth``: ``"user:password"``; by default ``GAESERVICES_ADMIN_BASIC_AUTH``
    from the Services' environment; None turns Basic off.
    ``queue_names``: queues to show where the backend cannot list them (App Engine).
    ``page_size``: tasks per page. ``clock``: seconds since the epoch (tests).
    """

    def __init__(
        self,
        services: Services | None = None,
        *,
        is_admin: AdminCheck | None = None,
        basic_auth: str | None = _FROM_ENVIRON,
        queue_names: Sequence[str] = (),
        page_size: int = 50,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.services = services or get_services()
        if is_admin is not None and not callable(is_admin):
            raise ConfigurationError("is_admin must be a callable taking the WSGI environ")
        self.is_admin = is_admin
        if basic_auth is _FROM_ENVIRON:
            basic_auth = self.services.environ.get(BASIC_AUTH_VARIABLE) or None
            source = BASIC_AUTH_VARIABLE
        else:
            source = "basic_auth"
        self._basic: tuple[str, bytes] | None = _basic_credentials(basic_auth, source) if basic_auth else None
        self.queue_names = tuple(queue_names)
        self.page_size = max(1, int(page_size))
        self.clock = clock
        self._csrf = self.services.signer("gaeservices.tasks.admin.csrf", timestamped=True)
        self._notes = self.services.signer("gaeservices.tasks.admin.note", timestamped=True)
        self._inspector: Inspector | None = None

    @property
    def inspector(self) -> Inspector:
        if self._inspector is None:
            self._inspector = inspector_for(self.services, queue_names=self.queue_names)
        return self._inspector

    # -- WSGI --------------------------------------------------------------------

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        try:
            user = self._authorize(environ)
            method = environ.get("REQUEST_METHOD", "GET")
            path = environ.get("PATH_INFO") or "/"
            if path not in ("/", "/purge"):
                raise _Refusal("404 Not Found", "No such page.")
            if method == "POST" and path == "/":
                return self._post(environ, start_response)
            if method not in ("GET", "HEAD"):
                raise _Refusal("405 Method Not Allowed", "GET or POST only.", [("Allow", "GET, HEAD, POST")])
            cookie, new_cookie = self._csrf_cookie(environ)
            token = self._csrf_token(cookie)
            if path == "/purge":
                body = self._purge_page(environ, token, user)
            else:
                body = self._overview(environ, token, user)
            headers = [("Set-Cookie", self._cookie_header(environ, cookie))] if new_cookie else []
            return self._send(start_response, "200 OK", body, headers, head=method == "HEAD")
        except _Refusal as refusal:
            body = _page("Task admin", f"<p class='note error'>{_e(refusal.message)}</p>", "")
            return self._send(start_response, refusal.status, body, refusal.headers)

    def _send(
        self, start_response: Callable[..., Any], status: str, body: str, headers: list[tuple[str, str]],
        *, head: bool = False,
    ) -> list[bytes]:
        data = body.encode("utf-8")
        start_response(status, [
            ("Content-Type", "text/html; charset=utf-8"), ("Content-Length", str(len(data))), *_HEADERS, *headers,
        ])
        return [] if head else [data]

    # -- who may ---------------------------------------------------------------------

    def _authorize(self, environ: dict[str, Any]) -> str:
        """The admin's name (for the page), or _Refusal."""
        checks = [c for c in (self.is_admin, environ.get(ADMIN_ENVIRON_KEY)) if c is not None]
        for check in checks:
            if not callable(check):
                raise _Refusal(
                    "500 Internal Server Error",
                    f"environ[{ADMIN_ENVIRON_KEY!r}] must be a callable taking the WSGI environ.",
                )
            if check(environ) is True:
                return str(environ.get("REMOTE_USER") or "admin")
        if self._basic is not None:
            user = self._basic_user(environ)
            if user is not None:
                return user
            raise _Refusal(
                "401 Unauthorized", "This page needs the task admin's credentials.",
                [("WWW-Authenticate", f'Basic realm="{_REALM}", charset="UTF-8"')],
            )
        if checks:
            raise _Refusal("403 Forbidden", "Only administrators may see the task admin page.")
        raise _Refusal(
            "403 Forbidden",
            "The task admin page is closed: no admin check is configured. Give TaskAdminApp an "
            f"is_admin=callable(environ), put one in environ[{ADMIN_ENVIRON_KEY!r}] from a "
            f"middleware, or set {BASIC_AUTH_VARIABLE}=user:password (a password of at least "
            f"{MIN_PASSWORD_LENGTH} characters) and use HTTPS.",
        )

    def _basic_user(self, environ: dict[str, Any]) -> str | None:
        assert self._basic is not None
        scheme, _, encoded = (environ.get("HTTP_AUTHORIZATION") or "").strip().partition(" ")
        if scheme.lower() != "basic" or not encoded:
            return None
        try:
            given = base64.b64decode(encoded.strip(), validate=True)
        except (binascii.Error, ValueError):
            return None
        # digests, so that neither the length nor the content is learnt from timing
        if hmac.compare_digest(hashlib.sha256(given).digest(), self._basic[1]):
            return self._basic[0]
        return None

    # -- CSRF ------------------------------------------------------------------------

    def _csrf_cookie(self, environ: dict[str, Any]) -> tuple[str, bool]:
        """This browser's CSRF cookie, and whether it is new (to be set)."""
        value = _cookie(environ, CSRF_COOKIE)
        if value is not None and _COOKIE_VALUE.match(value):
            return value, False
        return secrets.token_urlsafe(32), True

    def _cookie_header(self, environ: dict[str, Any], value: str) -> str:
        path = environ.get("SCRIPT_NAME") or "/"
        secure = "; Secure" if environ.get("wsgi.url_scheme") == "https" else ""
        return f"{CSRF_COOKIE}={value}; Path={quote(path)}; HttpOnly; SameSite=Strict{secure}"

    @staticmethod
    def _binding(cookie: str) -> str:
        return hashlib.sha256(b"gaeservices.tasks.admin:" + cookie.encode()).hexdigest()[:32]

    def _csrf_token(self, cookie: str) -> str:
        return self._csrf.sign(self._binding(cookie)).decode()

    def _check_csrf(self, environ: dict[str, Any], token: str) -> None:
        from itsdangerous import BadSignature

        if environ.get("HTTP_SEC_FETCH_SITE", "").lower() == "cross-site":
            raise _Refusal("403 Forbidden", "Refused: the request came from another site.")
        cookie = _cookie(environ, CSRF_COOKIE)
        if not token or cookie is None or not _COOKIE_VALUE.match(cookie):
            raise _Refusal(
                "403 Forbidden", "Refused: the form's CSRF token or its cookie is missing. Reload the page and retry."
            )
        try:
            bound = self._csrf.unsign(token, max_age=CSRF_MAX_AGE).decode()
        except BadSignature:
            raise _Refusal(
                "403 Forbidden", "Refused: the CSRF token does not verify or has expired. Reload the page and retry."
            ) from None
        if not hmac.compare_digest(bound, self._binding(cookie)):
            raise _Refusal("403 Forbidden", "Refused: the CSRF token belongs to another browser. Reload the page.")

    # -- actions ----------------------------------------------------------------------

    def _post(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        form = _form(environ)
        self._check_csrf(environ, form.get("csrf", ""))
        action, name, queue = form.get("action", ""), form.get("name", "").strip(), form.get("queue", "")
        inspector = self.inspector
        error = False
        try:
            if action not in ("run", "retry", "delete", "purge"):
                raise _Refusal("400 Bad Request", "Unknown action.")
            if action != "purge" and not name:
                raise _Refusal("400 Bad Request", "Which task? The form names none.")
            if action not in inspector.actions:
                raise UnsupportedActionError(inspector.limits or f"{inspector.backend} cannot {action} tasks.")
            if action == "run":
                result = inspector.run(name)
                if result is None:
                    text, error = f"Task {name} did not run: it is not waiting (finished, dead, gone) or a worker holds it.", True
                elif result.outcome == "success":
                    text = f"Task {name} ran: done."
                else:
                    last = (result.error or f"HTTP {result.status}").strip().splitlines()
                    text, error = f"Task {name} ran and failed ({result.outcome}): {last[-1] if last else ''}", True
            elif action == "retry":
                if inspector.retry(name):
                    text = f"Task {name} is due now."
                else:
                    text, error = f"Task {name} cannot be retried: it is not failed or dead, a worker holds it, or it is gone.", True
            elif action == "delete":
                if inspector.delete(name):
                    text = f"Task {name} deleted."
                else:
                    text, error = f"Task {name} was not found.", True
            else:
                if not queue:
                    raise _Refusal("400 Bad Request", "Which queue? The form names none.")
                count = inspector.purge(queue)
                text = f"Queue {queue} purged" + (f": {count} task(s) deleted." if count >= 0 else ".")
        except UnsupportedActionError as exc:
            text, error = str(exc), True
        back = {k: form[k] for k in ("view", "page") if form.get(k)}
        if form.get("filter"):
            back["queue"] = form["filter"]
        back["note"] = self._notes.sign(json.dumps([text[:500], error]).encode()).decode()
        location = (environ.get("SCRIPT_NAME") or "") + "/?" + urlencode(back)
        start_response("303 See Other", [
            ("Location", location), ("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", "0"),
            *_HEADERS,
        ])
        return []

    def _note(self, value: str) -> tuple[str, bool] | None:
        from itsdangerous import BadSignature

        if not value:
            return None
        try:
            text, error = json.loads(self._notes.unsign(value, max_age=NOTE_MAX_AGE))
        except (BadSignature, ValueError, TypeError):
            return None
        return str(text), bool(error)

    # -- pages ------------------------------------------------------------------------

    def _overview(self, environ: dict[str, Any], token: str, user: str) -> str:
        query = _query(environ)
        inspector = self.inspector
        queue_filter = query.get("queue") or None
        view = query.get("view") or None
        if view not in VIEWS:
            view = None
        try:
            page_number = max(1, min(10_000, int(query.get("page") or 1)))
        except ValueError:
            page_number = 1
        base = environ.get("SCRIPT_NAME") or ""
        now = self.clock()
        parts = []
        note = self._note(query.get("note", ""))
        if note:
            parts.append(f"<p class='note{' error' if note[1] else ''}' role='status'>{_e(note[0])}</p>")

        queues = inspector.queues()
        parts.append(self._queue_table(queues, base, now))
        if inspector.limits:
            parts.append(f"<p class='limits'>{_e(inspector.limits)}</p>")

        if "list" in inspector.actions:
            parts.append(self._task_section(inspector, queues, base, token, queue_filter, view, page_number, now))
        elif "delete" in inspector.actions:
            parts.append(
                "<h2>Delete a task by name</h2>"
                f"<form class='act' method='post' action='{_e(base)}/'>"
                f"<input type='hidden' name='csrf' value='{_e(token)}'>"
                "<input type='hidden' name='action' value='delete'>"
                "<input type='text' name='name' size='40' aria-label='task name' required> "
                "<button class='danger'>Delete</button></form>"
            )
        return _page("Task queues", "".join(parts), self._header(inspector, user))

    def _header(self, inspector: Inspector, user: str) -> str:
        return (
            "<header><h1>Task queues</h1>"
            f"<span class='meta'>{_e(inspector.backend)}</span>"
            f"<span class='meta'>signed in as {_e(user)}</span></header>"
        )

    def _queue_table(self, queues: list[QueueRow], base: str, now: float) -> str:
        if not queues:
            return "<h2>Queues</h2><p class='muted'>No queue holds a task.</p>"
        purge = "purge" in self.inspector.actions
        head = (
            "<tr><th>Queue</th><th class='n'>Depth</th><th class='n'>Queued</th><th class='n'>Scheduled</th>"
            "<th class='n'>Running</th><th class='n'>Failed</th><th class='n'>Dead</th>"
            "<th class='n'>Done 1 min / 1 h</th><th>Oldest queued</th><th>Rate</th><th></th></tr>"
        )
        rows = []
        for q in queues:
            def cell(view: str, value: Any) -> str:
                if value is None:
                    return "<td class='n muted'>–</td>"
                if "list" in self.inspector.actions and value:
                    href = _href(base, queue=q.name, view=view)
                    return f"<td class='n'><a href='{href}'>{_e(value)}</a></td>"
                return f"<td class='n'>{_e(value)}</td>"

            done = (
                f"{_e(q.done_last_minute)} / {_e(q.done_last_hour)}"
                if q.done_last_hour is not None else _e(q.done_last_minute if q.done_last_minute is not None else "–")
            )
            action = (
                f"<a href='{_href(base, 'purge', queue=q.name)}' class='err'>Purge…</a>" if purge else ""
            )
            name = (
                f"<a href='{_href(base, queue=q.name)}'>{_e(q.name)}</a>"
                if "list" in self.inspector.actions else _e(q.name)
            )
            rows.append(
                f"<tr><td><code>{name}</code></td>"
                f"<td class='n'><strong>{_e(q.depth if q.depth is not None else '–')}</strong></td>"
                + cell("queued", q.queued) + cell("scheduled", q.scheduled) + cell("running", q.running)
                + cell("failed", q.failed) + cell("dead", q.dead)
                + f"<td class='n'>{done}</td><td>{_time(q.oldest_queued, now)}</td>"
                f"<td>{_e(q.rate) if q.rate else '<span class=muted>–</span>'}</td><td>{action}</td></tr>"
            )
        return (
            f"<h2>Queues</h2><div class='scroll'><table class='queues'><thead>{head}</thead>"
            f"<tbody>{''.join(rows)}</tbody></table></div>"
        )

    def _task_section(
        self, inspector: Inspector, queues: list[QueueRow], base: str, token: str,
        queue_filter: str | None, view: str | None, page_number: int, now: float,
    ) -> str:
        shown = [q for q in queues if queue_filter in (None, q.name)]
        totals = {v: sum(getattr(q, v) or 0 for q in shown) for v in VIEWS}
        tabs = [f"<a href='{_href(base, queue=queue_filter)}' class='{'on' if view is None else ''}'>All</a>"]
        for v in inspector.views:
            tabs.append(
                f"<a href='{_href(base, queue=queue_filter, view=v)}' class='{'on' if view == v else ''}'>"
                f"{_VIEW_LABELS[v]} {totals[v]}</a>"
            )
        title = "Tasks" + (f" of <code>{_e(queue_filter)}</code>" if queue_filter else "")
        offset = (page_number - 1) * self.page_size
        rows = inspector.tasks(queue=queue_filter, view=view, limit=self.page_size + 1, offset=offset)
        more = len(rows) > self.page_size
        rows = rows[: self.page_size]
        context = {"filter": queue_filter or "", "view": view or "", "page": str(page_number)}
        if rows:
            body = "".join(self._task_row(r, base, token, context, now) for r in rows)
            table = (
                "<div class='scroll'><table class='tasks'><thead><tr><th>Task</th><th>State</th><th>Call</th>"
                "<th class='n'>Attempts</th><th>ETA</th><th>Last error</th><th>Actions</th></tr></thead>"
                f"<tbody>{body}</tbody></table></div>"
            )
        else:
            table = "<p class='muted'>No tasks here.</p>"
        pager = []
        if page_number > 1:
            pager.append(f"<a href='{_href(base, queue=queue_filter, view=view, page=page_number - 1)}'>« newer</a>")
        if more:
            pager.append(f"<a href='{_href(base, queue=queue_filter, view=view, page=page_number + 1)}'>older »</a>")
        return (
            f"<h2>{title}</h2><nav class='views'>{''.join(tabs)}</nav>{table}"
            + (f"<p class='pager'>{''.join(pager)}</p>" if pager else "")
        )

    def _task_row(self, row: TaskRow, base: str, token: str, context: dict[str, str], now: float) -> str:
        call = row.call
        if call.problem:
            described = f"<span class='muted'>{_e(call.problem)}</span>"
        else:
            described = f"<code>{_e(call.callable)}</code>(<code class='args'>{_e(call.arguments)}</code>)"
        error = ""
        if row.last_error:
            lines = row.last_error.strip().splitlines() or [""]
            last = lines[-1][:200]
            full = row.last_error[-4000:]
            error = (
                f"<details><summary class='err'>{_e(last)}</summary><pre>{_e(full)}</pre></details>"
                if len(lines) > 1 or len(lines[-1]) > 200 else f"<span class='err'>{_e(last)}</span>"
            )
        when = _time(row.eta, now) if row.eta is not None else (
            f"<span class='muted'>finished {_time(row.finished, now)}</span>" if row.finished else "")
        buttons = []
        for action in _ROW_ACTIONS.get(row.view, ()):
            if action not in self.inspector.actions:
                continue
            hidden = "".join(
                f"<input type='hidden' name='{k}' value='{_e(v)}'>"
                for k, v in ({"csrf": token, "action": action, "name": row.name} | context).items() if v
            )
            css = " class='danger'" if action == "delete" else ""
            buttons.append(
                f"<form class='act' method='post' action='{_e(base)}/'>{hidden}"
                f"<button{css}>{_BUTTONS[action]}</button></form>"
            )
        return (
            f"<tr id='task-{_e(row.name)}'><td><code>{_e(row.name)}</code><br>"
            f"<span class='muted'>{_e(row.queue)}</span></td>"
            f"<td><span class='state s-{_e(row.view)}'>{_e(row.view)}</span></td>"
            f"<td class='call'>{described}</td>"
            f"<td class='n'>{_e(row.attempts if row.attempts is not None else '–')}</td>"
            f"<td>{when}</td><td>{error}</td><td class='actions'>{''.join(buttons)}</td></tr>"
        )

    def _purge_page(self, environ: dict[str, Any], token: str, user: str) -> str:
        inspector = self.inspector
        queue = _query(environ).get("queue", "")
        base = environ.get("SCRIPT_NAME") or ""
        if "purge" not in inspector.actions:
            raise _Refusal("403 Forbidden", inspector.limits or f"{inspector.backend} cannot purge queues.")
        found = {q.name: q for q in inspector.queues()}
        if queue not in found:
            raise _Refusal("404 Not Found", f"No queue named {queue!r} is shown here.")
        depth, dead = found[queue].depth, found[queue].dead
        counted = f"{depth} unfinished" + (f" and {dead} dead" if dead is not None else "") + " task(s)"
        body = (
            f"<h2>Purge queue <code>{_e(queue)}</code>?</h2>"
            f"<p>This deletes its {_e(counted)} and their payloads. Finished tasks' tombstones stay, "
            "so their names stay taken. A task running now finishes, but is not run again.</p>"
            f"<form class='act' method='post' action='{_e(base)}/'>"
            f"<input type='hidden' name='csrf' value='{_e(token)}'>"
            "<input type='hidden' name='action' value='purge'>"
            f"<input type='hidden' name='queue' value='{_e(queue)}'>"
            f"<button class='danger'>Purge {_e(queue)}</button></form> "
            f"<a href='{_href(base)}'>Cancel</a>"
        )
        return _page("Purge queue", body, self._header(inspector, user))


# --- helpers -------------------------------------------------------------------------


def _basic_credentials(value: str, source: str) -> tuple[str, bytes]:
    user, sep, password = value.partition(":")
    if not sep or not user or not password:
        raise ConfigurationError(f"{source} must be user:password")
    if len(password) < MIN_PASSWORD_LENGTH:
        raise ConfigurationError(
            f"{source}: the password is shorter than {MIN_PASSWORD_LENGTH} characters; make one with "
            "python -c 'import secrets; print(secrets.token_urlsafe(24))'"
        )
    return user, hashlib.sha256(value.encode("utf-8")).digest()


def _cookie(environ: dict[str, Any], name: str) -> str | None:
    from http.cookies import CookieError, SimpleCookie

    header = environ.get("HTTP_COOKIE")
    if not header or name not in header:
        return None
    jar: SimpleCookie = SimpleCookie()
    try:
        jar.load(header)
    except CookieError:
        return None
    morsel = jar.get(name)
    return morsel.value if morsel is not None else None


def _query(environ: dict[str, Any]) -> dict[str, str]:
    from urllib.parse import parse_qsl

    return dict(parse_qsl(environ.get("QUERY_STRING", ""), keep_blank_values=True)[:20])


def _form(environ: dict[str, Any]) -> dict[str, str]:
    from urllib.parse import parse_qsl

    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        raise _Refusal("400 Bad Request", "Malformed Content-Length.") from None
    if length < 0:
        raise _Refusal("400 Bad Request", "Malformed Content-Length.")
    if length > MAX_FORM:
        raise _Refusal("413 Content Too Large", "The form is too large.")
    content_type = (environ.get("CONTENT_TYPE") or "").split(";")[0].strip().lower()
    if content_type not in ("application/x-www-form-urlencoded", ""):
        raise _Refusal("415 Unsupported Media Type", "Post the page's own forms.")
    data = environ["wsgi.input"].read(length) if length else b""
    return dict(parse_qsl(data.decode("utf-8", "replace"), keep_blank_values=True)[:20])


def _href(base: str, path: str = "", **params: Any) -> str:
    query = urlencode({k: v for k, v in params.items() if v not in (None, "")})
    return _e(f"{quote(base)}/{path}" + (f"?{query}" if query else ""))


def _time(seconds: float | None, now: float) -> str:
    if seconds is None:
        return "<span class='muted'>–</span>"
    moment = datetime.fromtimestamp(seconds, timezone.utc)
    delta = seconds - now
    span = abs(delta)
    if span < 1:
        relative = "now"
    else:
        for unit, size in (("d", 86400), ("h", 3600), ("min", 60), ("s", 1)):
            if span >= size:
                amount = f"{span / size:.0f} {unit}"
                break
        relative = f"in {amount}" if delta > 0 else f"{amount} ago"
    return (
        f"<time datetime='{_e(moment.isoformat())}' title='{_e(moment.strftime('%Y-%m-%d %H:%M:%S UTC'))}'>"
        f"{_e(relative)}</time>"
    )


def _page(title: str, body: str, header: str) -> str:
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        "<link rel='icon' href='data:,'>"
        f"<title>{_e(title)} · gaeservices</title><style>{STYLE}</style></head>"
        f"<body>{header}{body}</body></html>"
    )
