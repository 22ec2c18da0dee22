"""The demo application: one page per service, on whatever backends are configured.

Each page is a module of this package listed in ``PAGES`` (in the order of the
navigation bar). A page module defines:

- ``PREFIX`` (where it is mounted) and ``TITLE`` (its heading; the part before
  the colon names it in the navigation bar);
- ``make_app(services)`` returning the page's WSGI application;
- optionally ``wrap(app, services)``, a middleware put around the *whole* demo
  (the sessions page uses it to install SessionMiddleware);
- optionally ``start(services, options)``, background work started by the server
  (the tasks page starts a dispatcher thread there), and ``add_arguments(parser)``.

Pages share :func:`page` (the layout), :func:`remember` (a short list of recent
items kept in the store, safe under concurrent requests) and :func:`unavailable`
(what a page says when a backend does not answer). Every response gets the
headers of :data:`SECURITY_HEADERS`; HTML pages that set no Content Security
Policy of their own get :data:`CONTENT_SECURITY_POLICY`, which allows no script
at all: the demo is plain HTML forms.
"""

from __future__ import annotations

import base64
import hashlib
import html
import importlib
import json
from collections.abc import Callable, Iterable
from typing import Any

from gaeservices.config import Services, get_services

PAGES = ["counter", "sessions", "mail", "tasks", "files", "admin"]

STYLE = """
:root{color-scheme:light dark;--fg:#1d232a;--mute:#5f6b76;--line:#dde2e6;--bg:#fff;--alt:#f5f7f8;
--accent:#1f5fa8;--ok:#1e7a3c;--warn:#9a6200;--bad:#b3261e}
@media (prefers-color-scheme:dark){:root{--fg:#e4e8eb;--mute:#9aa5ae;--line:#333a40;--bg:#15191c;
--alt:#1c2125;--accent:#7fb2ec;--ok:#6cc28a;--warn:#e0b25c;--bad:#f08a80}}
*{box-sizing:border-box}
body{font:15px/1.5 system-ui,-apple-system,"Segoe UI",sans-serif;color:var(--fg);background:var(--bg);
margin:0 auto;padding:1rem 1.5rem 3rem;max-width:52rem}
header{display:flex;align-items:baseline;gap:.4rem 1.2rem;flex-wrap:wrap;border-bottom:1px solid var(--line);
padding-bottom:.6rem;margin-bottom:1.2rem}
header .brand{font-weight:700;font-size:1.1rem;color:var(--fg)}
header nav{display:flex;gap:.25rem;flex-wrap:wrap}
header nav a{padding:.1rem .6rem;border:1px solid var(--line);border-radius:1rem;font-size:.9em}
header nav a.on{background:var(--accent);border-color:var(--accent);color:var(--bg)}
h1{font-size:1.4rem;margin:.2rem 0 .8rem} h2{font-size:1.1rem;margin:1.6rem 0 .5rem}
a{color:var(--accent);text-decoration:none} a:hover{text-decoration:underline}
p{margin:.5rem 0}
table{border-collapse:collapse;width:100%;font-size:.93em;margin:.6rem 0}
th,td{padding:.35rem .55rem;border-bottom:1px solid var(--line);text-align:left;vertical-align:top}
th{font-weight:600;color:var(--mute);font-size:.85em;text-transform:uppercase;letter-spacing:.03em}
td.n,th.n{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
code{font:.92em/1.35 ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;word-break:break-word}
form{margin:.6rem 0} form.inline{display:inline;margin:0}
label{display:block;margin:.35rem 0} label.choice{display:inline-block;margin:.2rem 1rem .2rem 0}
input[type=text],input[type=password],input[type=email],input:not([type]),textarea{font:inherit;padding:.25rem .45rem;
border:1px solid var(--line);border-radius:.25rem;background:var(--bg);color:var(--fg);max-width:100%}
textarea{width:100%}
button{font:inherit;padding:.25rem .8rem;border:1px solid var(--accent);border-radius:.25rem;
background:var(--accent);color:var(--bg);cursor:pointer}
button.plain{background:var(--bg);color:var(--fg);border-color:var(--line)}
button:hover{filter:brightness(1.1)}
.big{font-size:2.2rem;font-weight:700;font-variant-numeric:tabular-nums}
.note{color:var(--mute);font-size:.92em}
.flash{padding:.55rem .8rem;border-radius:.3rem;margin:.8rem 0;border-left:4px solid var(--ok);background:var(--alt)}
.flash.error,.error{border-left-color:var(--bad)} p.error{color:var(--bad)}
.state{display:inline-block;padding:0 .45rem;border-radius:.7rem;font-size:.82em;border:1px solid currentColor;
white-space:nowrap}
.s-queued{color:var(--accent)} .s-scheduled{color:var(--mute)} .s-running{color:var(--warn)}
.s-failed{color:var(--warn)} .s-dead{color:var(--bad)} .s-done{color:var(--ok)}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(15rem,1fr));gap:.8rem;padding:0;list-style:none}
.cards li{border:1px solid var(--line);border-radius:.4rem;padding:.7rem .9rem}
.cards li a{font-weight:600} .cards li p{margin:.2rem 0 0;color:var(--mute);font-size:.92em}
.cols{display:grid;grid-template-columns:repeat(auto-fit,minmax(18rem,1fr));gap:0 2rem}
"""

_STYLE_HASH = base64.b64encode(hashlib.sha256(STYLE.encode()).digest()).decode()

#: The demo's pages run no script: not even an injected one could.
CONTENT_SECURITY_POLICY = (
    f"default-src 'none'; style-src 'sha256-{_STYLE_HASH}'; img-src data:; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS = [
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "same-origin"),
    ("X-Frame-Options", "DENY"),
]


