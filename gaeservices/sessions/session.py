"""The per-request session: a lazy mutable mapping of JSON values.

Nothing happens until the application touches the session: the cookie is not
even parsed. The first access reads the cookie, verifies its signature and
loads the record (one cache get in ``cache``/``cached_db`` mode). At the end of
the request the session writes only if something changed, and then only the
keys that changed, merged atomically into the stored record, so two overlapping
requests that change different keys both keep their change.

A record is one line of its version and three times, then the data as a JSON
object::

    <version> <created> <last written> <last refreshed>\n{"key":"value",…}

The version is raised by one in every write, inside the store's atomic update,
so of two copies of a record the newer is decidable (see
:mod:`gaeservices.sessions.persistence`). The times are integer milliseconds
since the epoch, so that the common work of a request (read the times, check
the lifetimes, write new ones) costs no float formatting and no JSON beyond
the data itself.

Values are checked when they are set: what JSON cannot hold faithfully
(objects, NaN, dicts with non-string keys) raises ``TypeError`` naming the key,
then and there. Lists and dicts read from the session may be changed in place; such changes are
detected at the end of the request by comparing their JSON.
"""

from __future__ import annotations

import json
import json.scanner
import logging
import math
import secrets
from collections.abc import Callable, Iterator, MutableMapping
from typing import TYPE_CHECKING, Any

from ..exceptions import SessionTooLargeError
from .persistence import _SLACK

if TYPE_CHECKING:
    from .middleware import SessionMiddleware

__all__ = ["Session", "new_session_id", "parse_record", "encode_record"]

logger = logging.getLogger("gaeservices.sessions")

_DELETED: Any = object()
# Bytes of a record besides its data's JSON: a version of up to 20 digits,
# three 13-digit times and separators.
_HEAD_SIZE = 21 + 3 * 14
_VARY = ("Vary", "Cookie")
_PRIVATE = ("Cache-Control", "private")


def _not_json(value: Any) -> Any:
    raise TypeError(f"{type(value).__name__} is not JSON data")


_JSON_SAMPLE: Any = {"a": [1, -2.5, True, None, "é\n\U0001f600"], "b": {}, "": 10**20}
_JSON_SAMPLE_TEXT = json.dumps(_JSON_SAMPLE, separators=(",", ":"), allow_nan=False)
# CPython's C accelerators of the json module are private (json.encoder.c_make_encoder,
# json.scanner.c_make_scanner): each is used only if it exists, accepts the call
# made here and gives exactly what the public API gives on a sample; otherwise
# the public API is used. tests/test_sessions.py fails if CPython stops
# providing them, so the slower path is never taken silently.


def _public_encoder() -> Callable[[Any, int], Any]:
    iterencode = json.JSONEncoder(separators=(",", ":"), allow_nan=False).iterencode
    return lambda value, _level: iterencode(value)


def _make_encoder() -> tuple[Callable[[Any, int], Any], bool]:
    """Compact JSON, NaN refused, as a function returning the chunks to join,
    and whether it is CPython's C encoder.

    The C encoder is built once rather than per call (``JSONEncoder.encode``
    builds it anew every time, a third of its cost).
    """
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is not None:
        try:
            encoder = make(
                None, _not_json, json.encoder.encode_basestring_ascii, None, ":", ",", False, False, False
            )
            if "".join(encoder(_JSON_SAMPLE, 0)) == _JSON_SAMPLE_TEXT:
                return encoder, True
        except Exception:  # a changed private signature: use the public API
            pass
    return _public_encoder(), False


_encoder, FAST_ENCODER = _make_encoder()
_join = "".join


def _dumps(value: Any) -> str:
    return _join(_encoder(value, 0))


def _make_scan() -> tuple[Callable[[str, int], tuple[Any, int]], bool]:
    """The JSON scanner itself, and whether it is CPython's C scanner:
    ``JSONDecoder.decode`` wraps it in two Python calls and a regular
    expression for whitespace, which compact records lack."""
    decoder = json.JSONDecoder()
    make = getattr(json.scanner, "c_make_scanner", None)
    if make is not None:
        try:
            scan = make(decoder)
            if scan(_JSON_SAMPLE_TEXT, 0) == (_JSON_SAMPLE, len(_JSON_SAMPLE_TEXT)):
                return scan, True
        except Exception:
            pass
    fallback: Any = getattr(json.scanner, "py_make_scanner", json.scanner.make_scanner)
    return fallback(decoder), False


