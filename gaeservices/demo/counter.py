"""A cache-backed hit counter: ``incr`` is atomic on every cache backend.

A cache that does not answer (memcached stopped or unreachable) makes ``incr``
return None; the page then says the cache is down instead of counting.
"""

from __future__ import annotations

import html
from collections.abc import Iterable
from typing import TYPE_CHECKING

from gaeservices.config import Services

from .app import page, unavailable

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

PREFIX = "/counter"
TITLE = "Cache: a hit counter"
KEY = "demo:hits"


def make_app(services: Services) -> WSGIApplication:
    def counter(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        cache = services.cache
        if environ["REQUEST_METHOD"] == "POST":
            cache.delete(KEY)
            start_response("303 See Other", [("Location", environ.get("SCRIPT_NAME", "") + "/")])
            return [b""]
        hits = cache.incr(KEY, 1, default=0)
        described = services.describe("cache")
        scope = (
            "<code>memory://</code> counts in this process only; point <code>GAESERVICES_CACHE</code> "
            "at memcached to share the count between processes and machines."
            if described.startswith("memory:") else "Every process using this cache shares the count."
        )
        backend = (
            f"<p class='note'>cache: <code>{html.escape(described)}</code> "
            f"({html.escape(type(cache).__name__)}). Every reload is one atomic <code>incr</code>: "
            f"any number of threads can count at once and no hit is lost. {scope}</p>"
        )
        if hits is None:
            body = unavailable("the count cannot be kept", services, "cache") + backend
            status = "503 Service Unavailable"
        else:
            body = (
                f"<p><span class='big' id='hits'>{hits}</span> "
                f"{'view' if hits == 1 else 'views'} of this page so far.</p>"
                "<form method='post'><button class='plain'>Reset</button></form>" + backend
            )
            status = "200 OK"
        start_response(status, [("Content-Type", "text/html; charset=utf-8"), ("Cache-Control", "no-store")])
        return [page(TITLE, body)]

    return counter
