"""The deferred-task endpoint of this repository's deployments: ``wsgi.deferred:application``.

The application itself lives in the package, ``gaeservices.wsgi.deferred``, so an
installed copy serves it too.
"""

from gaeservices.wsgi.deferred import application

__all__ = ["application"]