_scan, FAST_SCANNER = _make_scan()
# What a record that is not one of ours raises while it is parsed.
_UNREADABLE = (ValueError, TypeError, StopIteration)


def _parse(raw: bytes) -> tuple[int, int, int, int, dict[str, Any]]:
    """A record's version, created, accessed and refreshed times (ms) and its data.

    Records written before versions (three times) read as version 0. Raises
    one of ``_UNREADABLE`` when ``raw`` is not a record.
    """
    head, _, body = raw.partition(b"\n")
    fields = head.split(b" ")
    if len(fields) == 4:
        version, created, accessed, refreshed = fields
    else:
        version = b"0"
        created, accessed, refreshed = fields
    text = body.decode("utf-8")
    data, end = _scan(text, 0)
    if end != len(text) or type(data) is not dict:
        raise ValueError("not a session record")
    return int(version), int(created), int(accessed), int(refreshed), data

def _size_bound(value: Any) -> int:
    """An upper bound of ``len(_dumps(value))``, without encoding scalars."""
    kind = type(value)
    if kind is str:
        # Every character escaped as \uXXXX at worst; one beyond the basic
        # plane is a surrogate pair, two escapes. isascii() is a flag lookup.
        return (6 if value.isascii() else 12) * len(value) + 2
    if kind is int:
        return len(str(value))
    if kind is bool or value is None:
        return 5
    if kind is float:
        return 24
    return len(_dumps(value))


