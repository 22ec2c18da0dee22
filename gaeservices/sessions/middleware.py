"""SessionMiddleware: server-side sessions for any WSGI application.

The cookie carries only a signed session id; the data lives in the cache, the
store, or both (``mode``). The middleware puts a lazy
:class:`~gaeservices.sessions.session.Session` at
``environ["gaeservices.session"]`` and does nothing else unless the application
touches it: a request that never looks at the session costs one small object
and makes no cache or store call.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Iterable, Iterator
from email.utils import formatdate
from typing import Any

from itsdangerous import BadSignature

from ..config import Services, get_services
from ..exceptions import ConfigurationError
from .persistence import MODES
from .session import Session

__all__ = ["SessionMiddleware", "ENVIRON_KEY"]

logger = logging.getLogger("gaeservices.sessions")

ENVIRON_KEY = "gaeservices.session"

_SALT = "gaeservices.session"
_SESSION_ID = re.compile(r"[A-Za-z0-9_-]{24}").fullmatch
_VERSION = re.compile(r"[0-9]{1,19}").fullmatch
_VERIFIED_MAX = 10_000
_SAMESITE = {"lax": "Lax", "strict": "Strict", "none": "None"}


class SessionMiddleware:
    """Give ``app`` a session at ``environ["gaeservices.session"]``.

    Options (keyword-only):

    ``mode``
        ``"cached_db"`` (default: the store is the truth, the cache serves
        reads), ``"cache"`` (cache only: fast, lost on eviction or restart) or
        ``"db"`` (store only).
    ``services``
        The :class:`~gaeservices.config.Services` whose cache, store and secret
        keys to use; the process default when None.
    ``cookie_name``, ``path``, ``domain``
        The cookie's name and scope.
    ``secure``
        The cookie's Secure flag; None (default) sets it when the request came
        over https.
    ``httponly``, ``samesite``
        Cookie flags; ``samesite`` is ``"Lax"`` (default), ``"Strict"``,
        ``"None"`` (which needs ``secure=True``) or None to leave it out.
    ``max_age``
        Idle lifetime in seconds: a session unused that long is gone.
    ``absolute_lifetime``
        Seconds after creation when a session ends however active it is (None
        for no limit).
    ``refresh_interval``
        A session that is only read is written (to push its idle expiry back)
        at most once per this many seconds; capped at half of ``max_age``.
    ``max_size``
        The largest session, in bytes of JSON; setting a value beyond it raises
        :class:`~gaeservices.exceptions.SessionTooLargeError`.
    ``key_prefix``
        Prefix of the session records' keys in the cache and the store.
    ``invalidate_wait``
        Seconds :meth:`Session.invalidate` and :meth:`Session.cycle_key` keep
        trying to record the end of the old id in a cache that does not answer
        (a stalled memcached) before they raise ``SessionError``.
    ``clock``
        Seconds since the epoch (``time.time``); tests pass their own to move
        through lifetimes without waiting.
    """

    def __init__(
        self,
        app: Callable[..., Any],
        *,
        mode: str = "cached_db",
        services: Services | None = None,
        cookie_name: str = "gaesession",
        path: str = "/",
        domain: str | None = None,
        secure: bool | None = None,
        httponly: bool = True,
        samesite: str | None = "Lax",
        max_age: int = 14 * 24 * 3600,
        absolute_lifetime: int | None = 30 * 24 * 3600,
        refresh_interval: int = 3600,
        max_size: int = 64 * 1024,
        key_prefix: str = "gaesession:",
        environ_key: str = ENVIRON_KEY,
        invalidate_wait: float = 5.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if mode not in MODES:
            raise ConfigurationError(f"session mode must be one of {', '.join(MODES)}, not {mode!r}")
        if not re.fullmatch(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+", cookie_name):
            raise ConfigurationError(f"cookie_name {cookie_name!r} is not a valid cookie name")
        if max_age <= 0:
            raise ConfigurationError("max_age must be a positive number of seconds")
        if absolute_lifetime is not None and absolute_lifetime <= 0:
            raise ConfigurationError("absolute_lifetime must be positive, or None")
        if max_size <= 0:
            raise ConfigurationError("max_size must be positive")
        if not invalidate_wait >= 0:
            raise ConfigurationError("invalidate_wait must be a number of seconds >= 0")
        if samesite is not None:
            if samesite.lower() not in _SAMESITE:
                raise ConfigurationError(f"samesite must be Lax, Strict, None or None, not {samesite!r}")
            samesite = _SAMESITE[samesite.lower()]
            if samesite == "None" and secure is not True:
                raise ConfigurationError("samesite='None' needs secure=True (browsers refuse it otherwise)")
        for name, value in (("path", path), ("domain", domain)):
            if value is not None and re.search(r"[;\s\x00-\x1f\x7f]", value):
                raise ConfigurationError(f"cookie {name} {value!r} holds characters a cookie cannot")

        self.app = app
        self.mode = mode
        self.services = services if services is not None else get_services()
        self.cookie_name = cookie_name
        self.secure = secure
        self.max_age = int(max_age)
        self.absolute_lifetime = absolute_lifetime
        self.refresh_interval = min(refresh_interval, self.max_age // 2)
        # The same lifetimes in milliseconds, the unit of a record's times.
        self.max_age_ms = self.max_age * 1000
        self.absolute_ms = None if absolute_lifetime is None else round(absolute_lifetime * 1000)
        self.refresh_ms = round(self.refresh_interval * 1000)
        self.max_size = max_size
        self.environ_key = environ_key
        self.clock = clock
        self.backend = MODES[mode](
            self.services, prefix=key_prefix, max_age=self.max_age, invalidate_wait=invalidate_wait
        )
        # In cached_db mode the cookie carries the record's version, so a cache
        # copy older than what the client last received is never served to it:
        # every write sends the cookie again (docs/sessions.md, "Cache faults").
        self.cookie_carries_writes = mode == "cached_db"
        self.signer = self.services.signer(_SALT)
        # Built once: every Set-Cookie ends with the same attributes.
        flags = f"; Path={path}"
        if domain:
            flags += f"; Domain={domain}"
        if httponly:
            flags += "; HttpOnly"
        if samesite:
            flags += f"; SameSite={samesite}"
        self._flags = flags
        self._cookie_marker = cookie_name + "="
        # Cookie values already verified (or signed here) -> their session id,
        # version and whether the newest key signed them: an HMAC is the
        # largest cost of a read, and the same cookie comes back request after
        # request. Only exact, previously verified strings are found here.
        self._verified: dict[str, tuple[str, int, bool]] = {}

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        session = Session(self, environ, start_response)
        environ[self.environ_key] = session
        result: Iterable[bytes] = self.app(environ, session.start_response)
        if session._responded:
            if not session._loaded:
                return result  # untouched: nothing to do
            if type(result) is list:
                # The body is made: no application code runs after this, so
                # the changes made after start_response are saved now.
                session.finish()
                return result
            wrapper = environ.get("wsgi.file_wrapper")
            if isinstance(wrapper, type) and isinstance(result, wrapper):
                # A file for the server to send (sendfile): it runs no
                # application code either, and must reach the server as it is.
                session.finish()
                return result
        # The session may still change while the body is produced (a generator
        # application runs only when iterated): save at close.
        return _Closing(result, session)

    # -- cookies -------------------------------------------------------------

    def session_id(self, environ: dict[str, Any]) -> tuple[str, int, bool] | None:
        """The verified session id from the request's cookie, the record
        version the cookie carries (0 when none), and whether the newest key
        signed it (if not, the cookie is re-signed); or None."""
        return self.verified_id(environ.get("HTTP_COOKIE"))

    def verified_id(self, header: str | None) -> tuple[str, int, bool] | None:
        """:meth:`session_id` from the ``Cookie`` header itself."""
        if not header or self._cookie_marker not in header:
            return None
        if ";" not in header and header.startswith(self._cookie_marker):
            # The common case, our cookie alone: no splitting needed.
            known = self._verified.get(header[len(self._cookie_marker):])
            if known is not None:
                return known
        for part in header.split(";"):
            name, sep, value = part.strip().partition("=")
            if not sep or name != self.cookie_name:
                continue
            value = value.strip().strip('"')
            known = self._verified.get(value)
            if known is not None:
                return known
            try:
                payload = self.signer.unsign(value).decode("ascii")
            except BadSignature:  # forged, altered, truncated or unsigned: not a session
                logger.debug("session cookie with a bad signature ignored: %.40r", value)
                continue
            # "<id>.<version>" (cached_db) or "<id>" (other modes, older cookies)
            sid, dot, version = payload.partition(".")
            if _SESSION_ID(sid) and (not dot or _VERSION(version)):
                if len(self._verified) >= _VERIFIED_MAX:
                    self._verified.clear()
                current = self.signer.sign(payload).decode("ascii") == value
                known = self._verified[value] = (sid, int(version or 0), current)
                return known
            logger.debug("session cookie with a malformed id ignored")
        return None

    def cookie(self, https: bool, sid: str, version: int, ttl: int) -> str:
        """The Set-Cookie value that gives the client session ``sid`` (whose
        record is at ``version``) for ``ttl`` seconds, on a request that came
        over https or not."""
        if self.cookie_carries_writes:
            value = self.signer.sign(f"{sid}.{version}").decode("ascii")
            if len(self._verified) >= _VERIFIED_MAX:
                self._verified.clear()
            self._verified[value] = (sid, version, True)
        else:
            value = self.signer.sign(sid).decode("ascii")
        expires = formatdate(self.clock() + ttl, usegmt=True)
        return f"{self.cookie_name}={value}; Max-Age={ttl}; Expires={expires}{self._flags}{self._secure(https)}"

    def expired_cookie(self, https: bool) -> str:
        """The Set-Cookie value that removes the session cookie."""
        return (
            f"{self.cookie_name}=; Max-Age=0; Expires=Thu, 01 Jan 1970 00:00:00 GMT"
            f"{self._flags}{self._secure(https)}"
        )

    def _secure(self, https: bool) -> str:
        # secure=None follows the request. Behind a TLS-terminating proxy, have
        # the proxy middleware set wsgi.url_scheme (or pass secure=True):
        # headers are not trusted here.
        return "; Secure" if (https if self.secure is None else self.secure) else ""

    # -- lifetimes -----------------------------------------------------------

    def ttl(self, created: int, now: int) -> int:
        """Seconds the session's record (and cookie) should live from ``now``
        (both in milliseconds since the epoch)."""
        ttl = self.max_age
        if self.absolute_ms is not None:
            ttl = min(ttl, (created + self.absolute_ms - now + 500) // 1000)  # rounded
        return max(ttl, 1)


class _Closing:
    """The application's response, saving the session when the server closes it."""

    __slots__ = ("_result", "_session")

    def __init__(self, result: Iterable[bytes], session: Session) -> None:
        self._result = result
        self._session = session

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._result)

    def close(self) -> None:
        try:
            close = getattr(self._result, "close", None)
            if close is not None:
                close()
        finally:
            self._session.finish()
