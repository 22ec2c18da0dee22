"""``memcache://host:port[,host:port...]``: memcached through pymemcache.

Each server is reached through a pool of connections shared by threads
(:class:`ServerPool`). With several servers, each key goes to the server that
pymemcache's rendezvous hash picks for it, hashed exactly as
:class:`pymemcache.client.hash.HashClient` (and so Django's ``PyMemcacheCache``)
hashes the same key on the same server list: a cluster can be shared with them,
or an application moved from one to the other, without losing its keys.

A dead server does not take the application down. The first failed call logs a
warning; from then until ``retry_delay`` seconds have passed, calls on that
server do not touch the network: reads are misses, writes return False,
``incr`` returns None. Then one call tries the server again
(:meth:`MemcacheCache.retry_now` ends the delay at once). Keys are never moved
to another server while theirs is down, so nothing stale is served when it
comes back. At most one warning is logged per server and retry period. A reply
that is not memcached's (something else listens on the port) is a server fault
like a dead server, never an error of the caller's.

URL options: ``connect_timeout`` and ``timeout`` (seconds, default 1),
``retry_delay`` (seconds, default 10), ``max_pool_size`` (idle connections
kept to each server; unbounded by default), ``max_item_size`` (match the server's ``-I``;
default 1m), ``key_prefix``, ``default_timeout``.

pymemcache's connection set-up is used through two of its private members,
``Client._connect`` and ``Client.sock``: the version range is bounded in
``setup.py`` and ``tests/test_cache_memcache.py`` fails if either moves.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from pymemcache.client.base import Client
from pymemcache.client.rendezvous import RendezvousHash
from pymemcache.exceptions import (
    MemcacheClientError,
    MemcacheError,
    MemcacheIllegalInputError,
    MemcacheServerError,
    MemcacheUnexpectedCloseError,
    MemcacheUnknownCommandError,
)

from ..exceptions import CacheError, ConfigurationError, NotAnIntegerError, ValueTooLargeError
from .api import DEFAULT_TIMEOUT, _MISSING, FLAG_BYTES, THIRTY_DAYS, Cache, common_options, decode

__all__ = ["MemcacheCache", "ServerPool"]

logger = logging.getLogger("gaeservices.cache")

if not (callable(getattr(Client, "_connect", None)) and "sock" in Client.__init__.__code__.co_names):
    raise ImportError(
        "this pymemcache no longer has the Client._connect and Client.sock that "
        "gaeservices' memcache backend relies on; install the version range setup.py names"
    )


class UnexpectedReply(MemcacheError):
    """The server answered something memcached never does: not memcached, or out of step."""


#: What a server's failure raises: network errors, a connection closed
#: mid-reply, and replies that are not memcached's.
_FAULTS = (OSError, MemcacheUnexpectedCloseError, MemcacheUnknownCommandError, UnexpectedReply)

_READ = 65536
_END = b"\r\nEND\r\n"
_STORED = {b"STORED\r\n": True, b"NOT_STORED\r\n": False, b"EXISTS\r\n": False, b"NOT_FOUND\r\n": None}
_DELETED = {b"DELETED": True, b"NOT_FOUND": False}
_TOUCHED = {b"TOUCHED": True, b"NOT_FOUND": False}
_OK = {b"OK": True}


def _raise_reply(reply: bytes) -> None:
    line = reply.split(b"\r\n", 1)[0].decode("ascii", "replace")
    if line.startswith("SERVER_ERROR"):
        raise MemcacheServerError(line[13:])
    if line.startswith("CLIENT_ERROR"):
        raise MemcacheClientError(line[13:])
    if line == "ERROR":
        raise MemcacheUnknownCommandError(line)
    raise UnexpectedReply(f"unexpected reply from memcached: {line[:80]!r}")


def _read_line(sock: Any, buf: bytes) -> tuple[bytes, bytes]:
    """The next reply line (without CRLF) and what follows it."""
    eol = buf.find(b"\r\n")
    while eol < 0:
        chunk = sock.recv(_READ)
        if not chunk:
            raise MemcacheUnexpectedCloseError()
        buf += chunk
        eol = buf.find(b"\r\n")
    return buf[:eol], buf[eol + 2 :]


def _read_rest(sock: Any, head: bytes, need: int) -> bytes:
    """Read until ``need`` bytes of reply are in hand (large values)."""
    buffer = bytearray(need)
    buffer[: len(head)] = head
    view = memoryview(buffer)
    got = len(head)
    while got < need:
        count = sock.recv_into(view[got:])
        if not count:
            raise MemcacheUnexpectedCloseError()
        got += count
    return bytes(buffer)


class _Client(Client):
    """One connection to one server, for keys :meth:`Cache._key` has made valid.

    pymemcache's general command machinery (per-line reads, serializer
    dispatch, key checks) costs about 40% of a loopback round trip; here each
    command is one ``sendall`` and as few ``recv`` calls as the reply needs.
    pymemcache's ``Client`` still sets the connection up (timeouts, keepalive,
    TLS): ``_connect()`` and ``sock`` are the two private members used. A reply
    that is not one the command can get raises :class:`UnexpectedReply`, and
    any error closes the connection, so a half-read reply never reaches the
    next command.
    """

    def _socket(self) -> Any:
        sock = self.sock
        if sock is None:
            self._connect()
            sock = self.sock
        return sock

    def _fetch(self, key: bytes, default: Any, cas_default: Any = None) -> tuple[Any, Any]:
        try:
            sock = self._socket()
            sock.sendall(b"gets " + key + b"\r\n")
            buf = sock.recv(_READ)
            if buf == b"END\r\n":
                return default, cas_default
            eol = buf.find(b"\r\n")
            while eol < 0:
                chunk = sock.recv(_READ)
                if not chunk:
                    raise MemcacheUnexpectedCloseError()
                buf += chunk
                eol = buf.find(b"\r\n")
            if buf[:6] != b"VALUE ":
                if buf == b"END\r\n":
                    return default, cas_default
                _raise_reply(buf)
            try:
                _, _, flags, size, cas = buf[:eol].split()
                start = eol + 2
                end = start + int(size)
            except ValueError:
                raise UnexpectedReply(f"malformed VALUE line {buf[:80]!r}") from None
            if len(buf) < end + 7:
                buf = _read_rest(sock, buf, end + 7)
            if len(buf) != end + 7 or buf[end:] != _END:
                raise UnexpectedReply("a value's reply did not end as memcached's do")
        except BaseException:
            self.close()
            raise
        if flags == b"0":
            return buf[start:end], cas
        return decode(buf[start:end], int(flags)), cas

    def _fetch_many(self, keys: list[bytes]) -> dict[bytes, Any]:
        found: dict[bytes, Any] = {}
        asked = set(keys)
        try:
            sock = self._socket()
            sock.sendall(b"get " + b" ".join(keys) + b"\r\n")
            buf = b""
            while True:
                line, buf = _read_line(sock, buf)
                if line == b"END":
                    break
                if line[:6] != b"VALUE ":
                    _raise_reply(line)
                try:
                    _, key, flags, size = line.split()
                    need = int(size) + 2
                except ValueError:
                    raise UnexpectedReply(f"malformed VALUE line {line[:80]!r}") from None
                if len(buf) < need:
                    buf = _read_rest(sock, buf, need)
                if buf[need - 2 : need] != b"\r\n" or key not in asked or key in found:
                    raise UnexpectedReply("a value's reply is not one memcached gives to this get")
                found[key] = (buf[: need - 2], int(flags))
                buf = buf[need:]
            if buf:
                raise UnexpectedReply("memcached sent more than it was asked for")
        except BaseException:
            self.close()
            raise
        return {key: decode(data, flags) for key, (data, flags) in found.items()}

    def _store(self, command: bytes, key: bytes, value: tuple[bytes, int], expire: int, tail: bytes = b"") -> Any:
        data, flags = value
        try:
            sock = self._socket()
            sock.sendall(b"%s %s %d %d %d%s\r\n%s\r\n" % (command, key, flags, expire, len(data), tail, data))
            reply = sock.recv(_READ)
            while reply[-2:] != b"\r\n":
                chunk = sock.recv(_READ)
                if not chunk:
                    raise MemcacheUnexpectedCloseError()
                reply += chunk
            result = _STORED.get(reply, _MISSING)
            if result is _MISSING:
                _raise_reply(reply)
        except BaseException:
            self.close()
            raise
        return result

    def _cas(self, key: bytes, value: tuple[bytes, int], token: Any, expire: int) -> Any:
        token = token if type(token) is bytes else str(token).encode("ascii")
        if not token.isdigit():  # a token goes on the command line: digits only
            raise MemcacheIllegalInputError(f"cas token must be digits, not {token!r}")
        return self._store(b"cas", key, value, expire, b" " + token)

    def _store_many(self, values: dict[bytes, tuple[bytes, int]], expire: int) -> list[bytes]:
        """Set every item in one pipelined write; the keys that were not stored."""
        commands = [
            b"set %s %d %d %d\r\n%s\r\n" % (key, flags, expire, len(data), data)
            for key, (data, flags) in values.items()
        ]
        failed = []
        try:
            sock = self._socket()
            sock.sendall(b"".join(commands))
            buf = b""
            for key in values:
                line, buf = _read_line(sock, buf)
                if line != b"STORED":
                    if line == b"NOT_STORED":
                        failed.append(key)
                    else:
                        _raise_reply(line)
        except BaseException:
            self.close()
            raise
        return failed

    def _command(self, command: bytes, replies: dict[bytes, Any]) -> Any:
        """Send one command line; its one-line reply, mapped by ``replies``."""
        try:
            sock = self._socket()
            sock.sendall(command)
            line, rest = _read_line(sock, b"")
            result = replies.get(line, _MISSING)
            if result is _MISSING or rest:
                _raise_reply(line if result is _MISSING else rest)
        except BaseException:
            self.close()
            raise
        return result

    def _commands(self, commands: list[bytes], replies: dict[bytes, Any]) -> list[Any]:
        """Pipelined one-line commands; their replies, in order."""
        results = []
        try:
            sock = self._socket()
            sock.sendall(b"".join(commands))
            buf = b""
            for _ in commands:
                line, buf = _read_line(sock, buf)
                result = replies.get(line, _MISSING)
                if result is _MISSING:
                    _raise_reply(line)
                results.append(result)
        except BaseException:
            self.close()
            raise
        return results

    def _offset(self, command: bytes, key: bytes, delta: int) -> int | None:
        try:
            sock = self._socket()
            sock.sendall(b"%s %s %d\r\n" % (command, key, delta))
            line, rest = _read_line(sock, b"")
            if rest:
                raise UnexpectedReply("memcached sent more than it was asked for")
            if line == b"NOT_FOUND":
                return None
            digits = line.rstrip(b" ")
            if not digits.isdigit():
                _raise_reply(line)
            return int(digits)
        except BaseException:
            self.close()
            raise


class ServerPool:
    """Connections to one memcached server, borrowed per call by any thread.

    pymemcache's PooledClient does the same behind a context manager, a lock
    and a linear search of the used connections, which costs a fifth of a
    loopback ``get``. Here a list of idle clients is enough: ``pop`` and
    ``append`` are atomic, so threads never share a connection, and a
    connection that raised is dropped rather than reused. The pool also
    remembers when its server failed (``down_until``), so that a dead server
    costs nothing until its retry delay is over.
    """

    __slots__ = ("server", "address", "_options", "_idle", "max_idle", "down_until", "warned_until")

    def __init__(self, server: tuple[str, int], *, max_idle: int | None = None, **options: Any) -> None:
        self.server = server
        self.address = "%s:%s" % server  # also its node name in the rendezvous hash
        self._options = options
        self._idle: list[_Client] = []
        self.max_idle = max_idle
        self.down_until = 0.0
        self.warned_until = 0.0

    def is_down(self) -> bool:
        if time.monotonic() < self.down_until:
            return True
        self.down_until = 0.0  # the delay is over: let this call try the server
        return False

    def call(self, method: Callable[..., Any], *args: Any) -> Any:
        """Run ``method`` (a :class:`_Client` function) on a borrowed connection.

        A connection that raised is closed and dropped, never reused: a reply
        left half-read must not reach the next command.
        """
        idle = self._idle
        try:
            client = idle.pop()
        except IndexError:
            client = _Client(self.server, **self._options)
        try:
            result = method(client, *args)
        except BaseException:
            client.close()
            raise
        if self.max_idle is None or len(idle) < self.max_idle:
            idle.append(client)
        else:
            client.close()
        return result

    def close(self) -> None:
        idle, self._idle = self._idle, []
        for client in idle:
            client.close()


_fetch = _Client._fetch
_store = _Client._store
_PLACED_MAX = 4096


class MemcacheCache(Cache):
    """memcached on one or several servers (``host:port`` strings or tuples)."""

    shared = True

    def __init__(
        self,
        servers: Sequence[str | tuple[str, int]],
        *,
        connect_timeout: float = 1.0,
        timeout: float = 1.0,
        retry_delay: float = 10.0,
        max_pool_size: int | None = None,
        key_prefix: str = "",
        default_timeout: float | None = 300,
        max_item_size: int = 1024 * 1024,
    ) -> None:
        super().__init__(
            key_prefix=key_prefix, default_timeout=default_timeout, max_item_size=max_item_size
        )
        if not servers:
            raise ConfigurationError("memcache needs at least one server")
        self.servers = [_server(s) for s in servers]
        self.retry_delay = float(retry_delay)
        # TCP_NODELAY stays off: on loopback it measured no different (replies are
        # read before the next command is sent, so Nagle never holds one back).
        options: dict[str, Any] = dict(connect_timeout=connect_timeout, timeout=timeout)
        self._pools = [ServerPool(server, max_idle=max_pool_size, **options) for server in self.servers]
        self._single: ServerPool | None = self._pools[0] if len(self._pools) == 1 else None
        self._by_node = {pool.address: pool for pool in self._pools}
        # pymemcache's own hash, over the same node names HashClient gives the
        # same servers ("host:port"), so keys are placed where it places them.
        self._hasher = RendezvousHash(nodes=[pool.address for pool in self._pools])
        self._placed: dict[bytes, ServerPool] = {}
        self._warn_lock = threading.Lock()

    @classmethod
    def from_url(cls, url: Any, services: Any = None) -> MemcacheCache:
        options = common_options(url)
        for name, cast in (
            ("connect_timeout", float),
            ("timeout", float),
            ("retry_delay", float),
            ("max_pool_size", int),
        ):
            text = url.options.get(name)
            if text:
                try:
                    options[name] = cast(text)
                except ValueError:
                    raise ConfigurationError(f"{url!r}: {name}={text!r} is not a number") from None
        return cls([(host, port) for host, port in url.hosts], **options)

    # -- placement and failure handling ------------------------------------

    def _pool(self, server_key: bytes) -> ServerPool:
        """The server that holds ``server_key``."""
        single = self._single
        if single is not None:
            return single
        pool = self._placed.get(server_key)
        if pool is None:
            # HashClient hashes the key it is given; Django gives it str keys.
            # Hashing the bytes would hash their repr, b'...', and place every
            # key where no other client looks for it.
            pool = self._by_node[self._hasher.get_node(server_key.decode("ascii"))]
            if len(self._placed) >= _PLACED_MAX:
                self._placed.clear()
            self._placed[server_key] = pool
        return pool

    def server_of(self, key: str) -> str:
        """The ``host:port`` of the server that holds ``key``."""
        return self._pool(self._key(key)).address

    def retry_now(self) -> None:
        """End every server's retry delay: the next call tries them again.

        For tests that restart a memcached and want the cache to use it at once
        (:class:`gaeservices.testing.MemcachedServer`), and for operators who
        know a server is back.
        """
        for pool in self._pools:
            pool.down_until = 0.0
            pool.warned_until = 0.0

    def _failed(self, pool: ServerPool, exc: BaseException) -> None:
        """A server fault: leave the server alone for ``retry_delay``, warn once per period."""
        now = time.monotonic()
        pool.down_until = now + self.retry_delay
        with self._warn_lock:
            if now < pool.warned_until:
                return
            pool.warned_until = now + self.retry_delay
        logger.warning(
            "memcached at %s failed (%s: %s); treating it as empty and retrying in %gs",
            pool.address,
            type(exc).__name__,
            exc,
            self.retry_delay,
        )

    def _refused(self, exc: MemcacheServerError, value_size: int = 0) -> bool:
        """A store the server refused: too large is the caller's error, anything else is False."""
        if "too large" in str(exc):
            raise ValueTooLargeError(
                f"memcached refused a value of {value_size} bytes as too large; raise its -I "
                f"or store less (max_item_size={self.max_item_size})"
            ) from None
        logger.warning("memcached refused to store an item: %s", exc)
        return False

    def _prepare(self, value: Any, timeout: Any) -> tuple[tuple[bytes, int], int]:
        """``(encoded value, expiry)`` for a write; bytes and a plain number of
        seconds, a session record's case, go through without further calls."""
        if type(value) is bytes and len(value) <= self.max_item_size:
            encoded = (value, FLAG_BYTES)
        else:
            encoded = self._encode(value)
        if type(timeout) is int and 0 < timeout <= THIRTY_DAYS:
            return encoded, timeout
        return encoded, self._expire(timeout)

    def _by_pool(self, server_keys: Iterable[bytes]) -> dict[ServerPool, list[bytes]]:
        groups: dict[ServerPool, list[bytes]] = {}
        for server_key in server_keys:
            groups.setdefault(self._pool(server_key), []).append(server_key)
        return groups

    # -- the API -------------------------------------------------------------

    def get(self, key: str, default: Any = None) -> Any:
        server_key = self._key(key)
        pool = self._pool(server_key)
        if pool.down_until and pool.is_down():
            return default
        try:
            value = pool.call(_fetch, server_key, _MISSING)[0]
        except _FAULTS as exc:
            self._failed(pool, exc)
            return default
        return default if value is _MISSING else value

    def _store(self, command: bytes, key: str, value: Any, timeout: Any) -> bool:
        server_key = self._key(key)
        encoded, expire = self._prepare(value, timeout)
        pool = self._pool(server_key)
        if pool.down_until and pool.is_down():
            return False
        try:
            return bool(pool.call(_store, command, server_key, encoded, expire))
        except _FAULTS as exc:
            self._failed(pool, exc)
            return False
        except MemcacheServerError as exc:
            return self._refused(exc, len(encoded[0]))

    def set(self, key: str, value: Any, *, timeout: Any = DEFAULT_TIMEOUT) -> bool:
        return self._store(b"set", key, value, timeout)

    def add(self, key: str, value: Any, *, timeout: Any = DEFAULT_TIMEOUT) -> bool:
        return self._store(b"add", key, value, timeout)

    def replace(self, key: str, value: Any, *, timeout: Any = DEFAULT_TIMEOUT) -> bool:
        return self._store(b"replace", key, value, timeout)

    def set_confirmed(self, key: str, value: Any, *, timeout: Any = DEFAULT_TIMEOUT, wait: float = 0.0) -> bool:
        """:meth:`Cache.set_confirmed`: the server is tried even inside its retry
        delay, and again until ``wait`` seconds have passed. A refused connection
        means no memcached runs there: nothing it held survives, so the value
        cannot be contradicted, and that counts as confirmed."""
        server_key = self._key(key)
        encoded, expire = self._prepare(value, timeout)
        pool = self._pool(server_key)
        deadline = time.monotonic() + wait
        while True:
            try:
                if pool.call(_store, b"set", server_key, encoded, expire):
                    pool.down_until = 0.0
                    return True
            except ConnectionRefusedError as exc:
                self._failed(pool, exc)
                return True
            except _FAULTS as exc:
                self._failed(pool, exc)
            except MemcacheServerError as exc:
                self._refused(exc, len(encoded[0]))
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            time.sleep(min(0.05, left))

    def delete(self, key: str) -> bool:
        server_key = self._key(key)
        pool = self._pool(server_key)
        if pool.down_until and pool.is_down():
            return False
        try:
            return bool(pool.call(_Client._command, b"delete " + server_key + b"\r\n", _DELETED))
        except _FAULTS as exc:
            self._failed(pool, exc)
            return False

    def get_many(self, keys: Iterable[str]) -> dict[str, Any]:
        originals = {self._key(key): key for key in keys}
        found: dict[str, Any] = {}
        for pool, server_keys in self._by_pool(originals).items():
            if pool.down_until and pool.is_down():
                continue
            try:
                values = pool.call(_Client._fetch_many, server_keys)
            except _FAULTS as exc:
                self._failed(pool, exc)
                continue
            for server_key, value in values.items():
                found[originals[server_key]] = value
        return found

    def set_many(self, mapping: Mapping[str, Any], *, timeout: Any = DEFAULT_TIMEOUT) -> list[str]:
        # Everything is encoded (and size-checked) before anything is sent.
        encoded: dict[bytes, tuple[bytes, int]] = {}
        originals = {}
        for key, value in mapping.items():
            server_key = self._key(key)
            encoded[server_key] = self._encode(value)
            originals[server_key] = key
        if not encoded:
            return []
        expire = self._expire(timeout)
        failed: list[str] = []
        for pool, server_keys in self._by_pool(encoded).items():
            if pool.down_until and pool.is_down():
                failed += [originals[k] for k in server_keys]
                continue
            try:
                refused = pool.call(_Client._store_many, {k: encoded[k] for k in server_keys}, expire)
            except _FAULTS as exc:
                self._failed(pool, exc)
                failed += [originals[k] for k in server_keys]
                continue
            except MemcacheServerError as exc:
                self._refused(exc, max(len(encoded[k][0]) for k in server_keys))
                failed += [originals[k] for k in server_keys]
                continue
            failed += [originals[k] for k in refused]
        return failed

    def delete_many(self, keys: Iterable[str]) -> None:
        for pool, server_keys in self._by_pool(self._key(key) for key in keys).items():
            if pool.down_until and pool.is_down():
                continue
            try:
                pool.call(_Client._commands, [b"delete " + k + b"\r\n" for k in server_keys], _DELETED)
            except _FAULTS as exc:
                self._failed(pool, exc)

    def gets(self, key: str, default: Any = None) -> tuple[Any, Any]:
        server_key = self._key(key)
        pool = self._pool(server_key)
        if pool.down_until and pool.is_down():
            return default, None
        try:
            value, token = pool.call(_fetch, server_key, default)
        except _FAULTS as exc:
            self._failed(pool, exc)
            return default, None
        return value, token

    def cas(self, key: str, value: Any, token: Any, *, timeout: Any = DEFAULT_TIMEOUT) -> bool:
        if token is None:
            return False
        server_key = self._key(key)
        encoded, expire = self._prepare(value, timeout)
        pool = self._pool(server_key)
        if pool.down_until and pool.is_down():
            return False
        try:
            return bool(pool.call(_Client._cas, server_key, encoded, token, expire))
        except _FAULTS as exc:
            self._failed(pool, exc)
            return False
        except MemcacheServerError as exc:
            return self._refused(exc, len(encoded[0]))

    def touch(self, key: str, *, timeout: Any = DEFAULT_TIMEOUT) -> bool:
        server_key = self._key(key)
        expire = self._expire(timeout)
        pool = self._pool(server_key)
        if pool.down_until and pool.is_down():
            return False
        try:
            return bool(pool.call(_Client._command, b"touch %s %d\r\n" % (server_key, expire), _TOUCHED))
        except _FAULTS as exc:
            self._failed(pool, exc)
            return False

    def _incr(self, key: bytes, delta: int, decrement: bool) -> int | None:
        pool = self._pool(key)
        if pool.down_until and pool.is_down():
            return None
        try:
            result: int | None = pool.call(_Client._offset, b"decr" if decrement else b"incr", key, delta)
            return result
        except _FAULTS as exc:
            self._failed(pool, exc)
            return None
        except MemcacheClientError as exc:
            if "non-numeric" in str(exc):
                raise NotAnIntegerError(
                    "cannot increment or decrement a value that is not an unsigned integer"
                ) from None
            raise CacheError(f"memcached refused incr/decr: {exc}") from exc

    def clear(self) -> None:
        for pool in self._pools:
            if pool.down_until and pool.is_down():
                continue
            try:
                pool.call(_Client._command, b"flush_all\r\n", _OK)
            except _FAULTS as exc:
                self._failed(pool, exc)

    def close(self) -> None:
        for pool in self._pools:
            pool.close()

    def __repr__(self) -> str:
        servers = ",".join(pool.address for pool in self._pools)
        return f"<MemcacheCache {servers} prefix={self.key_prefix!r}>"


def _server(spec: str | tuple[str, int]) -> tuple[str, int]:
    if isinstance(spec, tuple):
        return spec[0], int(spec[1])
    host, _, port = spec.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigurationError(f"memcache server {spec!r} must be host:port")
    return host.strip("[]"), int(port)
