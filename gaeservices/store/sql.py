"""The store on SQLite or PostgreSQL, through SQLAlchemy Core.

One code path serves both dialects; only the ``INSERT … ON CONFLICT`` construct
is taken from the dialect's module (both databases speak the same upsert).
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
from collections.abc import Iterable, Iterator
from typing import Any

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc

from ..config import BackendURL
from ..exceptions import StoreError
from .api import Updater, check_value, expiry, storage_id
from .engine import get_engine

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
        self._create_schema()

    @classmethod
    def from_url(cls, url: BackendURL, services: Any = None) -> SQLStore:
        return cls(get_engine(url), table_prefix=url.option("table_prefix", ""))

    # -- contract ----------------------------------------------------------

    def get(self, key: str) -> bytes | None:
        t = self.table
        query = sa.select(t.c.value).where(t.c.id == storage_id(key), self._live(time.time()))
        with self._errors("get"), self.engine.connect() as conn:
            return conn.execute(query).scalar()

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
        statement = self._insert(self.table).values(
            id=storage_id(key), value=check_value(value), expires=expiry(timeout)
        )
        statement = statement.on_conflict_do_update(
            index_elements=[self.table.c.id],
            set_={"value": statement.excluded.value, "expires": statement.excluded.expires},
        )
        with self._errors("put"), self.engine.begin() as conn:
            conn.execute(statement)

    def add(self, key: str, value: bytes, *, timeout: float | None = None) -> bool:
        t = self.table
        now = time.time()
        statement = self._insert(t).values(
            id=storage_id(key), value=check_value(value), expires=expiry(timeout, now)
        )
        # An expired row counts as absent: the insert takes its place, in the same
        # statement, so no one can slip in between the check and the write.
        statement = statement.on_conflict_do_update(
            index_elements=[t.c.id],
            set_={"value": statement.excluded.value, "expires": statement.excluded.expires},
            where=sa.and_(t.c.expires.is_not(None), t.c.expires <= now),
        ).returning(t.c.id)
        # RETURNING, not rowcount: psycopg reports no rowcount for an INSERT
        # through SQLAlchemy, and a row comes back only if one was written.
        with self._errors("add"), self.engine.begin() as conn:
            return conn.execute(statement).first() is not None

    def delete(self, key: str, *, expected: bytes | None = None) -> bool:
        t = self.table
        statement = sa.delete(t).where(t.c.id == storage_id(key), self._live(time.time()))
        if expected is not None:
            statement = statement.where(t.c.value == check_value(expected))
        with self._errors("delete"), self.engine.begin() as conn:
            return conn.execute(statement).rowcount == 1

    def update(self, key: str, fn: Updater, *, timeout: float | None = None) -> bytes | None:
        t = self.table
        row_id = storage_id(key)
        locking = sa.select(t.c.value, t.c.expires).where(t.c.id == row_id).with_for_update()
        for _ in range(_UPDATE_ATTEMPTS):
            with self._errors("update"), self._writer.begin() as conn:
                row = conn.execute(locking).first()
                now = time.time()
                live = row is not None and (row.expires is None or row.expires > now)
                new = fn(row.value if live else None)
                if new is None:
                    if row is not None:
                        conn.execute(sa.delete(t).where(t.c.id == row_id))
                    return None
                values = {"value": check_value(new), "expires": expiry(timeout, now)}
                if row is not None:
                    conn.execute(sa.update(t).where(t.c.id == row_id).values(**values))
                    return new
                # No row to lock: a concurrent update may insert the same id first.
                # Then ours inserts nothing, and we start again and lock theirs.
                inserted = conn.execute(
                    self._insert(t)
                    .values(id=row_id, **values)
                    .on_conflict_do_nothing(index_elements=[t.c.id])
                    .returning(t.c.id)
                ).first()
                if inserted is not None:
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
        except sa_exc.SQLAlchemyError as exc:
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