def load_pages() -> list[Any]:
    return [importlib.import_module(f"{__package__}.{name}") for name in PAGES]


def _nav(title: str) -> str:
    links = []
    for p in load_pages():
        label = p.TITLE.split(":", 1)[0]
        on = " class='on'" if p.TITLE == title else ""
        links.append(f"<a href='{html.escape(p.PREFIX)}/'{on}>{html.escape(label)}</a>")
    return "<nav>" + "".join(links) + "</nav>"


def page(title: str, body: str) -> bytes:
    """A complete HTML page; ``body`` is trusted HTML built by the caller."""
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        "<link rel='icon' href='data:,'>"
        f"<title>{html.escape(title)} · gaeservices demo</title><style>{STYLE}</style></head>"
        f"<body><header><a class='brand' href='/'>gaeservices demo</a>{_nav(title)}</header>"
        f"<main><h1>{html.escape(title)}</h1>{body}</main></body></html>"
    ).encode()


def unavailable(what: str, services: Services, kind: str, error: BaseException | None = None) -> str:
    """A paragraph saying that ``what`` cannot be shown because backend ``kind`` did not answer."""
    detail = f": {html.escape(str(error))}" if error is not None and str(error) else ""
    return (
        f"<p class='flash error' id='unavailable'>The {html.escape(kind)} "
        f"(<code>{html.escape(services.describe(kind))}</code>) does not answer, so {html.escape(what)}"
        f"{detail}. The page works again as soon as it does.</p>"
    )


def remember(services: Services, key: str, item: Any, *, limit: int = 20) -> list[Any]:
    """Put ``item`` first in the JSON list at store ``key`` (keeping ``limit``); return the list.

    One atomic ``store.update``: of any number of concurrent requests, none
    loses another's item (a read, then a write, would).
    """

    def prepend(current: bytes | None) -> bytes:
        items = json.loads(current) if current else []
        return json.dumps([item, *items][:limit]).encode()

    return json.loads(services.store.update(key, prepend) or b"[]")


def recall(services: Services, key: str) -> list[Any]:
    """The list :func:`remember` keeps at ``key``."""
    raw = services.store.get(key)
    return json.loads(raw) if raw else []


class Router:
    """Dispatch by path prefix, moving the prefix from PATH_INFO to SCRIPT_NAME."""

    def __init__(self, mounts: Iterable[tuple[str, str, Callable[..., Any]]], services: Services | None = None) -> None:
        self.mounts = list(mounts)
        self.by_length = sorted(self.mounts, key=lambda m: len(m[0]), reverse=True)
        self.services = services

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        def secured(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            present = {name.lower() for name, _ in headers}
            extra = [(n, v) for n, v in SECURITY_HEADERS if n.lower() not in present]
            content_type = next((v for n, v in headers if n.lower() == "content-type"), "")
            if content_type.startswith("text/html") and "content-security-policy" not in present:
                extra.append(("Content-Security-Policy", CONTENT_SECURITY_POLICY))
            return start_response(status, headers + extra, exc_info)

        path = environ.get("PATH_INFO", "") or "/"
        if path == "/":
            return self.index(secured)
        if path == "/favicon.ico":  # what browsers ask for beside documents that are not pages
            secured("204 No Content", [("Cache-Control", "public, max-age=86400")])
            return []
        for prefix, _, app in self.by_length:
            if path == prefix or path.startswith(prefix + "/"):
                environ["SCRIPT_NAME"] = environ.get("SCRIPT_NAME", "") + prefix
                environ["PATH_INFO"] = path[len(prefix):] or "/"
                return app(environ, secured)
        secured("404 Not Found", [("Content-Type", "text/plain; charset=utf-8")])
        return [b"not found\n"]

    def index(self, start_response: Callable[..., Any]) -> Iterable[bytes]:
        cards = "".join(
            f"<li><a href='{html.escape(prefix)}/'>{html.escape(title.split(':', 1)[0])}</a>"
            f"<p>{html.escape(title.split(':', 1)[-1].strip())}</p></li>"
            for prefix, title, _ in self.mounts
        )
        body = (
            "<p>Each page uses one of App Engine's services through gaeservices, on the backends "
            "below: on a laptop the embedded defaults (nothing else running), on your servers "
            "memcached, PostgreSQL, SMTP or Celery, on App Engine its own services. The code is "
            "the same; only the environment changes.</p>"
            f"<ul class='cards'>{cards}</ul>"
        )
        if self.services is not None:
            rows = "".join(
                f"<tr><td>{kind}</td><td><code>{html.escape(self.services.describe(kind))}</code></td></tr>"
                for kind in ("cache", "store", "queue", "mail")
            )
            body += (
                "<h2>Backends</h2>"
                f"<table><tr><th>service</th><th>backend</th></tr>{rows}</table>"
                f"<p class='note'>Embedded state lives in <code>{html.escape(self.services.data_dir)}</code>. "
                "Choose other backends with <code>GAESERVICES_CACHE</code>, <code>GAESERVICES_STORE</code>, "
                "<code>GAESERVICES_QUEUE</code> and <code>GAESERVICES_MAIL</code>.</p>"
            )
        start_response("200 OK", [("Content-Type", "text/html; charset=utf-8")])
        return [page("Services", body)]


def make_app(services: Services | None = None) -> Callable[..., Any]:
    services = services or get_services()
    pages = load_pages()
    app: Callable[..., Any] = Router(((p.PREFIX, p.TITLE, p.make_app(services)) for p in pages), services)
    for p in pages:
        wrap = getattr(p, "wrap", None)
        if wrap is not None:
            app = wrap(app, services)
    return app
