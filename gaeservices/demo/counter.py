"""A cache-backed hit counter: ``incr`` is atomic on every cache backend."""

from __future__ import annotations

import html
from collections.abc import Iterable
from typing import TYPE_CHECKING

from gaeservices.config import Services

from .app import page

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

PREFIX = "/counter"
TITLE = "Cache: a hit counter"


def make_app(services: Services) -> WSGIApplication:
    def counter(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        cache = services.cache
        if environ["REQUEST_METHOD"] == "POST":
            cache.delete("demo:hits")
            start_response("303 See Other", [("Location", environ.get("SCRIPT_NAME", "") + "/")])
            return [b""]
        hits = cache.incr("demo:hits", 1, default=0)
        body = (
            f"<p>This page was seen <strong id='hits'>{hits}</strong> times "
            f"(cache: <code>{html.escape(type(cache).__name__)}</code>).</p>"
            "<form method='post'><button>Reset</button></form>"
        )
        start_response("200 OK", [("Content-Type", "text/html; charset=utf-8")])
        return [page(TITLE, body)]

    return counter
