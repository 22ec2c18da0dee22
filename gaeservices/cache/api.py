"""The cache API, and the logic every backend shares.

:class:`Cache` defines the operations and their semantics once: how keys are
normalised (prefix, then hashing of keys memcached would refuse), how timeouts
are turned into expiry times, and how values are encoded with flags. A backend
subclass only moves bytes: it implements the primitive operations with the
helpers here, so the semantics are identical on every backend.

Semantics, in short (docs/cache.md has the long form):

* Keys are any ``str``. Keys that are printable ASCII without spaces and fit
  memcached's 250 bytes (prefix included) are used as they are; any other key
  is replaced by a digest, transparently. The two forms cannot collide.
* ``timeout`` is in seconds; ``None`` means no expiry; ``0`` or less means the
  item expires at once (it is not stored, and an older value is removed);
  fractions round up to whole seconds; timeouts over 30 days are sent as
  absolute times, as memcached requires. Leaving it out uses the cache's
  ``default_timeout`` (300 s unless configured).
* Values of type bytes, str, int, float and bool are stored in a plain
  encoding; anything else is pickled. The cache is trusted storage: whoever can
  write to it can run code in the processes that read pickles from it.
* An encoded value over ``max_item_size`` raises :class:`ValueTooLargeError`
  and stores nothing.
* Counters (``incr``/``decr``) are unsigned 64-bit integers: ``decr`` stops at
  zero and ``incr`` wraps around at 2**64, as memcached does.
"""

from __future__ import annotations

import copy
import hashlib
import math
import pickle
import re
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final

from ..exceptions import ConfigurationError, ValueTooLargeError

__all__ = [
    "Cache",
    "DEFAULT_TIMEOUT",
    "MAX_KEY_LENGTH",
    "THIRTY_DAYS",
    "encode",
    "decode",
]

#: memcached's limit on key length, in bytes.
MAX_KEY_LENGTH: Final = 250
#: Relative expiry times above this are read by memcached as Unix timestamps.
THIRTY_DAYS: Final = 30 * 24 * 3600
#: Never-expire, in memcached's terms.
_NEVER: Final = 0
#: Already expired: memcached drops an item stored with a negative expiry.
_EXPIRED: Final = -1

# Flags are compatible with pymemcache's serde for the types both know, so a
# value written by one can be read by the other.
FLAG_BYTES: Final = 0
FLAG_PICKLE: Final = 1
FLAG_INTEGER: Final = 2
FLAG_TEXT: Final = 16
FLAG_FLOAT: Final = 32
FLAG_BOOL: Final = 64

_PICKLE_PROTOCOL = pickle.HIGHEST_PROTOCOL

# Printable ASCII except space and the backtick, which marks digested keys:
# a key holding a backtick is digested itself, so the two forms never meet.
_plain_key = re.compile(r"[!-_a-~]+").fullmatch
_DIGEST_MARK = "`"
# How many keys' server keys a cache remembers before it starts afresh.
_KNOWN_KEYS = 4096


class _DefaultTimeout:
    __slots__ = ()

    def __repr__(self) -> str:
        return "DEFAULT_TIMEOUT"


#: Stands for "the cache's default timeout" in signatures.
DEFAULT_TIMEOUT: Final[Any] = _DefaultTimeout()
_MISSING: Final[Any] = object()


def encode(value: Any) -> tuple[bytes, int]:
    """Encode ``value`` for storage: ``(data, flags)``."""
    kind = type(value)
    # Exact types: a subclass (an enum, a markup string) is pickled so that it
    # comes back as itself.
    if kind is bytes:
        return value, FLAG_BYTES
    if kind is str:
        return value.encode("utf-8", "surrogatepass"), FLAG_TEXT
    if kind is int:
        return b"%d" % value, FLAG_INTEGER
    if kind is bool:
        # Not "1"/"0": a bool is not a counter, and memcached must refuse incr.
        return (b"True" if value else b"False"), FLAG_BOOL
    if kind is float:
        return repr(value).encode(), FLAG_FLOAT
    return pickle.dumps(value, _PICKLE_PROTOCOL), FLAG_PICKLE


