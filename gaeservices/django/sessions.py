"""``SESSION_ENGINE = "gaeservices.django.sessions"``: Django's sessions on the sessions service.

The records are the sessions service's, in its ``cached_db`` mode: the durable store
(``GAESERVICES_STORE``) is the truth and a shared cache (``GAESERVICES_CACHE``)
serves reads. What that mode guarantees holds for Django too:

- **per-key merge**: a save applies only the keys this request changed (found by
  comparing the data with what was loaded, so in-place changes and the async
  methods count too) inside the store's atomic update: two overlapping requests
  that change different keys both keep their change;
- **nothing lost when the cache stalls**: records carry a version the store raises
  on every write, and the session key Django puts in its cookie ends with the
  version its client last received (``<32 random characters>.<version>``), so a
  cache copy older than what the client has seen is never served: the store is read
  instead. A logout (``flush``) leaves a confirmed tombstone in the cache, or raises.

Django's part is Django's (``SessionBase``): the serializer setting, expiry methods,
``cycle_key``, ``flush``, the test cookie. Values are stored as JSON when
``SESSION_SERIALIZER`` is Django's JSON serializer (the default) and as that
serializer's output otherwise. A record lives in the store as long as
``get_expiry_age()`` says; ``clear_expired()`` purges what has expired.
"""

from __future__ import annotations

import re
import threading
import time
from typing import Any

from django.conf import settings
from django.contrib.sessions.backends.base import CreateError, SessionBase, UpdateError
from django.core.signing import JSONSerializer

from ..exceptions import SessionError
from ..sessions.persistence import MODES, record_version
from ..sessions.session import _dumps, encode_record, parse_record
from .conf import services

__all__ = ["SessionStore"]

PREFIX = "djsession:"
_KEY = re.compile(r"([a-z0-9]{32})(?:\.([0-9]{1,18}))?").fullmatch
_DELETED: Any = object()
_modes: dict[tuple[int, int], Any] = {}
_lock = threading.Lock()


def _mode() -> Any:
    svc = services()
    age = int(settings.SESSION_COOKIE_AGE)
    key = (id(svc), age)
    mode = _modes.get(key)
    if mode is None:
        with _lock:
            mode = _modes.get(key)
            if mode is None:
                mode = _modes[key] = MODES["cached_db"](svc, prefix=PREFIX, max_age=age)
    return mode


