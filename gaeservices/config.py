"""Configuration: one :class:`Services` object owns the configured backends.

Backends are named by URL (``memcache://10.0.0.1:11211``, ``sqlite:///tmp/x.db``…).
Each URL scheme maps, in :data:`BACKENDS`, to a ``module:Class`` path that is
imported only when the backend is first used, so ``import gaeservices`` never
pays for the App Engine SDK, SQLAlchemy, Celery or Django.

URLs are validated when the :class:`Services` object is built: a typo in a
deployment's environment fails at start-up with a message naming the variable,
the value and the accepted forms, not on the first request that needs it.
"""

from __future__ import annotations

import importlib
import logging
import math
import os
import re
import secrets
import threading
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Literal, cast, overload
from urllib.parse import parse_qsl, urlsplit

from .exceptions import BackendUnavailableError, ConfigurationError

if TYPE_CHECKING:  # the contracts, for annotations only: importing them here costs nothing
    from itsdangerous import Signer, TimestampSigner

    from .cache.api import Cache
    from .mail.backend import MailBackend
    from .store.api import Store
    from .tasks.queue import Queue

logger = logging.getLogger("gaeservices.config")

__all__ = [
    "BACKENDS",
    "Services",
    "get_services",
    "set_services",
    "on_app_engine",
    "BackendURL",
]


class BackendURL:
    """A parsed backend URL: scheme, hosts, path, credentials and query options."""

    __slots__ = ("url", "scheme", "hosts", "path", "username", "password", "options")

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        if "#" in url:  # urlsplit drops a fragment: a path or password would end there
            raise ValueError("'#' starts a URL fragment; write a '#' in a path or password as %23")
        self.url = url
        self.scheme = parts.scheme
        netloc = parts.netloc
        self.username = self.password = None
        if "@" in netloc:
            userinfo, netloc = netloc.rsplit("@", 1)
            user, _, password = userinfo.partition(":")
            from urllib.parse import unquote

            self.username = unquote(user) or None
            self.password = unquote(password) or None
        self.hosts: list[tuple[str, int | None]] = []
        for item in filter(None, netloc.split(",")):
            host, port = _split_host_port(item)
            self.hosts.append((host, port))
        self.path = parts.path
        self.options = dict(parse_qsl(parts.query, keep_blank_values=True))

    def option(self, name: str, default: Any = None, cast: Callable[[str], Any] = str) -> Any:
        value = self.options.get(name)
        if value is None or value == "":
            return default
        if cast is bool:
            return value.lower() in ("1", "true", "yes", "on")
        return cast(value)

    def __repr__(self) -> str:
        return f"BackendURL({_redact(self.url)!r})"


def _split_host_port(item: str) -> tuple[str, int | None]:
    if item.startswith("["):  # [::1]:11211
        host, _, rest = item[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    else:
        host, _, port = item.rpartition(":") if ":" in item else (item, "", "")
        if ":" in host:
            raise ValueError(f"IPv6 addresses go in brackets, as [::1]:11211, not {item!r}")
    if not host:
        raise ValueError(f"no host in {item!r}")
    if port:
        if not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"bad port in {item!r}")
        return host, int(port)
    return host, None


# scheme://user:PASSWORD@ -- up to the last "@", so a password holding a raw "@",
# "#" or "/" (which URL parsing would split elsewhere) is still hidden whole.
# A URL may nest another (celery://amqp://user:PASSWORD@...): the password is the
# innermost URL's, after its user name.
_SCHEME = r"[A-Za-z][A-Za-z0-9+.\-]*://"
_PASSWORD = re.compile(rf"^((?:{_SCHEME})+(?!{_SCHEME})[^:/@?#]*:)(.*)@", re.DOTALL)


def _redact(url: str) -> str:
    """The URL with any password replaced, for messages and logs.

    Works on the text rather than a parse, so it also serves URLs too malformed
    to parse (an unclosed IPv6 bracket), which are exactly the ones reported.
    """
    return _PASSWORD.sub(r"\1***@", url, count=1)


