"""The task admin page (:class:`gaeservices.tasks.admin_app.TaskAdminApp`), mounted
where App Engine's development server had it.

The demo opens it to requests from this machine only, and says so: the
request must come from a loopback address, name a loopback host (so a web page
that rebinds its own domain to 127.0.0.1 is refused), and carry no proxy
header (behind a proxy on this machine every request comes from loopback).
``GAESERVICES_ADMIN_BASIC_AUTH=user:password`` admits other clients too. An
application of your own gives the page its own admin check instead.
"""

from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING, Any

from gaeservices.config import Services
from gaeservices.tasks.admin_app import TaskAdminApp

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIApplication

PREFIX = "/_ah/admin/tasks"
TITLE = "Task admin: queues, run now, retry, delete (from this machine)"
_LOOPBACK_NAMES = ("localhost", "localhost.")


def loopback_only(environ: dict[str, Any]) -> bool:
    """True for a request from this machine, to a loopback name, through no proxy."""
    if "HTTP_X_FORWARDED_FOR" in environ or "HTTP_FORWARDED" in environ:
        return False
    try:
        if not ipaddress.ip_address(environ.get("REMOTE_ADDR", "")).is_loopback:
            return False
    except ValueError:
        return False
    host = environ.get("HTTP_HOST") or ""
    name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
    name = name.strip("[]").lower()
    if name in _LOOPBACK_NAMES or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def make_app(services: Services) -> WSGIApplication:
    return TaskAdminApp(services, is_admin=loopback_only)
