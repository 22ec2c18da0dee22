"""The demo application: one page per service, on whatever backends are configured.

Each page is a module of this package listed in ``PAGES``. A page module defines:

- ``PREFIX`` (where it is mounted) and ``TITLE`` (its link on the index page);
- ``make_app(services)`` returning the page's WSGI application;
- optionally ``wrap(app, services)``, a middleware put around the *whole* demo
  (the sessions page uses it to install SessionMiddleware);
- optionally ``start(services, options)``, background work started by the server
  (the tasks page starts a dispatcher thread there), and ``add_arguments(parser)``.
"""

from __future__ import annotations

import html
import importlib
from collections.abc import Callable, Iterable
from typing import Any

from gaeservices.config import Services, get_services

PAGES = ["counter", "files", "tasks", "admin", "sessions"]

STYLE = """
body{font-family:system-ui,sans-serif;max-width:46rem;margin:2rem auto;padding:0 1rem;color:#222}
h1 a{color:inherit;text-decoration:none} nav a{margin-right:1rem}
form{display:inline} button{margin:.2rem 0} table{border-collapse:collapse}
td,th{padding:.2rem .6rem;border-bottom:1px solid #ddd;text-align:left}
.note{color:#666;font-size:.9em}
"""


def page(title: str, body: str) -> bytes:
    """A complete HTML page; ``body`` is trusted HTML built by the caller."""
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)} - gaeservices demo</title><style>{STYLE}</style></head>"
        f"<body><h1><a href='/'>gaeservices demo</a></h1><h2>{html.escape(title)}</h2>{body}"
        "</body></html>"
    ).encode()


def load_pages() -> list[Any]:
    return [importlib.import_module(f"{__package__}.{name}") for name in PAGES]


class Router:
    """Dispatch by path prefix, moving the prefix from PATH_INFO to SCRIPT_NAME."""

    def __init__(self, mounts: Iterable[tuple[str, str, Callable[..., Any]]]) -> None:
        self.mounts = sorted(mounts, key=lambda m: len(m[0]), reverse=True)

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "") or "/"
        if path == "/":
            return self.index(start_response)
        for prefix, _, app in self.mounts:
            if path == prefix or path.startswith(prefix + "/"):
                environ["SCRIPT_NAME"] = environ.get("SCRIPT_NAME", "") + prefix
                environ["PATH_INFO"] = path[len(prefix):] or "/"
                return app(environ, start_response)
        start_response("404 Not Found", [("Content-Type", "text/plain; charset=utf-8")])
        return [b"not found\n"]

    def index(self, start_response: Callable[..., Any]) -> Iterable[bytes]:
        links = "".join(
            f"<li><a href='{html.escape(prefix)}/'>{html.escape(title)}</a></li>"
            for prefix, title, _ in sorted(self.mounts)
        )
        start_response("200 OK", [("Content-Type", "text/html; charset=utf-8")])
        return [page("Services", f"<ul>{links}</ul>")]


def make_app(services: Services | None = None) -> Callable[..., Any]:
    services = services or get_services()
    pages = load_pages()
    app: Callable[..., Any] = Router((p.PREFIX, p.TITLE, p.make_app(services)) for p in pages)
    for p in pages:
        wrap = getattr(p, "wrap", None)
        if wrap is not None:
            app = wrap(app, services)
    return app
