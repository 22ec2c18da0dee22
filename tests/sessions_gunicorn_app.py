"""A WSGI app for the multi-process session tests (tests/test_sessions_deployed.py).

Served by gunicorn from the tests folder, on the process-wide Services built from
the environment the test sets (GAESERVICES_*). Each response is JSON: the worker's
pid and what the session held.
"""

from __future__ import annotations

import json
import os

from gaeservices.sessions import SessionMiddleware


def app(environ, start_response):
    session = environ["gaeservices.session"]
    path = environ.get("PATH_INFO", "/")
    if path == "/count":
        session["n"] = session.get("n", 0) + 1
    elif path == "/login":
        session.cycle_key()
        session["user"] = environ.get("QUERY_STRING") or "user"
    elif path == "/logout":
        session.invalidate()
    body = {"pid": os.getpid(), "n": session.get("n"), "user": session.get("user"), "id": session.id}
    start_response("200 OK", [("Content-Type", "application/json")])
    return [json.dumps(body).encode()]


application = SessionMiddleware(app)
