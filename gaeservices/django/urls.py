"""The deferred-task endpoint inside a Django project's URLs.

.. code-block:: python

    urlpatterns = [
        path("", include("gaeservices.django.urls")),   # POST /_ah/queue/deferred
        ...
    ]

It is :class:`~gaeservices.tasks.endpoint.DeferredApp` (signature checked before
anything is unpickled, App Engine's outcome codes), answering through Django:
exempt from CSRF (task bodies are signed instead), the body read once from the
request's stream.
"""

from __future__ import annotations

import threading
from typing import Any

from django.http import HttpRequest, HttpResponse
from django.urls import path
from django.views.decorators.csrf import csrf_exempt

from ..tasks.api import DEFAULT_URL
from ..tasks.endpoint import DeferredApp
from .conf import services

__all__ = ["deferred", "urlpatterns"]

_app: DeferredApp | None = None
_lock = threading.Lock()


def _endpoint() -> DeferredApp:
    global _app
    if _app is None:
        with _lock:
            if _app is None:
                _app = DeferredApp(services())
    return _app


@csrf_exempt
def deferred(request: HttpRequest) -> HttpResponse:
    """Run one deferred task (the body App Engine's push queue or ``gaeservices worker --push-to`` POSTs)."""
    environ = dict(request.META)
    environ["wsgi.input"] = request  # a file-like reader of the body, however far read
    answer: dict[str, Any] = {}

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> None:
        answer["status"], answer["headers"] = status, headers

    body = b"".join(_endpoint()(environ, start_response))
    response = HttpResponse(body, status=int(answer["status"].split(" ", 1)[0]))
    for name, value in answer["headers"]:
        response[name] = value
    return response


urlpatterns = [path(DEFAULT_URL.lstrip("/"), deferred, name="gaeservices-deferred")]