# --- the registry ------------------------------------------------------------
#
# kind -> scheme -> Backend. A validator receives the parsed URL and raises
# ValueError with a reason; ``options`` lists the query options the backend reads
# (None: the URL's query goes on to a driver, as PostgreSQL's libpq parameters do).


class Backend:
    """A registry entry: where the class lives, its URL form, how to check a URL."""

    __slots__ = ("path", "form", "validate", "options")

    def __init__(
        self,
        path: str,
        form: str,
        validate: Callable[[BackendURL], None],
        options: frozenset[str] | None = frozenset(),
    ) -> None:
        self.path = path
        self.form = form
        self.validate = validate
        self.options = options


def _needs_hosts(url: BackendURL) -> None:
    if not url.hosts:
        raise ValueError("at least one host:port is required")
    for host, port in url.hosts:
        if port is None:
            raise ValueError(f"host {host!r} has no port")


def _needs_path(url: BackendURL) -> None:
    if not url.path or url.path == "/":
        raise ValueError("a path is required")


def _nothing_else(url: BackendURL) -> None:
    if url.hosts or url.path.strip("/"):
        raise ValueError("this backend takes no host or path")


def _appengine_cache(url: BackendURL) -> None:
    _nothing_else(url)
    # The SDK's limit of 1,000,000 bytes, less the flag byte (gaeservices.cache.appengine).
    size = url.options.get("max_item_size")
    if size is not None:
        _size(size)
        from .cache.api import parse_size

        if parse_size(url, "max_item_size", size) > 999_999:
            raise ValueError("App Engine memcache stores values of at most 999999 bytes here")


def _sqlite(url: BackendURL) -> None:
    if url.hosts:
        raise ValueError("sqlite URLs have no host: use sqlite:///relative.db or sqlite:////abs.db")
    _needs_path(url)
    if url.path[1:] == ":memory:":
        raise ValueError(
            "an in-memory database (:memory:) belongs to one connection, and the store and "
            "queue use a pool of them: give a file path"
        )


def _file_folder(url: BackendURL) -> None:
    if url.hosts:
        raise ValueError("file URLs have no host: use file:///absolute/folder")
    _needs_path(url)


def _anything(url: BackendURL) -> None:
    return None


def _smtp(url: BackendURL) -> None:
    if len(url.hosts) != 1:
        raise ValueError("one host[:port] is required")
    if url.path.strip("/"):
        raise ValueError("an SMTP URL has no path")
    if url.scheme == "smtps" and url.option("starttls", False, bool):
        raise ValueError("smtps:// is TLS from the start; starttls=1 belongs to smtp://")
    if url.password and not url.username:
        raise ValueError("a password needs a user name")


_CELERY_BROKERS = ("amqp", "amqps", "pyamqp", "redis", "rediss")
_CELERY_OPTIONS = frozenset({"prefix", "max_payload", "tombstone", "hold", "visibility_timeout"})


def _celery(url: BackendURL) -> None:
    """celery://BROKER-URL: the broker's own URL follows the scheme, whole."""
    inner = url.url[len("celery://"):].partition("?")[0]
    scheme, sep, _ = inner.partition("://")
    if not sep:
        raise ValueError("the broker's URL follows celery://, as in celery://redis://127.0.0.1:6379/0")
    if scheme not in _CELERY_BROKERS:
        raise ValueError(f"unsupported broker {scheme!r}: use amqp:// (RabbitMQ) or redis://")
    broker = BackendURL(inner)
    if not broker.hosts:
        raise ValueError("the broker URL has no host")
    if len(broker.hosts) > 1:
        raise ValueError("give one broker host")
    if scheme.startswith("redis") and broker.path.strip("/") and not broker.path.strip("/").isdigit():
        raise ValueError(f"a Redis database is a number (redis://host:6379/0), not {broker.path[1:]!r}")
    for name, value in url.options.items():
        if name.startswith("ssl_"):  # the broker's TLS settings (kombu reads them)
            continue
        if name not in _CELERY_OPTIONS:
            raise ValueError(
                f"unknown option {name}; accepted: {', '.join(sorted(_CELERY_OPTIONS))} and the broker's ssl_*"
            )
        if name == "visibility_timeout" and not scheme.startswith("redis"):
            raise ValueError("visibility_timeout is a Redis broker's setting (RabbitMQ requeues at once)")
        if name == "prefix" and not re.fullmatch(r"[A-Za-z0-9._-]*", value):
            raise ValueError(f"prefix={value!r} may hold letters, digits, '.', '_' and '-' only")
        check = _OPTION_CHECKS.get(name)
        if check is not None and value != "":
            try:
                check(value)
            except ValueError as problem:
                raise ValueError(f"{name}={value!r} {problem}") from None


