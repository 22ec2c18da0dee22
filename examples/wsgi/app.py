"""A guestbook in bare WSGI on gaeservices, for gunicorn or any WSGI server.

- ``SessionMiddleware`` keeps each visitor's visit count and name. The cookie
  holds only a signed id; the data is in the store (with the cache in front), so
  every worker process of the server sees the same session.
- The guestbook is one list in the durable store, changed with ``store.update``:
  one transaction per signature, so signatures sent at the same moment to
  different processes are all kept.

Run it (from this directory) with ``gunicorn --workers 2 app:application``; the
``GAESERVICES_*`` variables choose the backends (embedded defaults: SQLite under
``./.gaeservices``).
"""

from __future__ import annotations

import html
import json
import os

from webob import Request, Response

from gaeservices import SessionMiddleware, get_services

GUESTBOOK = "example:guestbook"
KEPT = 50


def sign(name: str, message: str) -> None:
    entry = {"name": name, "message": message}

    def prepend(current: bytes | None) -> bytes:
        return json.dumps([entry, *json.loads(current or b"[]")][:KEPT]).encode()

    get_services().store.update(GUESTBOOK, prepend)


def entries() -> list[dict[str, str]]:
    return json.loads(get_services().store.get(GUESTBOOK) or b"[]")


def guestbook(environ, start_response):
    request = Request(environ)
    session = environ["gaeservices.session"]
    if request.path_info != "/":
        return Response("not found\n", status=404, content_type="text/plain")(environ, start_response)
    if request.method == "POST":
        name = request.POST.get("name", "").strip()[:40] or "anonymous"
        message = request.POST.get("message", "").strip()[:500]
        if message:
            sign(name, message)
        session["name"] = name
        return Response(status=303, location=request.application_url + "/")(environ, start_response)

    session["visits"] = session.get("visits", 0) + 1
    name = session.get("name", "")
    rows = "".join(
        f"<li><strong>{html.escape(e['name'])}</strong>: {html.escape(e['message'])}</li>" for e in entries()
    )
    body = f"""<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Guestbook</title></head>
<body><h1>Guestbook</h1>
<p>Visit <strong id="visits">{session['visits']}</strong> in your session, answered by process
<code id="pid">{os.getpid()}</code>.</p>
<form method="post"><input name="name" placeholder="your name" value="{html.escape(name, quote=True)}">
<input name="message" placeholder="a message" required size="40"> <button>Sign</button></form>
<ul id="entries">{rows}</ul></body></html>"""
    return Response(body, content_type="text/html", charset="utf-8")(environ, start_response)


application = SessionMiddleware(guestbook)
