"""The store on SQLite or PostgreSQL, through SQLAlchemy Core.

One code path serves both dialects; only the ``INSERT … ON CONFLICT`` construct
is taken from the dialect's module (both databases speak the same upsert). The
statements are built and compiled once, when the store is made, and run on the
pooled DBAPI connection (see :class:`~gaeservices.store.engine.Prepared`).
The table is created on first use, idempotently, in the connection's schema
(``?options=-csearch_path%3Dmyschema`` on PostgreSQL) under an optional
``?table_prefix=``.

Atomicity lives in the database: ``add`` is one ``INSERT … ON CONFLICT DO UPDATE
… WHERE expired``, ``delete(expected=…)`` one conditional ``DELETE``, and
``update`` one transaction holding the row's write lock (``SELECT … FOR UPDATE``
on PostgreSQL, ``BEGIN IMMEDIATE`` on SQLite).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc

from ..config import BackendURL
from ..exceptions import StoreError
from .api import Updater, check_value, expiry, storage_id
from .engine import Prepared, dbapi_cursor, get_engine

__all__ = ["SQLStore"]

TABLE_NAME = "gaeservices_store"

# SQLite's default limit on bound parameters is 999 on old builds.
_CHUNK = 500
_UPDATE_ATTEMPTS = 20


class SQLStore:
    """The durable store in one SQL table: ``id`` (primary key), ``value``, ``expires``."""

    def __init__(self, engine: Any, *, table_prefix: str = "") -> None:
        self.engine = engine
        self.dialect = engine.dialect.name
        insert: Callable[..., Any]  # the dialect's INSERT, which knows ON CONFLICT
        if self.dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        elif self.dialect == "sqlite":
            from sqlalchemy.dialects.sqlite import insert
        else:
            raise StoreError(f"the SQL store supports SQLite and PostgreSQL, not {self.dialect}")
        self._insert = insert
        metadata = sa.MetaData()
        name = table_prefix + TABLE_NAME
        self.table = sa.Table(
            name,
            metadata,
            sa.Column("id", sa.String(), primary_key=True),
            sa.Column("value", sa.LargeBinary(), nullable=False),
            sa.Column("expires", sa.Float(), nullable=True),
            sa.Index(f"{name}_expires", "expires"),
        )
        # SQLite: take the write lock when the transaction begins, so two writers
        # never both read and then fail to upgrade their lock.
        self._writer = engine.execution_options(sqlite_begin="IMMEDIATE")
        self._dbapi_error = engine.dialect.loaded_dbapi.Error
        self._create_schema()
        self._prepare()

    def _prepare(self) -> None:
        t, b, insert, engine = self.table, sa.bindparam, self._insert, self.engine
        live = sa.or_(t.c.expires.is_(None), t.c.expires > b("now"))
        row: dict[str, Any] = {"id": b("id"), "value": b("value"), "expires": b("expires")}
        upsert = insert(t).values(**row)
        upsert = upsert.on_conflict_do_update(
            index_elements=[t.c.id],
            set_={"value": upsert.excluded.value, "expires": upsert.excluded.expires},
        )
        # An expired row counts as absent: the insert takes its place, in the same
        # statement, so no one can slip in between the check and the write.
        # RETURNING, not rowcount: psycopg reports no rowcount for this INSERT,
        # and a row comes back only if one was written.
        add = insert(t).values(**row)
        add = add.on_conflict_do_update(
            index_elements=[t.c.id],
            set_={"value": add.excluded.value, "expires": add.excluded.expires},
            where=sa.and_(t.c.expires.is_not(None), t.c.expires <= b("now")),
        ).returning(t.c.id)
        by_id = t.c.id == b("id")
        statements = {
            "get": sa.select(t.c.value).where(by_id, live),
            "put": upsert,
            "add": add,
            "delete": sa.delete(t).where(by_id, live),
            "delete_expected": sa.delete(t).where(by_id, live, t.c.value == b("expected")),
            "lock": sa.select(t.c.value, t.c.expires).where(by_id).with_for_update(),
            "rewrite": sa.update(t).where(by_id).values(value=b("value"), expires=b("expires")),
            "remove": sa.delete(t).where(by_id),
            "insert_new": insert(t).values(**row).on_conflict_do_nothing(index_elements=[t.c.id]).returning(t.c.id),
        }
        self._sql = {name: Prepared(statement, engine) for name, statement in statements.items()}

    def _run(self, cursor: Any, name: str, **values: Any) -> Any:
        prepared = self._sql[name]
        cursor.execute(prepared.sql, prepared.params(values))
        return cursor

    @classmethod
    def from_url(cls, url: BackendURL, services: Any = None) -> SQLStore:
        return cls(get_engine(url), table_prefix=url.option("table_prefix", ""))

    # -- contract ----------------------------------------------------------

    def get(self, key: str) -> bytes | None:
        with self._errors("get"), dbapi_cursor(self.engine) as cursor:
            row = self._run(cursor, "get", id=storage_id(key), now=time.time()).fetchone()
        return None if row is None else bytes(row[0])

    def get_many(self, keys: Iterable[str]) -> dict[str, bytes]:
        ids = {storage_id(key): key for key in keys}
        found: dict[str, bytes] = {}
        if not ids:
            return found
        t = self.table
        now = time.time()
        chunks = list(ids)
        with self._errors("get_many"), self.engine.connect() as conn:
            for start in range(0, len(chunks), _CHUNK):
                query = sa.select(t.c.id, t.c.value).where(
                    t.c.id.in_(chunks[start : start + _CHUNK]), self._live(now)
                )
                for row_id, value in conn.execute(query):
                    found[ids[row_id]] = value
        return found

    def put(self, key: str, value: bytes, *, timeout: float | None = None) -> None:
        row = {"id": storage_id(key), "value": check_value(value), "expires": expiry(timeout)}
        with self._errors("put"), dbapi_cursor(self.engine) as cursor:
            self._run(cursor, "put", **row)

    def add(self, key: str, value: bytes, *, timeout: float | None = None) -> bool:
        now = time.time()
        row = {"id": storage_id(key), "value": check_value(value), "expires": expiry(timeout, now)}
        with self._errors("add"), dbapi_cursor(self.engine) as cursor:
            return self._run(cursor, "add", now=now, **row).fetchone() is not None

    def delete(self, key: str, *, expected: bytes | None = None) -> bool:
        where = {"id": storage_id(key), "now": time.time()}
        with self._errors("delete"), dbapi_cursor(self.engine) as cursor:
            if expected is None:
                return self._run(cursor, "delete", **where).rowcount == 1
            return self._run(cursor, "delete_expected", expected=check_value(expected), **where).rowcount == 1

    def update(self, key: str, fn: Updater, *, timeout: float | None = None) -> bytes | None:
        row_id = storage_id(key)
        for _ in range(_UPDATE_ATTEMPTS):
            with self._errors("update"), dbapi_cursor(self.engine, write_lock=True) as cursor:
                row = self._run(cursor, "lock", id=row_id).fetchone()
                now = time.time()
                live = row is not None and (row[1] is None or row[1] > now)
                new = fn(bytes(row[0]) if live else None)
                if new is None:
                    if row is not None:
                        self._run(cursor, "remove", id=row_id)
                    return None
                values = {"id": row_id, "value": check_value(new), "expires": expiry(timeout, now)}
                if row is not None:
                    self._run(cursor, "rewrite", **values)
                    return new
                # No row to lock: a concurrent update may insert the same id first.
                # Then ours inserts nothing, and we start again and lock theirs.
                if self._run(cursor, "insert_new", **values).fetchone() is not None:
                    return new
        raise StoreError(f"update of {key!r} kept conflicting with concurrent writers")

    def purge_expired(self) -> int:
        t = self.table
        statement = sa.delete(t).where(t.c.expires.is_not(None), t.c.expires <= time.time())
        with self._errors("purge_expired"), self.engine.begin() as conn:
            return conn.execute(statement).rowcount

    def close(self) -> None:
        """Nothing to release: every operation returns its connection to the pool,
        and the engine is shared with other services on the same database
        (:func:`gaeservices.store.engine.dispose_engine` drops it)."""

    # -- internals ---------------------------------------------------------

    def _live(self, now: float) -> Any:
        expires = self.table.c.expires
        return sa.or_(expires.is_(None), expires > now)

    @contextlib.contextmanager
    def _errors(self, operation: str) -> Iterator[None]:
        try:
            yield
        except (sa_exc.SQLAlchemyError, self._dbapi_error) as exc:
            raise StoreError(f"store {operation} failed on {self.dialect}: {exc}") from exc

    def _create_schema(self) -> None:
        create_table = sa.schema.CreateTable(self.table, if_not_exists=True)
        create_indexes = [sa.schema.CreateIndex(i, if_not_exists=True) for i in self.table.indexes]
        try:
            with self._errors("schema creation"), self._writer.begin() as conn:
                conn.execute(create_table)
                for statement in create_indexes:
                    conn.execute(statement)
        except StoreError as failure:
            # Two processes creating the table at once: PostgreSQL may refuse the
            # second even with IF NOT EXISTS. Its table is as good as ours.
            try:
                exists = sa.inspect(self.engine).has_table(self.table.name)
            except sa_exc.SQLAlchemyError:
                exists = False
            if not exists:
                raise failure

    def __repr__(self) -> str:
        return f"<SQLStore {self.engine.url!r} table={self.table.name}>"