def decode(data: bytes, flags: int) -> Any:
    """The value :func:`encode` encoded as ``(data, flags)``."""
    if flags == FLAG_BYTES:
        return data
    if flags == FLAG_TEXT:
        return data.decode("utf-8", "surrogatepass")
    if flags == FLAG_INTEGER:
        return int(data)  # memcached may pad a decremented number with spaces
    if flags == FLAG_PICKLE:
        return pickle.loads(data)
    if flags == FLAG_FLOAT:
        return float(data)
    if flags == FLAG_BOOL:
        return data == b"True"
    return data  # written by someone else with flags we do not know


def digest_key(full_key: str) -> str:
    """The digest that stands for a key memcached would not accept."""
    return hashlib.blake2b(full_key.encode("utf-8", "surrogatepass"), digest_size=20).hexdigest()


class Cache:
    """A cache: the API every backend implements, with shared semantics.

    Options (keyword-only, also accepted as URL query options):

    ``key_prefix``
        Prepended to every key, so several applications or components can
        share one server without clashes (printable ASCII, no spaces).
    ``default_timeout``
        Seconds an item lives when a call does not say; ``None`` for no expiry.
    ``max_item_size``
        The largest encoded value accepted, in bytes.
    """

    max_item_size: int
    #: Whether every process that builds this cache from the same URL sees the
    #: same items (memcached, App Engine memcache), or each process has its own
    #: (the in-process ``memory://``). A cache that is not shared never stands
    #: in for shared state: sessions read the store through it.
    shared: bool = False

    def __init__(
        self,
        *,
        key_prefix: str = "",
        default_timeout: float | None = 300,
        max_item_size: int = 1024 * 1024,
    ) -> None:
        if not isinstance(key_prefix, str) or (key_prefix and not _plain_key(key_prefix)):
            raise ConfigurationError(
                f"key_prefix={key_prefix!r} must be printable ASCII without spaces or backticks"
            )
        # Room for the prefix, the mark and a digest within memcached's limit.
        if len(key_prefix) > MAX_KEY_LENGTH - 41:
            raise ConfigurationError(f"key_prefix is longer than {MAX_KEY_LENGTH - 41} characters")
        if default_timeout is not None and default_timeout <= 0:
            raise ConfigurationError("default_timeout must be positive, or None for no expiry")
        if max_item_size <= 0:
            raise ConfigurationError("max_item_size must be positive")
        self.key_prefix = key_prefix
        self.default_timeout = default_timeout
        self.max_item_size = int(max_item_size)
        self._set_prefix(key_prefix)
        # Computed once: the default is by far the most common timeout.
        self._default_expire: int | None = (
            None
            if default_timeout is not None and math.ceil(default_timeout) > THIRTY_DAYS
            else self._expire(default_timeout)
        )

    def _set_prefix(self, prefix: str) -> None:
        self.key_prefix = prefix
        self._plain_max = MAX_KEY_LENGTH - len(prefix)
        # Server keys of recent keys: the same few keys (a session's, a page's)
        # come back call after call, and a dict lookup is a tenth of the check.
        self._keys: dict[str, bytes] = {}

    # -- shared helpers ---------------------------------------------------

    def _key(self, key: str) -> bytes:
        """The server key for ``key``: prefixed, digested when it must be."""
        if type(key) is str:  # exactly str: a subclass may hash and compare as it likes
            known = self._keys.get(key)
            if known is not None:
                return known
            if len(key) > self._plain_max:  # long keys are digested, and not remembered
                return (self.key_prefix + _DIGEST_MARK + digest_key(key)).encode()
            if _plain_key(key):
                server_key = (self.key_prefix + key).encode()
            else:
                server_key = (self.key_prefix + _DIGEST_MARK + digest_key(key)).encode()
            if len(self._keys) >= _KNOWN_KEYS:
                self._keys.clear()
            self._keys[key] = server_key
            return server_key
        if not isinstance(key, str):
            raise TypeError(f"cache keys are str, not {type(key).__name__}")
        return (self.key_prefix + _DIGEST_MARK + digest_key(key)).encode()

    def _expire(self, timeout: Any) -> int:
        """``timeout`` as a memcached expiry: 0 never, -1 expired, else seconds or a timestamp."""
        if timeout is DEFAULT_TIMEOUT:
            if self._default_expire is not None:
                return self._default_expire
            timeout = self.default_timeout
        if timeout is None:
            return _NEVER
        if timeout <= 0:
            return _EXPIRED
        try:
            seconds = math.ceil(timeout)
        except (OverflowError, ValueError):
            raise ValueError(
                f"timeout={timeout!r}: give a finite number of seconds, or None for no expiry"
            ) from None
        if seconds > THIRTY_DAYS:
            return int(time.time()) + seconds
        return seconds

    def _encode(self, value: Any) -> tuple[bytes, int]:
        data, flags = encode(value)
        if len(data) > self.max_item_size:
            raise ValueTooLargeError(
                f"a {type(value).__name__} value of {len(data)} bytes exceeds this cache's "
                f"item limit of {self.max_item_size} bytes; it was not stored"
            )
        return data, flags

    # -- the API: primitive operations (backends implement these) --------------

    def get(self, key: str, default: Any = None) -> Any:
        """The value stored under ``key``, or ``default`` when there is none."""
        raise NotImplementedError

    def set(self, key: str, value: Any, *, timeout: float | None = DEFAULT_TIMEOUT) -> bool:
        """Store ``value`` under ``key``; False when the cache could not store it."""
        raise NotImplementedError

    def add(self, key: str, value: Any, *, timeout: float | None = DEFAULT_TIMEOUT) -> bool:
        """Store ``value`` only if ``key`` holds nothing; True when stored."""
        raise NotImplementedError

    def replace(self, key: str, value: Any, *, timeout: float | None = DEFAULT_TIMEOUT) -> bool:
        """Store ``value`` only if ``key`` already holds something; True when stored."""
        raise NotImplementedError

    def delete(self, key: str) -> bool:
        """Remove ``key``; True if it held something."""
        raise NotImplementedError

    def set_confirmed(
        self, key: str, value: Any, *, timeout: float | None = DEFAULT_TIMEOUT, wait: float = 0.0
    ) -> bool:
        """Store ``value`` under ``key`` for a write that must not be skipped.

        Unlike :meth:`set`, a server in its retry delay is tried anyway, and a
        write that fails is tried again until ``wait`` seconds have passed.
        True once the cache has confirmed the write, or knows that nothing it
        held survived (memcached: the connection was refused, no server runs
        there); False when it could not be confirmed.
        """
        return self.set(key, value, timeout=timeout)

    def get_many(self, keys: Iterable[str]) -> dict[str, Any]:
        """The stored values of ``keys``, as a dict of the keys that were found."""
        raise NotImplementedError

    def set_many(
        self, mapping: Mapping[str, Any], *, timeout: float | None = DEFAULT_TIMEOUT
    ) -> list[str]:
        """Store every item of ``mapping``; return the keys that were not stored.

        Values are all encoded before anything is sent: one value too large
        raises :class:`ValueTooLargeError` and stores nothing.
        """
        raise NotImplementedError

    def delete_many(self, keys: Iterable[str]) -> None:
        """Remove every key of ``keys``."""
        raise NotImplementedError

    def gets(self, key: str, default: Any = None) -> tuple[Any, Any]:
        """``(value, token)`` for a later :meth:`cas`; ``(default, None)`` when missing.

        The token is opaque and only meaningful to this cache.
        """
        raise NotImplementedError

    def cas(
        self, key: str, value: Any, token: Any, *, timeout: float | None = DEFAULT_TIMEOUT
    ) -> bool:
        """Store ``value`` only if ``key`` is unchanged since :meth:`gets` gave ``token``.

        False when it changed, was removed, or the cache is unavailable.
        """
        raise NotImplementedError

    def touch(self, key: str, *, timeout: float | None = DEFAULT_TIMEOUT) -> bool:
        """Give ``key`` a new timeout without changing its value; True if it exists."""
        raise NotImplementedError

    def clear(self) -> None:
        """Remove every item of the cache, whatever its prefix (memcached's flush_all)."""
        raise NotImplementedError

    def close(self) -> None:
        """Release connections; the cache reconnects if used again."""

    def _incr(self, key: bytes, delta: int, decrement: bool) -> int | None:
        """Atomically offset the counter at server key ``key``; None when missing.

        Raises NotAnIntegerError when the value is not an unsigned integer.
        """
        raise NotImplementedError

    # -- the API: composite operations ---------------------------------------

    def incr(
        self,
        key: str,
        delta: int = 1,
        *,
        default: int | None = None,
        timeout: float | None = DEFAULT_TIMEOUT,
    ) -> int | None:
        """Atomically add ``delta`` to the integer under ``key``; return the new value.

        When ``key`` holds nothing, the result is None, unless ``default`` is
        given: the counter is then created atomically as ``default + delta``
        (living ``timeout``; an existing counter keeps its own expiry). Also
        None when the cache is unavailable. A value that is not an unsigned
        integer raises :class:`NotAnIntegerError`.
        """
        if delta < 0:
            return self._offset(key, -delta, True, default, timeout)
        return self._offset(key, delta, False, default, timeout)

    def decr(
        self,
        key: str,
        delta: int = 1,
        *,
        default: int | None = None,
        timeout: float | None = DEFAULT_TIMEOUT,
    ) -> int | None:
        """Atomically subtract ``delta`` (never below zero); see :meth:`incr`."""
        if delta < 0:
            return self._offset(key, -delta, False, default, timeout)
        return self._offset(key, delta, True, default, timeout)

    def _offset(
        self, key: str, delta: int, decrement: bool, default: int | None, timeout: Any
    ) -> int | None:
        if type(delta) is not int:
            raise TypeError(f"delta must be an int, not {type(delta).__name__}")
        server_key = self._key(key)
        result = self._incr(server_key, delta, decrement)
        if result is not None or default is None:
            return result
        if type(default) is not int or default < 0:
            raise TypeError("default must be a non-negative int")
        initial = max(default - delta, 0) if decrement else (default + delta) % 2**64
        # add-then-incr: whoever creates the counter wins, everyone else
        # increments what was created, so no increment is lost.
        for _ in range(5):
            if self.add(key, initial, timeout=timeout):
                return initial
            result = self._incr(server_key, delta, decrement)
            if result is not None:
                return result
        return None  # the cache keeps refusing both: treat it as unavailable

    def get_or_set(
        self,
        key: str,
        default: Any | Callable[[], Any],
        *,
        timeout: float | None = DEFAULT_TIMEOUT,
    ) -> Any:
        """The value under ``key``; if missing, store ``default`` (called, if callable) and return it.

        When another process stores a value first, its value is returned, so
        every caller agrees on one value.
        """
        value = self.get(key, _MISSING)
        if value is not _MISSING:
            return value
        value = default() if callable(default) else default
        if self.add(key, value, timeout=timeout):
            return value
        existing = self.get(key, _MISSING)
        return value if existing is _MISSING else existing

    def prefixed(self, prefix: str) -> Cache:
        """A view of this cache whose keys all start with ``prefix`` (after this cache's own).

        The view shares this cache's connections and storage.
        """
        view = copy.copy(self)
        combined = self.key_prefix + prefix
        if not _plain_key(prefix) or len(combined) > MAX_KEY_LENGTH - 41:
            raise ConfigurationError(
                f"prefix {prefix!r} must be printable ASCII without spaces or backticks, "
                f"and at most {MAX_KEY_LENGTH - 41} characters with the cache's own prefix"
            )
        view._set_prefix(combined)
        return view

    def __repr__(self) -> str:
        return f"<{type(self).__name__} prefix={self.key_prefix!r}>"


def common_options(url: Any) -> dict[str, Any]:
    """The options every backend reads from its URL's query."""
    options: dict[str, Any] = {}
    if "key_prefix" in url.options:
        options["key_prefix"] = url.options["key_prefix"]
    timeout = url.options.get("default_timeout")
    if timeout is not None:
        if timeout.lower() in ("", "none", "never"):
            options["default_timeout"] = None
        else:
            options["default_timeout"] = _number(url, "default_timeout", timeout)
    size = url.options.get("max_item_size")
    if size is not None:
        options["max_item_size"] = parse_size(url, "max_item_size", size)
    return options


def _number(url: Any, name: str, text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ConfigurationError(f"{url!r}: {name}={text!r} is not a number") from None


def parse_size(url: Any, name: str, text: str) -> int:
    """A size in bytes, with an optional k/m/g suffix (powers of 1024), as memcached's -I."""
    match = re.fullmatch(r"\s*(\d+)\s*([kKmMgG]?)[bB]?\s*", text)
    if not match:
        raise ConfigurationError(f"{url!r}: {name}={text!r} is not a size such as 1048576 or 1m")
    scale = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}[match.group(2).lower()]
    return int(match.group(1)) * scale