_CACHE_OPTIONS = frozenset({"key_prefix", "default_timeout", "max_item_size"})
_SQL_OPTIONS = frozenset({"busy_timeout_ms", "pool_size", "max_overflow", "table_prefix"})


# Option values are checked here, with the URL, so that a typo in one fails when
# Services is built rather than when the backend is first used. A check raises
# ValueError with what it expects; the App Engine item limit, which depends on
# the SDK, is left to the backend.


def _number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise ValueError("is not a number")
    return value


def _count(text: str) -> None:
    if not text.strip().isdigit():
        raise ValueError("is not a whole number >= 0")


def _seconds(text: str) -> None:
    if _number(text) < 0:
        raise ValueError("is not a number of seconds >= 0")


def _positive_seconds(text: str) -> None:
    if _number(text) <= 0:
        raise ValueError("is not a number of seconds > 0")


def _timeout(text: str) -> None:
    if text.lower() not in ("", "none", "never") and _number(text) <= 0:
        raise ValueError("is not a number of seconds > 0, or none")


def _flag(text: str) -> None:
    if text.lower() not in ("0", "1", "true", "false", "yes", "no", "on", "off"):
        raise ValueError("is not a flag (1 or 0)")


def _size(text: str) -> None:
    match = re.fullmatch(r"\s*(\d+)\s*[kKmMgG]?[bB]?\s*", text)
    if not match or int(match.group(1)) == 0:
        raise ValueError("is not a size such as 1048576 or 1m")


def _key_prefix(text: str) -> None:
    # What a cache key prefix may hold: memcached's key characters, less the
    # backtick that marks digested keys (gaeservices.cache.api).
    if not re.fullmatch(r"[!-_a-~]*", text) or len(text) > 209:
        raise ValueError("is not printable ASCII without spaces or backticks, of at most 209 characters")


def _queue_yaml(text: str) -> None:
    from .tasks.queueconfig import load_queue_yaml

    load_queue_yaml(text)  # ConfigurationError (a ValueError) says what is wrong


_OPTION_CHECKS: dict[str, Callable[[str], Any]] = {
    "pool_size": _count,
    "max_overflow": _count,
    "busy_timeout_ms": _count,
    "max_pool_size": _count,
    "max_payload": _count,
    "connect_timeout": _seconds,
    "timeout": _seconds,
    "retry_delay": _seconds,
    "tombstone": _seconds,
    "lease": _positive_seconds,
    "hold": _positive_seconds,
    "visibility_timeout": _positive_seconds,
    "default_timeout": _timeout,
    "key_prefix": _key_prefix,
    "max_item_size": _size,
    "max_bytes": _size,
    "idle": _seconds,
    "starttls": _flag,
    "verify": _flag,
    "queue_yaml": _queue_yaml,
}

