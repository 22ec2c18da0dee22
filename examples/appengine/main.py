"""The App Engine entry point: the application, with the deferred endpoint mounted.

``/_ah/queue/deferred`` goes to ``gaeservices.wsgi.deferred:application`` (a
DeferredApp); everything else to the application. app.yaml restricts the endpoint
to admins and the task queue.
"""

from google.appengine.api import wrap_wsgi_app

from gaeservices.wsgi.deferred import application as deferred


def setup():
    """Run once per instance before its first task (GAESERVICES_BOOTSTRAP)."""


def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"hello from App Engine\n"]


def application(environ, start_response):
    if environ.get("PATH_INFO") == "/_ah/queue/deferred":
        return deferred(environ, start_response)
    return app(environ, start_response)


application = wrap_wsgi_app(application)  # the bundled services' request context
