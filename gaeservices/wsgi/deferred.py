"""The deferred-task endpoint for deployment: ``gaeservices.wsgi.deferred:application``.

On App Engine, route ``/_ah/queue/deferred`` here in app.yaml with ``login: admin``
(see examples/appengine/app.yaml). Elsewhere, serve it as the entry point of a
worker service that ``gaeservices worker --push-to URL`` POSTs tasks to.

Configuration comes from the environment (``GAESERVICES_*``). The application's
bootstrap (``GAESERVICES_BOOTSTRAP`` or ``django.setup()``) runs once per process
before the first task, not here, so a failing bootstrap is retried rather than
crashing the server at start-up.
"""

from gaeservices.tasks.endpoint import DeferredApp

application = DeferredApp()
