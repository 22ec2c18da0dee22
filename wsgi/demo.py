"""The demo for any WSGI server, from a checkout: ``gunicorn wsgi.demo:application``.

The application lives in the package, ``gaeservices.wsgi.demo``.
"""

from gaeservices.wsgi.demo import application

__all__ = ["application"]
