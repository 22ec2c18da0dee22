"""Ready-made WSGI applications to point a server at.

- ``gaeservices.wsgi.deferred:application`` — the deferred-task endpoint, mounted at
  ``/_ah/queue/deferred``;
- ``gaeservices.wsgi.demo:application`` — the demo, for any WSGI server
  (``gunicorn gaeservices.wsgi.demo:application``).

Each module builds its application from the environment (``GAESERVICES_*``) when it
is imported.
"""