BACKENDS: dict[str, dict[str, Backend]] = {
    "cache": {
        "memory": Backend(
            "gaeservices.cache.memory:MemoryCache",
            "memory://[?max_bytes=64m&max_item_size=1m&default_timeout=S&key_prefix=P]",
            _nothing_else,
            _CACHE_OPTIONS | {"max_bytes"},
        ),
        "memcache": Backend(
            "gaeservices.cache.memcache:MemcacheCache",
            "memcache://host:port[,host:port...][?connect_timeout=S&timeout=S&retry_delay=S]",
            _needs_hosts,
            _CACHE_OPTIONS | {"connect_timeout", "timeout", "retry_delay", "max_pool_size"},
        ),
        "appengine": Backend(
            "gaeservices.cache.appengine:AppEngineCache", "appengine://", _appengine_cache, _CACHE_OPTIONS
        ),
    },
    "store": {
        "sqlite": Backend(
            "gaeservices.store.sql:SQLStore", "sqlite:///path/to/file.db", _sqlite, _SQL_OPTIONS
        ),
        "postgresql": Backend(
            "gaeservices.store.sql:SQLStore",
            "postgresql://[user[:password]@]host[:port]/dbname",
            _anything,
            None,
        ),
        "datastore": Backend(
            "gaeservices.store.datastore:DatastoreStore",
            "datastore://[?namespace=N]",
            _nothing_else,
            frozenset({"namespace"}),
        ),
    },
    "queue": {
        "local": Backend(
            "gaeservices.tasks.local:LocalQueue",
            "local://[?lease=S&tombstone=S&max_payload=BYTES&queue_yaml=PATH]",
            _nothing_else,
            frozenset({"lease", "tombstone", "max_payload", "queue_yaml"}),
        ),
        "immediate": Backend(
            "gaeservices.tasks.immediate:ImmediateQueue",
            "immediate://",
            _nothing_else,
            frozenset({"max_payload"}),
        ),
        "appengine": Backend(
            "gaeservices.tasks.appengine:AppEngineQueue",
            "appengine://",
            _nothing_else,
            frozenset({"max_payload"}),
        ),
        # The broker's URL (and its ssl_* options) ride inside: _celery checks the query.
        "celery": Backend(
            "gaeservices.tasks.celery:CeleryQueue",
            "celery://amqp://user:password@host:5672/vhost or celery://redis://[:password@]host:6379/db"
            "[?prefix=P&max_payload=BYTES&tombstone=S&hold=S&visibility_timeout=S]",
            _celery,
            None,
        ),
    },
}
_SMTP_OPTIONS = frozenset({"starttls", "timeout", "idle", "cafile", "verify", "local_hostname"})
BACKENDS["mail"] = {
    "smtp": Backend(
        "gaeservices.mail.smtp:SMTPBackend",
        "smtp://[user:password@]host[:port][?starttls=1&timeout=S&idle=S&cafile=PATH&verify=0]",
        _smtp,
        _SMTP_OPTIONS,
    ),
    "smtps": Backend(
        "gaeservices.mail.smtp:SMTPBackend",
        "smtps://[user:password@]host[:port][?timeout=S&idle=S&cafile=PATH&verify=0]",
        _smtp,
        _SMTP_OPTIONS,
    ),
    "appengine": Backend("gaeservices.mail.appengine:AppEngineMailBackend", "appengine://", _nothing_else),
    "console": Backend("gaeservices.mail.console:ConsoleMailBackend", "console://", _nothing_else),
    "file": Backend("gaeservices.mail.file:FileMailBackend", "file:///path/to/folder", _file_folder),
    "memory": Backend("gaeservices.mail.memory:MemoryMailBackend", "memory://", _nothing_else),
}
BACKENDS["store"]["postgres"] = BACKENDS["store"]["postgresql"]

ENV_NAMES = {
    "cache": "GAESERVICES_CACHE",
    "store": "GAESERVICES_STORE",
    "queue": "GAESERVICES_QUEUE",
    "mail": "GAESERVICES_MAIL",
}

_EXTRA_FOR_MODULE = {
    "google": "appengine",
    "sqlalchemy": "sql",
    "psycopg": "sql",
    "celery": "celery",
    "redis": "celery",
    "django": "django",
    "aiosmtpd": "mail",
    "ruamel": "yaml",
}


