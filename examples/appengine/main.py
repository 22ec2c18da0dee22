"""The App Engine entry point: ``gunicorn -b :$PORT main:application`` (app.yaml).

``/_ah/queue/deferred`` goes to ``gaeservices.wsgi.deferred:application`` (a
DeferredApp), which runs the tasks the task queue pushes; everything else goes
to the site, in ``SessionMiddleware``. ``wrap_wsgi_app`` gives every request the
bundled services' context. On App Engine (``GAE_ENV=standard``) the backends are
the App Engine ones: memcache, Datastore, the task queue and the mail service.
"""

from __future__ import annotations

import html
import os

from google.appengine.api import users, wrap_wsgi_app

from gaeservices import SessionMiddleware, get_services, send_mail
from gaeservices.wsgi.deferred import application as deferred


def setup() -> None:
    """Run once per instance before its first task (GAESERVICES_BOOTSTRAP=main:setup):
    import or configure what your tasks need here."""


def sender() -> str:
    """An address App Engine lets this application send from."""
    project = os.environ.get("GOOGLE_CLOUD_PROJECT") or os.environ.get("GAE_APPLICATION", "").split("~")[-1]
    return f"noreply@{project}.appspotmail.com"


def site(environ, start_response):
    session = environ["gaeservices.session"]
    if environ.get("PATH_INFO") == "/mail" and environ["REQUEST_METHOD"] == "POST":
        user = users.get_current_user()  # app.yaml's `login: required` has signed the visitor in
        if user is None:  # only where app.yaml's handlers are not enforced (a local server)
            start_response("403 Forbidden", [("Content-Type", "text/plain")])
            return [b"sign in first\n"]
        # Queued on EMAIL_QUEUE_NAME ("mail"), sent by the task queue through /_ah/queue/deferred.
        send_mail(sender(), [user.email()], "Hello from gaeservices",
                  "This message was queued by send_mail() and sent by a deferred task.\n")
        session["mailed"] = user.email()
        start_response("303 See Other", [("Location", "/")])
        return [b""]
    hits = get_services().cache.incr("example:hits", 1, default=0)  # memcache, atomic
    session["visits"] = session.get("visits", 0) + 1  # Datastore, with memcache in front
    mailed = session.get("mailed")
    body = (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'><title>gaeservices on App Engine</title>"
        f"</head><body><h1>gaeservices on App Engine</h1><p>Hits (memcache): <span id='hits'>{hits}</span>. "
        f"Your visits (session): <span id='visits'>{session['visits']}</span>.</p>"
        "<form method='post' action='/mail'><button>Send me a mail</button></form>"
        + (f"<p id='mailed'>A mail to {html.escape(mailed)} is queued.</p>" if mailed else "")
        + "</body></html>"
    )
    start_response("200 OK", [("Content-Type", "text/html; charset=utf-8")])
    return [body.encode()]


site_with_sessions = SessionMiddleware(site)


def route(environ, start_response):
    if environ.get("PATH_INFO") == "/_ah/queue/deferred":
        return deferred(environ, start_response)
    return site_with_sessions(environ, start_response)


application = wrap_wsgi_app(route)  # the bundled services' request context
