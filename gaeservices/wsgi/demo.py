"""The demo application for any WSGI server: ``gunicorn gaeservices.wsgi.demo:application``.

Deferred tasks are not run by this module; run ``gaeservices worker`` beside it (or
use ``make demo``, whose server also runs a dispatcher thread).
"""

from gaeservices.demo.app import make_app

application = make_app()