def _private(headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """``headers`` for a response that depends on the session: ``Vary: Cookie``,
    and ``Cache-Control: private`` unless the application chose its own, so no
    shared cache stores it (a Set-Cookie above all) for other clients."""
    vary = control = -1
    for i, (name, _) in enumerate(headers):
        size = len(name)
        if size == 4 and name.lower() == "vary":
            vary = i
        elif size == 13 and name.lower() == "cache-control":
            control = i
    headers = list(headers)
    if vary < 0:
        headers.append(_VARY)
    else:
        name, value = headers[vary]
        if "cookie" not in value.lower() and value.strip() != "*":
            headers[vary] = (name, value + ", Cookie")
    if control < 0:
        headers.append(_PRIVATE)
    return headers


def new_session_id() -> str:
    """144 random bits, URL- and cookie-safe."""
    return secrets.token_urlsafe(18)


def _check(key: str, value: Any, where: str = "") -> None:
    """Raise TypeError if JSON would not give ``value`` back as it is."""
    kind = type(value)
    if kind is str or kind is int or kind is bool or value is None:
        return
    if kind is float:
        if not math.isfinite(value):
            raise TypeError(f"session[{key!r}]{where}: {value!r} cannot be stored in JSON")
        return
    if kind is list:
        for i, item in enumerate(value):
            _check(key, item, f"{where}[{i}]")
        return
    if kind is dict:
        for k, item in value.items():
            if type(k) is not str:
                raise TypeError(
                    f"session[{key!r}]{where}: dict key {k!r} is not a str; JSON keys are strings"
                )
            _check(key, item, f"{where}[{k!r}]")
        return
    if isinstance(value, (str, int, float)) and not isinstance(value, bool):
        return  # str/int/float subclasses (IntEnum…) are stored as their base value
    raise TypeError(
        f"session[{key!r}]{where}: {kind.__name__} is not JSON data "
        "(use str, int, float, bool, None, list and dict with str keys)"
    )


class Session(MutableMapping[str, Any]):
    """The session of one request, at ``environ["gaeservices.session"]``.

    A mutable mapping of JSON values, loaded on first use and saved at the end of
    the request if it changed. Also: :meth:`cycle_key` (call it at login) and
    :meth:`invalidate` (call it at logout).
    """

    __slots__ = (
        "_mw", "_cookie_header", "_https", "_start_response", "_loaded", "_responded",
        "_sid", "_cookie_sid", "_raw", "_token", "_data", "_version", "_created", "_accessed",
        "_changed", "_cleared", "_snapshots", "_size", "_cycle", "_expire_cookie",
        "_saved", "_refreshed", "_resign", "_pending",
    )  # fmt: skip

    _mw: SessionMiddleware
    _cookie_header: str | None
    _https: bool
    _start_response: Callable[..., Any]
    _loaded: bool
    _responded: bool
    _sid: str | None
    _cookie_sid: str | None
    _raw: bytes | None
    _token: Any
    _data: dict[str, Any]
    _version: int
    _created: int
    _accessed: int
    _refreshed: int
    _changed: dict[str, Any]
    _cleared: bool
    _snapshots: dict[str, str]
    _size: int
    _cycle: bool
    _expire_cookie: bool
    _saved: bool
    _resign: bool
    _pending: tuple[dict[str, Any], int, int]

    def __init__(self, middleware: SessionMiddleware, environ: dict[str, Any], start_response: Any) -> None:
        # Only what the untouched request needs; the rest is set by _load().
        self._mw = middleware
        # What the session needs of the request, not the environ itself: the
        # environ holds the session, and a reference back would make every
        # request a reference cycle, left for the garbage collector to find.
        self._cookie_header = environ.get("HTTP_COOKIE")
        self._https = environ.get("wsgi.url_scheme") == "https"
        self._start_response = start_response
        self._loaded = False
        self._responded = False

    # -- the mapping ---------------------------------------------------------

    def __getitem__(self, key: str) -> Any:
        if not self._loaded:
            self._load()
        value = self._data[key]
        kind = type(value)
        if (kind is list or kind is dict) and key not in self._snapshots:
            self._snapshots[key] = _dumps(value)  # to see in-place changes at the end
        return value

    def get(self, key: str, default: Any = None) -> Any:
        if not self._loaded:
            self._load()
        try:
            value = self._data[key]
        except KeyError:
            return default
        kind = type(value)
        if (kind is list or kind is dict) and key not in self._snapshots:
            self._snapshots[key] = _dumps(value)
        return value

    def __setitem__(self, key: str, value: Any) -> None:
        if not self._loaded:
            self._load()
        if type(key) is not str:
            raise TypeError(f"session keys are str, not {type(key).__name__}")
        kind = type(value)
        if kind is not str and kind is not int:
            _check(key, value)
        # The key's bound inline: a quoted string, every character escaped at worst.
        size = _size_bound(value) + (6 if key.isascii() else 12) * len(key) + 4
        limit = self._mw.max_size
        if self._size + size > limit:
            exact = self._exact_size(key, value)
            if exact > limit:
                raise SessionTooLargeError(
                    f"session[{key!r}] would make the session {exact} bytes of JSON, more "
                    f"than max_size={limit} bytes; nothing was changed"
                )
        else:
            self._size += size
        self._data[key] = value
        self._changed[key] = value
        self._snapshots.pop(key, None)

    def __delitem__(self, key: str) -> None:
        if not self._loaded:
            self._load()
        del self._data[key]
        self._changed[key] = _DELETED
        self._snapshots.pop(key, None)

    def __iter__(self) -> Iterator[str]:
        if not self._loaded:
            self._load()
        return iter(self._data)

    def __len__(self) -> int:
        if not self._loaded:
            self._load()
        return len(self._data)

    def __contains__(self, key: object) -> bool:
        if not self._loaded:
            self._load()
        return key in self._data

    def clear(self) -> None:
        if not self._loaded:
            self._load()
        self._data.clear()
        self._changed.clear()
        self._snapshots.clear()
        self._cleared = True
        self._size = _HEAD_SIZE

    def __repr__(self) -> str:
        if not self._loaded:
            return "<Session (not loaded)>"
        return f"<Session {self._data!r}>"

    # -- the session ---------------------------------------------------------

    @property
    def id(self) -> str | None:
        """The session id, or None while the session is new and unsaved."""
        if not self._loaded:
            self._load()
        return self._sid

    @property
    def is_new(self) -> bool:
        """True when no stored session came with the request."""
        if not self._loaded:
            self._load()
        return self._raw is None

    @property
    def accessed(self) -> bool:
        """True once the application has touched the session in this request."""
        return self._loaded

    @property
    def modified(self) -> bool:
        """True when the session will be written at the end of the request."""
        return self._loaded and bool(self._changed or self._cleared or self._cycle or self._mutated())

    def cycle_key(self) -> None:
        """Move the data to a new session id and delete the old one.

        Call it when the user logs in (or gains privileges), so an id planted
        before login by an attacker (session fixation) is worth nothing after.
        """
        if not self._loaded:
            self._load()
        self._cycle = True

    def invalidate(self) -> None:
        """End the session now and expire its cookie (logout).

        The session's id is ended for good, in the store and the cache (see
        docs/sessions.md), even when the request's cookie named a session that
        could not be found: a copy the cache may still hold is ended too.
        Raises :class:`~gaeservices.exceptions.SessionError` when that cannot
        be confirmed; the logout is then incomplete and can be tried again.
        The request goes on with a new, empty session; data set in it is saved
        under a new id.
        """
        if not self._loaded:
            self._load()
        sid = self._sid if self._sid is not None else self._cookie_sid
        if sid is not None:
            self._mw.backend.delete(sid)
            self._expire_cookie = True
            self._cookie_sid = None
        self._reset(int(self._mw.clock() * 1000))

    # -- loading -------------------------------------------------------------

    def _load(self) -> None:
        mw = self._mw
        self._loaded = True
        self._cycle = self._expire_cookie = self._saved = self._resign = self._cleared = False
        self._changed = {}
        self._snapshots = {}
        self._cookie_sid = None
        now = int(mw.clock() * 1000)
        verified = mw.verified_id(self._cookie_header)
        if verified is not None:
            sid, seen, current = verified
            self._cookie_sid = sid
            raw, token = mw.backend.load(sid, seen)
            if raw is not None:
                try:
                    version, created, accessed, refreshed, data = _parse(raw)
                except _UNREADABLE:
                    logger.warning("session record %s… is unreadable; starting afresh", sid[:6])
                else:
                    if now - accessed < mw.max_age_ms and (
                        mw.absolute_ms is None or now - created < mw.absolute_ms
                    ):
                        self._sid = sid
                        self._raw = raw
                        self._token = token
                        self._data = data
                        self._version = version
                        self._created = created
                        self._accessed = accessed
                        self._refreshed = refreshed
                        self._resign = not current  # signed with a retired key
                        self._size = len(raw)
                        return
                    logger.debug("session %s… has outlived its lifetime", sid[:6])
            else:
                logger.debug("session %s… is unknown or expired; starting afresh", sid[:6])
        self._reset(now)

    def _reset(self, now: int) -> None:
        self._sid = None
        self._resign = False
        self._raw = None
        self._token = None
        self._data = {}
        self._version = 0
        self._created = self._accessed = self._refreshed = now
        self._changed = {}
        self._snapshots = {}
        self._cleared = False
        self._cycle = False
        self._size = _HEAD_SIZE

    def _exact_size(self, key: str, value: Any) -> int:
        data = dict(self._data)
        data[key] = value
        self._size = len(_dumps(data)) + _HEAD_SIZE  # resynchronise the running estimate
        return self._size

    def _mutated(self) -> dict[str, Any]:
        data = self._data
        return {
            key: data[key]
            for key, before in self._snapshots.items()
            if key in data and _dumps(data[key]) != before
        }

    # -- saving --------------------------------------------------------------

    def _save(self) -> str | None:
        """Write what changed; the Set-Cookie value to send, or None."""
        self._saved = True
        mw = self._mw
        changes = self._changed
        if self._snapshots:
            mutated = self._mutated()
            if mutated:
                changes = {**mutated, **changes}
        now = int(mw.clock() * 1000)
        sid = self._sid
        if sid is None:
            if not self._data:
                return mw.expired_cookie(self._https) if self._expire_cookie else None
            return self._create(now)
        if self._cycle:
            header = self._create(now)
            mw.backend.delete(sid)
            return header
        # The cookie's lifetime (and a read-only session's record) is pushed back
        # at most once per refresh interval, not on every request.
        refresh = now - self._refreshed >= mw.refresh_ms
        if not (changes or self._cleared or refresh):
            if self._resign:
                self._resign = False
                return mw.cookie(self._https, sid, self._version, mw.ttl(self._created, now))
            return None  # a read: nothing to write, no cookie to send
        ttl = mw.ttl(self._created, now)
        refreshed = now if refresh else self._refreshed
        self._pending = (changes, now, refreshed)
        new = mw.backend.save(sid, self._merge, self._raw, self._token, ttl + _SLACK)
        if new is None:
            logger.debug("session %s… vanished while the request ran; not resurrected", sid[:6])
            return mw.expired_cookie(self._https)
        self._raw, self._token = new, None
        self._version = int(new[: new.index(b" ")])
        self._accessed, self._refreshed = now, refreshed
        self._changed = {}
        self._cleared = False
        if self._snapshots:
            self._resnapshot()
        if refresh or self._resign or mw.cookie_carries_writes:
            self._resign = False
            return mw.cookie(self._https, sid, self._version, ttl)
        return None

    def _create(self, now: int) -> str:
        ttl = self._mw.ttl(self._created, now)
        sid = new_session_id()
        raw = self._encode(1, self._created, now, now, self._data)
        self._mw.backend.create(sid, raw, ttl + _SLACK)
        self._sid = sid
        self._raw, self._token = raw, None
        self._version = 1
        self._accessed = self._refreshed = now
        self._changed = {}
        self._cleared = self._cycle = False
        if self._snapshots:
            self._resnapshot()
        return self._mw.cookie(self._https, sid, 1, ttl)

    def _merge(self, stored: bytes | None) -> bytes | None:
        """The record to write over ``stored``: this request's changes
        (``self._pending``) applied to it. Run by the backend inside its atomic
        update, possibly more than once."""
        if stored is None:
            return None  # deleted (logout) or expired meanwhile: do not resurrect
        changes, now, refreshed = self._pending
        if stored == self._raw:
            # The very record this request read: its data with our changes
            # applied is what we hold already.
            return self._encode(self._version + 1, self._created, now, refreshed, self._data)
        version, created, _, stored_refreshed, data = _parse(stored)
        if self._cleared:
            data = {}
        for key, value in changes.items():
            if value is _DELETED:
                data.pop(key, None)
            else:
                data[key] = value
        return self._encode(version + 1, created, now, max(refreshed, stored_refreshed), data)

    def _encode(self, version: int, created: int, accessed: int, refreshed: int, data: dict[str, Any]) -> bytes:
        raw = b"%d %d %d %d\n%s" % (version, created, accessed, refreshed, _join(_encoder(data, 0)).encode())
        if len(raw) > self._mw.max_size:
            raise SessionTooLargeError(
                f"the session would be {len(raw)} bytes, more than max_size={self._mw.max_size}; "
                "nothing was written"
            )
        return raw

    # -- the WSGI side -------------------------------------------------------

    def start_response(self, status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        """Save (if the session was touched) and add the session's headers."""
        self._responded = True
        if self._loaded and not self._saved:
            cookie = None
            if exc_info is None:
                cookie = self._save()
            else:
                self._abandon()  # an error response: the request did not complete, keep nothing
            headers = _private(headers)
            if cookie is not None:
                headers.append(("Set-Cookie", cookie))
        if exc_info is None:
            return self._start_response(status, headers)
        return self._start_response(status, headers, exc_info)

    def _abandon(self) -> None:
        self._saved = True
        self._changed = {}
        self._snapshots = {}
        self._cleared = self._cycle = False

    def _resnapshot(self) -> None:
        data = self._data
        self._snapshots = {key: _dumps(data[key]) for key in self._snapshots if key in data}

    def finish(self) -> None:
        """After the response: save changes made once the headers were sent."""
        if not self._loaded:
            return
        if not self._responded:
            return
        if self._saved and not (self._changed or self._cleared or (self._snapshots and self._mutated())):
            return
        if self._sid is None and self._data:
            logger.warning(
                "a new session was filled after the response headers were sent; "
                "it cannot be saved without its cookie"
            )
            return
        self._save()


# -- records, for other front ends (the Django adapter's SessionStore) -------------


def parse_record(raw: bytes) -> tuple[int, int, int, int, dict[str, Any]]:
    """A record's version, created, accessed and refreshed times (ms) and its data.

    Raises ValueError (or TypeError) when ``raw`` is not a session record.
    """
    try:
        return _parse(raw)
    except StopIteration:
        raise ValueError("not a session record") from None


def encode_record(version: int, created: int, accessed: int, refreshed: int, data: dict[str, Any]) -> bytes:
    """The bytes of a record (the format :func:`parse_record` reads); ``data`` must be JSON."""
    return b"%d %d %d %d\n%s" % (version, created, accessed, refreshed, _dumps(data).encode())

