"""Server-side sessions: a signed id in the cookie, JSON data in the cache and/or the store."""

from __future__ import annotations

from .middleware import ENVIRON_KEY, SessionMiddleware
from .session import Session

__all__ = ["SessionMiddleware", "Session", "ENVIRON_KEY"]