class SessionStore(SessionBase):
    """A Django session whose record is the sessions service's, in ``cached_db`` mode."""

    _session_key: str | None  # SessionBase's property; annotated only, for the type checker

    def __init__(self, session_key: str | None = None) -> None:
        super().__init__(session_key)
        self._raw: bytes | None = None  # the record as loaded: what a save compares with
        self._token: Any = None
        self._head = (0, 0)  # its version and creation time
        self._cleared = False

    # -- the key: <sid>.<version> -----------------------------------------------

    @staticmethod
    def _split(session_key: str | None) -> tuple[str, int] | None:
        match = _KEY(session_key) if isinstance(session_key, str) else None
        if match is None:
            return None
        return match.group(1), int(match.group(2) or 0)

    # -- values through the serializer ---------------------------------------------

    def _native(self) -> bool:
        return issubclass(self.serializer, JSONSerializer)

    def _encode_values(self, data: dict[str, Any]) -> dict[str, Any]:
        if self._native():
            return data
        serializer = self.serializer()
        return {key: serializer.dumps([value]).decode("latin-1") for key, value in data.items()}

    def _decode_values(self, data: dict[str, Any]) -> dict[str, Any]:
        if self._native():
            return data
        serializer = self.serializer()
        return {key: serializer.loads(value.encode("latin-1"))[0] for key, value in data.items()}

    # -- SessionBase ------------------------------------------------------------------

    def load(self) -> dict[str, Any]:
        parts = self._split(self._session_key)
        raw = token = None
        if parts is not None:
            raw, token = _mode().load(parts[0], parts[1])
        if raw is not None:
            try:
                version, created, _, _, data = parse_record(raw)
                data = self._decode_values(data)
            except Exception:
                raw = None  # not a record of ours: a fresh session
        if raw is None:
            self._session_key = None
            self._raw = None
            return {}
        self._raw, self._token, self._head, self._cleared = raw, token, (version, created), False
        return data

    def exists(self, session_key: str | None) -> bool:
        parts = self._split(session_key)
        return parts is not None and _mode().load(parts[0], 0)[0] is not None

    def create(self) -> None:
        while True:
            self._session_key = self._get_new_session_key()
            try:
                self.save(must_create=True)
            except CreateError:
                continue  # 32 random characters collided: try another
            self.modified = True
            return

    def clear(self) -> None:
        super().clear()
        self._cleared = True

    def save(self, must_create: bool = False) -> None:
        if self.session_key is None:
            return self.create()
        data = self._get_session(no_load=must_create)
        parts = self._split(self._session_key)
        if parts is None:
            raise UpdateError  # a key this engine never issued
        sid = parts[0]
        ttl = self.get_expiry_age()
        now = int(time.time() * 1000)
        mode = _mode()
        if must_create:
            raw = encode_record(1, now, now, now, self._encode_values(data))
            if ttl > 0:
                try:
                    mode.create(sid, raw, ttl)
                except SessionError:
                    if self.exists(sid):
                        raise CreateError from None
                    raise
            self._stored(sid, raw, now)
            return
        if ttl <= 0:
            mode.delete(sid)  # expired the moment it is saved: nothing to keep
            return
        loaded, (version, created), cleared = self._raw, self._head, self._cleared
        full = self._encode_values(data)

        def merge(stored: bytes | None) -> bytes | None:
            if stored is None:
                return None  # ended (logout elsewhere) or expired: never resurrected
            if stored == loaded:  # nobody wrote since this request read it: its data is ours
                return encode_record(version + 1, created, now, now, full)
            # Another request wrote meanwhile: apply only the keys this one changed.
            stored_version, stored_created, _, _, current = parse_record(stored)
            if cleared:
                current = {}
            for key, value in self._changes(loaded, data).items():
                if value is _DELETED:
                    current.pop(key, None)
                else:
                    current[key] = full[key]
            return encode_record(stored_version + 1, stored_created, now, now, current)

        new = mode.save(sid, merge, loaded, self._token, ttl)
        if new is None:
            raise UpdateError
        self._stored(sid, new, created)

    def _changes(self, loaded: bytes | None, data: dict[str, Any]) -> dict[str, Any]:
        """What this request changed: its data against the record it loaded."""
        before = self._decode_values(parse_record(loaded)[4]) if loaded is not None else {}
        changes: dict[str, Any] = {key: _DELETED for key in before if key not in data}
        for key, value in data.items():
            if key not in before or not _same(before[key], value):
                changes[key] = value
        return changes

    def _stored(self, sid: str, raw: bytes, created: int) -> None:
        version = record_version(raw)
        self._session_key = f"{sid}.{version}"
        self._raw, self._token, self._head, self._cleared = raw, None, (version, created), False

    def delete(self, session_key: str | None = None) -> None:
        if session_key is None:
            if self.session_key is None:
                return
            session_key = self.session_key
        parts = self._split(session_key)
        if parts is not None:
            _mode().delete(parts[0])

    @classmethod
    def clear_expired(cls) -> None:
        services().store.purge_expired()


def _same(before: Any, after: Any) -> bool:
    """Whether a value is unchanged: same type and equal, nested types included (1 is not True)."""
    if type(before) is not type(after) or before != after:
        return False
    if type(before) in (str, int, float, bool, type(None)):
        return True
    try:
        return _dumps(before) == _dumps(after)
    except (TypeError, ValueError):  # not JSON (another serializer's values): equality decides
        return True