def on_app_engine(environ: Mapping[str, str] | None = None) -> bool:
    """True when running on App Engine's standard or flexible runtime.

    The runtime sets ``GAE_ENV=standard`` (standard) and ``GAE_INSTANCE``;
    the local SDK dev server sets ``GAE_ENV=localdev``, which is *not* App Engine.
    """
    environ = os.environ if environ is None else environ
    return environ.get("GAE_ENV", "").startswith("standard") or (
        "GAE_INSTANCE" in environ and "GAE_SERVICE" in environ
    )


def parse_backend_url(kind: str, url: str, variable: str | None = None) -> BackendURL:
    """Parse and validate ``url`` as a backend of ``kind``; raise ConfigurationError."""
    variable = variable or ENV_NAMES.get(kind, kind)
    forms = BACKENDS[kind]
    accepted = ", ".join(dict.fromkeys(entry.form for entry in forms.values()))
    if not isinstance(url, str) or "://" not in url:
        raise ConfigurationError(f"{variable}={url!r} is not a URL; accepted forms: {accepted}")
    try:
        parsed = BackendURL(url)
    except ValueError as exc:
        raise ConfigurationError(
            f"{variable}={_redact(url)!r} is malformed ({exc}); accepted forms: {accepted}"
        ) from None
    entry = forms.get(parsed.scheme)
    if entry is None:
        raise ConfigurationError(
            f"{variable}={_redact(url)!r} names an unknown backend {parsed.scheme!r}; "
            f"accepted forms: {accepted}"
        )
    try:
        entry.validate(parsed)
        if entry.options is not None:
            unknown = sorted(set(parsed.options) - entry.options)
            if unknown:
                raise ValueError(
                    f"unknown option(s) {', '.join(unknown)}; "
                    f"accepted: {', '.join(sorted(entry.options)) or 'none'}"
                )
        # With options=None the rest of the query belongs to the driver: check only ours.
        own = entry.options if entry.options is not None else _SQL_OPTIONS
        for name in sorted(own & parsed.options.keys()):
            check, value = _OPTION_CHECKS.get(name), parsed.options[name]
            if check is not None and value != "":
                try:
                    check(value)
                except ValueError as problem:
                    raise ValueError(f"{name}={value!r} {problem}") from None
    except ValueError as exc:
        raise ConfigurationError(
            f"{variable}={_redact(url)!r} is malformed ({exc}); expected {entry.form}"
        ) from None
    return parsed


def import_backend(path: str) -> Any:
    """Import ``module:attribute``; a missing optional dependency names the extra to install."""
    module_name, _, attribute = path.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        unavailable = _unavailable(path, exc)
        if unavailable is exc:
            raise
        raise unavailable from exc
    return getattr(module, attribute)


def _unavailable(path: str, exc: ImportError) -> ImportError:
    """``exc`` as a BackendUnavailableError naming the extra, if an extra provides the
    missing module; else ``exc`` itself (a bug, not a missing install)."""
    if isinstance(exc, BackendUnavailableError):
        return exc
    extra = _EXTRA_FOR_MODULE.get((exc.name or "").split(".")[0])
    if extra is None:
        return exc
    return BackendUnavailableError(f"{path} needs {exc.name!r}: pip install 'gaeservices[{extra}]'", name=exc.name)


def load_callable(path: str, variable: str = "callable") -> Callable[..., Any]:
    """Resolve ``package.module:callable`` (a dotted attribute path after the colon)."""
    module_name, sep, attribute = path.partition(":")
    if not sep or not module_name or not attribute:
        raise ConfigurationError(f"{variable}={path!r} must have the form package.module:callable")
    obj: Any = importlib.import_module(module_name)
    for name in attribute.split("."):
        obj = getattr(obj, name)
    if not callable(obj):
        raise ConfigurationError(f"{variable}={path!r} is not callable")
    return obj


# --- the Services object -----------------------------------------------------

_UNSET: Any = object()


