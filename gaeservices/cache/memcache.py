"""``memcache://host:port[,host:port...]``: memcached through pymemcache.

One server is reached through a pool of :class:`pymemcache.Client` connections
shared by threads (:class:`ServerPool`); several through a
:class:`pymemcache.HashClient` of pooled clients, which picks each key's server by
rendezvous hashing, so ``gets``/``cas`` and ``incr`` always reach the server that
holds the key.

A dead server does not take the application down. The first failed call logs a
warning; from then until ``retry_delay`` seconds have passed, calls on that
server do not touch the network: reads are misses, writes return False,
``incr`` returns None. Then one call tries the server again. Keys are never
moved to another server while theirs is down, so nothing stale is served when
it comes back. At most one warning is logged per server and retry period.

URL options: ``connect_timeout`` and ``timeout`` (seconds, default 1),
``retry_delay`` (seconds, default 10), ``max_pool_size`` (idle connections
kept to a single server; unbounded by default), ``max_item_size`` (match the server's ``-I``;
default 1m), ``key_prefix``, ``default_timeout``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from pymemcache.client.base import Client
from pymemcache.client.hash import HashClient
from pymemcache.exceptions import (
    MemcacheClientError,
    MemcacheIllegalInputError,
    MemcacheServerError,
    MemcacheUnexpectedCloseError,
    MemcacheUnknownCommandError,
)

from ..exceptions import CacheError, ConfigurationError, NotAnIntegerError, ValueTooLargeError
from .api import DEFAULT_TIMEOUT, _MISSING, FLAG_BYTES, THIRTY_DAYS, Cache, common_options, decode

__all__ = ["MemcacheCache"]

logger = logging.getLogger("gaeservices.cache")

_NETWORK_ERRORS = (OSError, MemcacheUnexpectedCloseError)


_READ = 65536
_END = b"\r\nEND\r\n"
_STORED = {b"STORED\r\n": True, b"NOT_STORED\r\n": False, b"EXISTS\r\n": False, b"NOT_FOUND\r\n": None}


class _Client(Client):
    """A pymemcache client for keys that :meth:`Cache._key` has already made valid,
    with lean single-key ``get``/``gets`` and storage commands.

    pymemcache's general command machinery (multi-key parsing, per-line reads,
    serializer dispatch) costs about 40% of a loopback round trip. Single-key
    reads and writes are nearly all of a cache's and a session's traffic, so
    they are written here as one ``sendall`` and as few ``recv`` calls as the
    reply needs; connection set-up, timeouts, multi-key and every other command
    stay pymemcache's. Any error closes the connection, so a half-read reply
    never leaks into the next command.
    """

    def check_key(self, key: Any, key_prefix: bytes) -> bytes:
        return key

    def get(self, key: bytes, default: Any = None) -> Any:
        return self._fetch(key, default)[0]

    def gets(self, key: bytes, default: Any = None, cas_default: Any = None) -> tuple[Any, Any]:
        return self._fetch(key, default, cas_default)

    def _fetch(self, key: bytes, default: Any, cas_default: Any = None) -> tuple[Any, Any]:
        sock = self.sock
        try:
            if sock is None:
                self._connect()
                sock = self.sock
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
            _, _, flags, size, cas = buf[:eol].split()
            start = eol + 2
            end = start + int(size)
            if len(buf) < end + 7:
                buf = _read_rest(sock, buf, end + 7)
            if len(buf) != end + 7 or buf[end:] != _END:
                raise MemcacheUnexpectedCloseError()
        except BaseException:
            self.close()
            raise
        if flags == b"0":
            return buf[start:end], cas
        return decode(buf[start:end], int(flags)), cas

    def _store(self, command: bytes, key: bytes, value: tuple[bytes, int], expire: int, tail: bytes = b"") -> Any:
        data, flags = value
        sock = self.sock
        try:
            if sock is None:
                self._connect()
                sock = self.sock
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

    def set(self, key: bytes, value: Any, expire: int = 0, noreply: Any = None, flags: Any = None) -> Any:
        if noreply or flags is not None:
            return super().set(key, value, expire, noreply, flags)
        return self._store(b"set", key, value, expire)

    def add(self, key: bytes, value: Any, expire: int = 0, noreply: Any = None, flags: Any = None) -> Any:
        if noreply or flags is not None:
            return super().add(key, value, expire, noreply, flags)
        return self._store(b"add", key, value, expire)

    def replace(self, key: bytes, value: Any, expire: int = 0, noreply: Any = None, flags: Any = None) -> Any:
        if noreply or flags is not None:
            return super().replace(key, value, expire, noreply, flags)
        return self._store(b"replace", key, value, expire)

    def cas(
        self, key: bytes, value: Any, cas: Any, expire: int = 0, noreply: Any = False, flags: Any = None
    ) -> Any:
        if noreply or flags is not None:
            return super().cas(key, value, cas, expire, noreply, flags)
        token = cas if type(cas) is bytes else str(cas).encode("ascii")
        if not token.isdigit():  # a token goes on the command line: digits only
            raise MemcacheIllegalInputError(f"cas token must be digits, not {cas!r}")
        return self._store(b"cas", key, value, expire, b" " + token)


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


def _raise_reply(reply: bytes) -> None:
    line = reply.split(b"\r\n", 1)[0].decode("ascii", "replace")
    if line.startswith("SERVER_ERROR"):
        raise MemcacheServerError(line[13:])
    if line.startswith("CLIENT_ERROR"):
        raise MemcacheClientError(line[13:])
    if line.startswith("ERROR"):
        raise MemcacheUnknownCommandError(line)
    raise MemcacheUnexpectedCloseError(f"unexpected reply from memcached: {line[:80]!r}")


class _Serde:
    """Values reach pymemcache already encoded by :meth:`Cache._encode`."""

    __slots__ = ()

    @staticmethod
    def serialize(key: bytes, value: tuple[bytes, int]) -> tuple[bytes, int]:
        return value

    @staticmethod
    def deserialize(key: Any, data: bytes, flags: int) -> Any:
        return decode(data, flags)


_SERDE = _Serde()


class ServerPool:
    """Connections to one memcached server, borrowed per call by any thread.

    pymemcache's PooledClient does the same behind a context manager, a lock
    and a linear search of the used connections, which costs a fifth of a
    loopback ``get``. Here a list of idle clients is enough: ``pop`` and
    ``append`` are atomic, so threads never share a connection, and a
    connection that raised is dropped rather than reused.
    """

    __slots__ = ("server", "_options", "_idle", "max_idle")

    def __init__(self, server: tuple[str, int], *, max_idle: int | None = None, **options: Any) -> None:
        self.server = server
        self._options = options
        self._idle: list[Client] = []
        self.max_idle = max_idle

    def _call(self, method: Callable[..., Any], *args: Any) -> Any:
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

    def get(self, key: bytes, default: Any) -> Any:
        return self._call(_Client._fetch, key, default)[0]

    def gets(self, key: bytes) -> tuple[Any, Any]:
        return self._call(_Client._fetch, key, None, None)

    def set(self, key: bytes, value: tuple[bytes, int], expire: int) -> bool | None:
        return self._call(_Client._store, b"set", key, value, expire)

    def add(self, key: bytes, value: tuple[bytes, int], expire: int) -> bool:
        return self._call(_Client._store, b"add", key, value, expire)

    def replace(self, key: bytes, value: tuple[bytes, int], expire: int) -> bool:
        return self._call(_Client._store, b"replace", key, value, expire)

    def cas(self, key: bytes, value: tuple[bytes, int], token: Any, expire: int) -> bool | None:
        return self._call(_Client.cas, key, value, token, expire)

    def get_many(self, keys: list[bytes]) -> dict[bytes, Any]:
        return self._call(_Client.get_many, keys)

    def set_many(self, values: dict[bytes, tuple[bytes, int]], expire: int) -> list[bytes]:
        return self._call(_Client.set_many, values, expire)

    def delete(self, key: bytes, noreply: bool = False) -> bool:
        return self._call(_Client.delete, key, noreply)

    def delete_many(self, keys: list[bytes], noreply: bool = False) -> bool:
        return self._call(_Client.delete_many, keys, noreply)

    def touch(self, key: bytes, expire: int, noreply: bool = False) -> bool:
        return self._call(_Client.touch, key, expire, noreply)

    def incr(self, key: bytes, delta: int) -> int | None:
        return self._call(_Client.incr, key, delta)

    def decr(self, key: bytes, delta: int) -> int | None:
        return self._call(_Client.decr, key, delta)

    def flush_all(self, noreply: bool = False) -> bool:
        return self._call(_Client.flush_all, 0, noreply)

    def close(self) -> None:
        idle, self._idle = self._idle, []
        for client in idle:
            client.close()


class MemcacheCache(Cache):
    """memcached on one or several servers (``host:port`` strings or tuples)."""

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
        options: dict[str, Any] = dict(
            serde=_SERDE,
            connect_timeout=connect_timeout,
            timeout=timeout,
            default_noreply=False,  # a set that failed must say so
        )
        self._single = len(self.servers) == 1
        if self._single:
            client: Any = ServerPool(self.servers[0], max_idle=max_pool_size, **options)
        else:
            client = HashClient(
                self.servers,
                use_pooling=True,
                # Never take a server out of the ring: its keys would move to
                # another server and be stale when it returns. While it is
                # failing, HashClient answers for it without the network.
                retry_attempts=2**62,
                retry_timeout=self.retry_delay,
                ignore_exc=False,
                **options,
            )
            client.client_class = _Client
            for pooled in client.clients.values():
                pooled.client_class = _Client
        self._client = client
        # Single server only: when it failed, and so when to try it again.
        self._down_until = 0.0
        self._warned_until: dict[str, float] = {}
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

    # -- failure handling ----------------------------------------------------

    def _is_down(self) -> bool:
        if time.monotonic() < self._down_until:
            return True
        self._down_until = 0.0  # the delay is over: let this call try the server
        return False

    def _failed(self, exc: BaseException, key: bytes | None = None) -> None:
        """A network failure: remember it (one server) and warn once per retry period."""
        now = time.monotonic()
        if self._single:
            self._down_until = now + self.retry_delay
            server = "%s:%s" % self.servers[0]
        elif key is not None:
            server = self._client.hasher.get_node(key)
        else:
            server = ",".join("%s:%s" % s for s in self.servers)
        with self._warn_lock:
            if now < self._warned_until.get(server, 0.0):
                return
            self._warned_until[server] = now + self.retry_delay
        logger.warning(
            "memcached at %s failed (%s: %s); treating it as empty and retrying in %gs",
            server,
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

    # -- the API -------------------------------------------------------------

    def get(self, key: str, default: Any = None) -> Any:
        key = self._key(key)
        if self._down_until and self._is_down():
            return default
        try:
            value = self._client.get(key, _MISSING)
        except _NETWORK_ERRORS as exc:
            self._failed(exc, key)
            return default
        return default if value is _MISSING else value

    def _store(self, command: str, key: str, value: Any, timeout: Any) -> bool:
        server_key = self._key(key)
        encoded, expire = self._prepare(value, timeout)
        if self._down_until and self._is_down():
            return False
        try:
            return bool(getattr(self._client, command)(server_key, encoded, expire))
        except _NETWORK_ERRORS as exc:
            self._failed(exc, server_key)
            return False
        except MemcacheServerError as exc:
            return self._refused(exc, len(encoded[0]))

    def set(self, key: str, value: Any, *, timeout: Any = DEFAULT_TIMEOUT) -> bool:
        return self._store("set", key, value, timeout)

    def add(self, key: str, value: Any, *, timeout: Any = DEFAULT_TIMEOUT) -> bool:
        return self._store("add", key, value, timeout)

    def replace(self, key: str, value: Any, *, timeout: Any = DEFAULT_TIMEOUT) -> bool:
        return self._store("replace", key, value, timeout)

    def delete(self, key: str) -> bool:
        server_key = self._key(key)
        if self._down_until and self._is_down():
            return False
        try:
            return bool(self._client.delete(server_key, noreply=False))
        except _NETWORK_ERRORS as exc:
            self._failed(exc, server_key)
            return False

    def get_many(self, keys: Iterable[str]) -> dict[str, Any]:
        server_keys = {self._key(key): key for key in keys}
        if not server_keys or (self._down_until and self._is_down()):
            return {}
        try:
            found = self._client.get_many(list(server_keys))
        except _NETWORK_ERRORS as exc:
            self._failed(exc)
            return {}
        return {server_keys[key]: value for key, value in found.items()}

    def set_many(self, mapping: Mapping[str, Any], *, timeout: Any = DEFAULT_TIMEOUT) -> list[str]:
        # Everything is encoded (and size-checked) before anything is sent.
        encoded = {}
        originals = {}
        for key, value in mapping.items():
            server_key = self._key(key)
            encoded[server_key] = self._encode(value)
            originals[server_key] = key
        if not encoded:
            return []
        expire = self._expire(timeout)
        if self._down_until and self._is_down():
            return list(mapping)
        try:
            failed = self._client.set_many(encoded, expire)
        except _NETWORK_ERRORS as exc:
            self._failed(exc)
            return list(mapping)
        except MemcacheServerError as exc:
            self._refused(exc, max(len(data) for data, _ in encoded.values()))
            return list(mapping)
        return [originals[key] for key in failed]

    def delete_many(self, keys: Iterable[str]) -> None:
        server_keys = [self._key(key) for key in keys]
        if not server_keys or (self._down_until and self._is_down()):
            return
        try:
            self._client.delete_many(server_keys, noreply=False)
        except _NETWORK_ERRORS as exc:
            self._failed(exc)

    def gets(self, key: str, default: Any = None) -> tuple[Any, Any]:
        server_key = self._key(key)
        if self._down_until and self._is_down():
            return default, None
        try:
            result = self._client.gets(server_key)
        except _NETWORK_ERRORS as exc:
            self._failed(exc, server_key)
            return default, None
        if not result or result[1] is None:  # a miss, or a server in its retry delay
            return default, None
        return result

    def cas(self, key: str, value: Any, token: Any, *, timeout: Any = DEFAULT_TIMEOUT) -> bool:
        if token is None:
            return False
        server_key = self._key(key)
        encoded, expire = self._prepare(value, timeout)
        if self._down_until and self._is_down():
            return False
        try:
            return bool(self._client.cas(server_key, encoded, token, expire))
        except _NETWORK_ERRORS as exc:
            self._failed(exc, server_key)
            return False
        except MemcacheServerError as exc:
            return self._refused(exc, len(encoded[0]))

    def touch(self, key: str, *, timeout: Any = DEFAULT_TIMEOUT) -> bool:
        server_key = self._key(key)
        expire = self._expire(timeout)
        if self._down_until and self._is_down():
            return False
        try:
            return bool(self._client.touch(server_key, expire, noreply=False))
        except _NETWORK_ERRORS as exc:
            self._failed(exc, server_key)
            return False

    def _incr(self, key: bytes, delta: int, decrement: bool) -> int | None:
        if self._down_until and self._is_down():
            return None
        try:
            if decrement:
                result = self._client.decr(key, delta)
            else:
                result = self._client.incr(key, delta)
        except _NETWORK_ERRORS as exc:
            self._failed(exc, key)
            return None
        except MemcacheClientError as exc:
            if "non-numeric" in str(exc):
                raise NotAnIntegerError(
                    "cannot increment or decrement a value that is not an unsigned integer"
                ) from None
            raise CacheError(f"memcached refused incr/decr: {exc}") from exc
        # HashClient answers False for a server in its retry delay.
        return None if result is None or result is False else result

    def clear(self) -> None:
        if self._down_until and self._is_down():
            return
        try:
            self._client.flush_all(noreply=False)
        except _NETWORK_ERRORS as exc:
            self._failed(exc)

    def close(self) -> None:
        self._client.close()

    def __repr__(self) -> str:
        servers = ",".join("%s:%s" % s for s in self.servers)
        return f"<MemcacheCache {servers} prefix={self.key_prefix!r}>"


def _server(spec: str | tuple[str, int]) -> tuple[str, int]:
    if isinstance(spec, tuple):
        return spec[0], int(spec[1])
    host, _, port = spec.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigurationError(f"memcache server {spec!r} must be host:port")
    return host.strip("[]"), int(port)
