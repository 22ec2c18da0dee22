"""SQLAlchemy engines for the SQL-backed services (the store and the local queue).

One engine per database URL per process, shared by every service that uses it,
so the store and the task queue on the same SQLite file share one pool and one
set of PRAGMAs.

SQLite is set up for concurrent use by threads and processes: WAL journal, a busy
timeout instead of immediate "database is locked" errors, and transactions that
SQLAlchemy begins explicitly (pysqlite's own implicit BEGIN is turned off). A
connection can ask for ``BEGIN IMMEDIATE`` -- take the write lock at the start,
so two writers never both read and then fail to upgrade -- with the execution
option ``sqlite_begin="IMMEDIATE"``.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from typing import Any

from ..config import BackendURL

_engines: dict[str, Any] = {}
_lock = threading.Lock()

SQLITE_BUSY_TIMEOUT_MS = 30_000

# URL query options read here or by the services; the rest go to the database driver.
OWN_OPTIONS = ("pool_size", "max_overflow", "busy_timeout_ms", "table_prefix")


def get_engine(url: BackendURL) -> Any:
    """The process's shared engine for ``url`` (``sqlite:///…`` or ``postgresql://…``)."""
    engine = _engines.get(url.url)
    if engine is None:
        with _lock:
            engine = _engines.get(url.url)
            if engine is None:
                engine = _engines[url.url] = _create(url)
    return engine


def dispose_engine(url: BackendURL) -> None:
    with _lock:
        engine = _engines.pop(url.url, None)
    if engine is not None:
        engine.dispose()


def dispose_engines(contains: str = "") -> int:
    """Close and forget the engines whose URL contains ``contains`` (every one by
    default), so their connections go back to the server; returns how many."""
    with _lock:
        keys = [key for key in _engines if contains in key]
        engines = [_engines.pop(key) for key in keys]
    for engine in engines:
        engine.dispose()
    return len(engines)


def sqlite_path(url: BackendURL) -> str:
    """``sqlite:///rel.db`` is relative to the working directory, ``sqlite:////abs.db`` absolute.

    Percent-escapes are decoded here, once (``%20`` is a space, ``%25`` a percent
    sign), and the file path goes to SQLAlchemy as it is, not through its URL parser.
    """
    from urllib.parse import unquote

    return unquote(url.path[1:])


def _create(url: BackendURL) -> Any:
    import sqlalchemy
    from sqlalchemy import event

    if url.scheme == "sqlite":
        path = sqlite_path(url)
        if path != ":memory:":
            folder = os.path.dirname(os.path.abspath(path))
            os.makedirs(folder, exist_ok=True)
        busy_ms = int(url.option("busy_timeout_ms", SQLITE_BUSY_TIMEOUT_MS, int))
        engine = sqlalchemy.create_engine(
            sqlalchemy.engine.URL.create("sqlite+pysqlite", database=path),
            connect_args={"check_same_thread": False, "timeout": busy_ms / 1000},
            pool_size=int(url.option("pool_size", 8, int)),
            max_overflow=int(url.option("max_overflow", 8, int)),
        )

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_connection: Any, record: Any) -> None:
            dbapi_connection.isolation_level = None  # SQLAlchemy emits BEGIN itself
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute(f"PRAGMA busy_timeout={busy_ms}")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _on_begin(connection: Any) -> None:
            mode = connection.get_execution_options().get("sqlite_begin", "")
            connection.exec_driver_sql(f"BEGIN {mode}".strip())

        return engine

    # postgresql://user:pw@host:port/db?options=... : query items other than our
    # own options go to libpq as they are.
    target = sqlalchemy.engine.make_url("postgresql+psycopg://" + url.url.split("://", 1)[1])
    target = target.difference_update_query(OWN_OPTIONS)
    return sqlalchemy.create_engine(
        target,
        pool_pre_ping=True,
        pool_size=int(url.option("pool_size", 8, int)),
        max_overflow=int(url.option("max_overflow", 8, int)),
    )


class Prepared:
    """A Core statement compiled once for one engine's dialect.

    The hot operations of the store and the queue run these on the pooled DBAPI
    connection: SQLAlchemy's per-execution machinery (statement coercion, cache
    keys, result wrapping) costs more than a small SQLite statement itself. The
    SQL and the parameter order are still SQLAlchemy's, so one statement
    definition serves both dialects.
    """

    __slots__ = ("sql", "order")

    def __init__(self, statement: Any, engine: Any, *, column_keys: list[str] | None = None) -> None:
        compiled = statement.compile(dialect=engine.dialect, column_keys=column_keys)
        self.sql: str = compiled.string
        self.order = tuple(compiled.positiontup) if compiled.positional else None

    def params(self, values: dict[str, Any]) -> Any:
        """The parameters in the form the driver takes (a tuple for SQLite)."""
        order = self.order
        return values if order is None else tuple(values[name] for name in order)


@contextlib.contextmanager
def dbapi_cursor(engine: Any, *, write_lock: bool = False) -> Iterator[Any]:
    """A cursor on a pooled DBAPI connection; commits when the block ends, rolls
    back if it raises.

    ``write_lock=True`` makes the block one transaction that holds SQLite's write
    lock from the start (``BEGIN IMMEDIATE``), for read-then-write work; on
    PostgreSQL the block is always one transaction and takes row locks with
    ``SELECT … FOR UPDATE``. Without it, each statement on SQLite is its own
    transaction: use it for blocks of one statement.
    """
    connection = engine.raw_connection()
    try:
        cursor = connection.cursor()
        try:
            if write_lock and engine.dialect.name == "sqlite":  # implicit BEGIN is off
                cursor.execute("BEGIN IMMEDIATE")
            yield cursor
        finally:
            cursor.close()
        connection.commit()
    except BaseException:
        try:
            connection.rollback()
        except Exception:
            # The connection is gone (the server ended it): the transaction went
            # with it. Drop the connection from the pool, and report the error
            # that happened, not the failed rollback.
            connection.invalidate()
        raise
    finally:
        connection.close()  # back to the pool