class Services:
    """The configured backends of one application.

    Every argument is optional; what is not given is read from ``environ``
    (``os.environ`` by default), and what is not there takes the embedded
    default, or the App Engine service when running on App Engine. Backend
    arguments take a URL string or a ready backend object.

    Backends are built on first use and then shared; building one is
    thread-safe. URLs are validated here, at construction.
    """

    def __init__(
        self,
        *,
        secret_key: str | bytes | list[str | bytes] | None = None,
        data_dir: str | None = None,
        cache: Cache | str | None = None,
        store: Store | str | None = None,
        queue: Queue | str | None = None,
        mail: MailBackend | str | None = None,
        email_queue_name: str | None = None,
        bootstrap: str | Callable[[], Any] | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        env = os.environ if environ is None else environ
        self.environ = env
        self.on_app_engine = on_app_engine(env)
        self.data_dir = os.path.abspath(
            data_dir or env.get("GAESERVICES_DATA_DIR") or os.path.join(os.getcwd(), ".gaeservices")
        )
        self.email_queue_name = email_queue_name or env.get("EMAIL_QUEUE_NAME") or "default"
        if not re.fullmatch(r"[a-zA-Z0-9-]{1,100}", self.email_queue_name):
            raise ConfigurationError(
                f"EMAIL_QUEUE_NAME={self.email_queue_name!r} is not a queue name: "
                "letters, digits and hyphens, 1-100 of them"
            )
        bootstrap = bootstrap if bootstrap is not None else env.get("GAESERVICES_BOOTSTRAP") or None
        if isinstance(bootstrap, str) and ":" not in bootstrap:
            raise ConfigurationError(
                f"GAESERVICES_BOOTSTRAP={bootstrap!r} must have the form package.module:callable"
            )
        self.bootstrap = bootstrap

        source = "secret_key"
        if secret_key is None:
            secret_key, source = env.get("GAESERVICES_SECRET_KEY"), "GAESERVICES_SECRET_KEY"
        if secret_key is None and env.get("DJANGO_SETTINGS_MODULE"):
            # A Django project signs with its own SECRET_KEY (and fallbacks), so
            # its web processes, workers and deferred endpoint agree on one key.
            secret_key = import_backend("gaeservices.django.conf:secret_keys")()
            source = "SECRET_KEY"
        self._secret_keys = _checked_keys(secret_key, source) if secret_key is not None else None
        if self._secret_keys is None and self.on_app_engine:
            raise ConfigurationError(
                "GAESERVICES_SECRET_KEY must be set on App Engine: instances share no disk, "
                "so a generated key would differ from one instance to the next"
            )
        if self._secret_keys is None:
            # A key generated earlier is checked now; a new one is generated on first use.
            try:
                self._secret_keys = [_key_file(os.path.join(self.data_dir, "secret_key"))]
            except FileNotFoundError:
                pass

        defaults = self._defaults()
        self._specs: dict[str, Any] = {}
        given: Any
        for kind, given in (("cache", cache), ("store", store), ("queue", queue), ("mail", mail)):
            variable = ENV_NAMES[kind]
            if given is None:
                from_env = env.get(variable)
                if from_env:
                    given = from_env
                else:
                    given, variable = defaults[kind], f"{variable} (default)"
            if isinstance(given, str):
                self._specs[kind] = parse_backend_url(kind, given, variable)
            else:
                self._specs[kind] = given
        self._backends: dict[str, Any] = {}
        self._lock = threading.RLock()
        self._signers: dict[tuple[str, bool], Signer] = {}

    def _defaults(self) -> dict[str, str]:
        if self.on_app_engine:
            return {
                "cache": "appengine://",
                "store": "datastore://",
                "queue": "appengine://",
                "mail": "appengine://",
            }
        return {
            "cache": "memory://",
            "store": "sqlite:///" + os.path.join(self.data_dir, "store.sqlite3"),
            "queue": "local://",
            "mail": "console://",
        }

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Services:
        """Build from environment variables; keyword arguments override them."""
        return cls(environ=environ, **overrides)

    # -- backends ---------------------------------------------------------

    def backend_url(self, kind: str) -> BackendURL | None:
        """The parsed URL a backend was configured with (None for a given object)."""
        spec = self._specs[kind]
        return spec if isinstance(spec, BackendURL) else None

    def _backend(self, kind: str) -> Any:
        backend = self._backends.get(kind)
        if backend is not None:
            return backend
        with self._lock:
            backend = self._backends.get(kind)
            if backend is None:
                spec = self._specs[kind]
                if isinstance(spec, BackendURL):
                    path = BACKENDS[kind][spec.scheme].path
                    cls = import_backend(path)
                    try:  # a backend may import its driver when it is built
                        backend = cls.from_url(spec, self)
                    except ImportError as exc:
                        unavailable = _unavailable(path, exc)
                        if unavailable is exc:
                            raise
                        raise unavailable from exc
                else:
                    backend = spec
                self._backends[kind] = backend
            return backend

    @property
    def cache(self) -> Cache:
        """The cache backend (:class:`gaeservices.cache.api.Cache`)."""
        return cast("Cache", self._backend("cache"))

    @property
    def store(self) -> Store:
        """The durable key-value store (:class:`gaeservices.store.api.Store`)."""
        return cast("Store", self._backend("store"))

    @property
    def queue(self) -> Queue:
        """The task queue backend (:class:`gaeservices.tasks.queue.Queue`)."""
        return cast("Queue", self._backend("queue"))

    @property
    def mail(self) -> MailBackend:
        """The mail backend (:class:`gaeservices.mail.backend.MailBackend`)."""
        return cast("MailBackend", self._backend("mail"))

    def close(self) -> None:
        """Close every backend that was built (connections, pools, threads)."""
        with self._lock:
            backends, self._backends = self._backends, {}
        for backend in backends.values():
            close = getattr(backend, "close", None)
            if close is not None:
                try:
                    close()
                except Exception:  # closing must not hide the caller's own error
                    logger.exception("closing %r failed", backend)

    # -- secrets ----------------------------------------------------------

    @property
    def secret_keys(self) -> list[bytes]:
        """Signing keys, newest first. Generated once into the data dir if none is set."""
        if self._secret_keys is None:
            with self._lock:
                if self._secret_keys is None:
                    self._secret_keys = [self._generated_key()]
        return self._secret_keys

    def _generated_key(self) -> bytes:
        path = os.path.join(self.data_dir, "secret_key")
        try:
            return _key_file(path)
        except FileNotFoundError:
            pass
        import tempfile

        os.makedirs(self.data_dir, exist_ok=True)
        key = secrets.token_urlsafe(48).encode()
        # Written whole under a temporary name, then linked into place: the link
        # fails if another process got there first, and nobody ever reads a
        # half-written (empty) key file.
        fd, temporary = tempfile.mkstemp(prefix=".secret_key.", dir=self.data_dir)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(key)
                f.flush()
                os.fsync(f.fileno())
            try:
                os.link(temporary, path)
            except FileExistsError:  # another process won the race: use its key
                return _key_file(path)
        finally:
            os.unlink(temporary)
        logger.warning(
            "GAESERVICES_SECRET_KEY is not set: generated a signing key into %s. "
            "Set GAESERVICES_SECRET_KEY for any deployment with more than one machine.",
            path,
        )
        return key

    @overload
    def signer(self, salt: str, *, timestamped: Literal[False] = False) -> Signer: ...
    @overload
    def signer(self, salt: str, *, timestamped: Literal[True]) -> TimestampSigner: ...
    @overload
    def signer(self, salt: str, *, timestamped: bool) -> Signer: ...

    def signer(self, salt: str, *, timestamped: bool = False) -> Signer:
        """An itsdangerous signer for ``salt``: the newest key signs, every key verifies."""
        signer = self._signers.get((salt, timestamped))
        if signer is None:
            import itsdangerous

            cls = itsdangerous.TimestampSigner if timestamped else itsdangerous.Signer
            # itsdangerous signs with the *last* key of the list; ours is newest first.
            signer = cls(list(reversed(self.secret_keys)), salt=salt, digest_method=_sha256)
            self._signers[(salt, timestamped)] = signer
        return signer

    def describe(self, kind: str) -> str:
        """Backend ``kind`` for people: its URL with any password hidden, or the given object's class."""
        spec = self._specs[kind]
        return _redact(spec.url) if isinstance(spec, BackendURL) else type(spec).__name__

    def __repr__(self) -> str:
        return f"<Services { {kind: self.describe(kind) for kind in self._specs} }>"


def _sha256(data: bytes = b"") -> Any:
    import hashlib

    return hashlib.sha256(data)


# HMAC-SHA256 keys shorter than this are guessable offline from one signed cookie.
MIN_KEY_BYTES = 32


_NEW_KEY_HINT = "python -c 'import secrets; print(secrets.token_urlsafe(48))'"


def _checked_keys(value: str | bytes | list[str | bytes], source: str) -> list[bytes]:
    """The signing keys, newest first; ConfigurationError for none, or one too short.

    A ``str`` holds comma-separated keys (as the environment variable does); a
    ``bytes`` value is one key, used as it is (random bytes may hold a comma); a
    list holds one key per item.
    """
    items: list[str | bytes]
    if isinstance(value, str):
        items = [part.strip() for part in value.split(",")]
    elif isinstance(value, bytes):
        items = [value]
    else:
        items = list(value)
    for item in items:
        if not isinstance(item, (str, bytes)):
            raise ConfigurationError(f"{source}: keys are str or bytes, not {type(item).__name__}")
    keys = [k.encode() if isinstance(k, str) else k for k in items]
    if not any(keys):
        raise ConfigurationError(
            f"{source} is set but holds no key: give one of at least {MIN_KEY_BYTES} bytes "
            f"({_NEW_KEY_HINT}), or unset it to have one generated into the data dir"
        )
    for position, key in enumerate(keys, 1):
        if len(key) < MIN_KEY_BYTES:
            raise ConfigurationError(
                f"{source}: key {position} of {len(keys)} is "
                f"{'empty' if not key else f'{len(key)} bytes'}; each key needs at least "
                f"{MIN_KEY_BYTES} ({_NEW_KEY_HINT})"
            )
    return keys


def _key_file(path: str) -> bytes:
    """The generated key kept at ``path``; ConfigurationError if it is not one, or
    cannot be read (FileNotFoundError if there is none)."""
    try:
        with open(path, "rb") as f:
            key = f.read().strip()
    except FileNotFoundError:
        raise
    except OSError as error:
        raise ConfigurationError(f"cannot read the signing key {path}: {error.strerror or error}") from None
    if len(key) < MIN_KEY_BYTES:
        raise ConfigurationError(
            f"{path} holds {len(key)} bytes, not a signing key of at least {MIN_KEY_BYTES}: "
            "delete it to have a new key generated (what it signed becomes invalid), "
            "or set GAESERVICES_SECRET_KEY"
        )
    return key


# --- the process-wide default ------------------------------------------------

_default: Services | None = None
_default_lock = threading.Lock()


def get_services(*, factory: Callable[[], Services] | None = None) -> Services:
    """The process-wide :class:`Services`, built from the environment on first use.

    ``factory`` builds it instead when none exists yet (an adapter that knows
    more than the environment, such as Django's settings, passes one).
    """
    global _default
    services = _default
    if services is None:
        with _default_lock:
            if _default is None:
                _default = factory() if factory is not None else Services.from_environ()
            services = _default
    return services


def set_services(services: Services | None) -> Services | None:
    """Install ``services`` as the process-wide default; returns the previous one.

    ``set_services(None)`` forgets the default, so the next :func:`get_services`
    rebuilds it from the environment.
    """
    global _default
    with _default_lock:
        previous, _default = _default, services
    return previous
