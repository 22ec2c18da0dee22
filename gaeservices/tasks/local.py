"""``local://``: the task queue in the store's SQL database (SQLite or PostgreSQL).

One table, ``gaeservices_tasks``, beside the store's. A task row is never
deleted when it is claimed: claiming *leases* it (its ETA moves to the end of
the lease and its attempt count goes up), so a worker that dies mid-task loses
nothing -- the task becomes due again when the lease runs out. Finishing a
task is guarded by the attempt number it was claimed with: a worker whose lease
was lost cannot mark done a task that another worker now owns.

States: ``pending`` (queued, or leased while ``leased_until`` is in the
future), ``done`` (kept as the name's tombstone until ``eta``) and ``failed``
(the dead letter: retries exhausted or a permanent failure, with the last
error). Claims take batches in one transaction -- ``FOR UPDATE SKIP LOCKED`` on
PostgreSQL, ``BEGIN IMMEDIATE`` on SQLite -- and outcomes are written in batches.

URL options: ``local://?lease=600&tombstone=86400&max_payload=102400``.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterable, Sequence
from typing import Any

from ..config import BackendURL
from ..store.engine import Prepared, dbapi_cursor, get_engine
from ..exceptions import (
    ConfigurationError,
    InvalidTaskError,
    TaskAlreadyExistsError,
    UnsupportedTaskOptionError,
)
from .api import RetryOptions, Task, TaskHandle, to_datetime
from .result import REFUSED, TaskResult
from .payload import PayloadCodec

__all__ = ["LocalQueue", "ClaimedTask", "TaskInfo", "PENDING", "DONE", "FAILED"]

TABLE_NAME = "gaeservices_tasks"
PENDING, DONE, FAILED = 0, 1, 2
STATE_NAMES = {PENDING: "pending", DONE: "done", FAILED: "failed"}

DEFAULT_LEASE = 600.0  # App Engine's deadline for a push task
DEFAULT_TOMBSTONE = 86400.0
DEFAULT_MAX_PAYLOAD = 100 * 1024  # App Engine's limit, so code moves between the two
_DEFAULT_RETRY = RetryOptions()
_ROW_KEYS = ("name", "queue", "state", "eta", "created", "attempts", "body", "url", "options")


class ClaimedTask:
    """A task leased to this process: run it, then report its result in a batch."""

    __slots__ = ("id", "name", "queue", "eta", "created", "attempt", "body", "url", "options", "leased_until")

    def __init__(self, row: Any, attempt: int, leased_until: float) -> None:
        self.id, self.name, self.queue, self.eta, self.created, _, self.body, self.url, options = row
        self.attempt = attempt  # 1 on the first execution; also the lease token
        self.options = json.loads(options) if options else {}
        self.leased_until = leased_until

    @property
    def retry_options(self) -> RetryOptions:
        retry = self.options.get("retry")
        return RetryOptions(**retry) if retry else _DEFAULT_RETRY


class TaskInfo:
    """One row, as listed by the admin command."""

    __slots__ = ("name", "queue", "state", "eta", "created", "attempts", "leased_until", "url", "last_error", "finished")

    def __init__(self, row: Any) -> None:
        (self.name, self.queue, state, self.eta, self.created, self.attempts,
         self.leased_until, self.url, self.last_error, self.finished) = row
        self.state = STATE_NAMES[state]

    @property
    def running(self) -> bool:
        return self.state == "pending" and self.leased_until is not None and self.leased_until > time.time()

    def __repr__(self) -> str:
        return f"<TaskInfo {self.name!r} {self.queue} {self.state} attempts={self.attempts}>"


class LocalQueue:
    """The SQL task queue; ``defer`` adds to it, :class:`~gaeservices.tasks.worker.Dispatcher` runs it."""

    def __init__(
        self,
        engine: Any,
        services: Any,
        *,
        table_prefix: str = "",
        lease: float = DEFAULT_LEASE,
        tombstone: float = DEFAULT_TOMBSTONE,
        max_payload: int | None = DEFAULT_MAX_PAYLOAD,
    ) -> None:
        import sqlalchemy as sa

        self.engine = engine
        self.services = services
        self.lease = lease
        self.tombstone = tombstone
        self.max_payload = max_payload
        self.codec = PayloadCodec(services)
        self.dialect = engine.dialect.name
        if self.dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        elif self.dialect == "sqlite":
            from sqlalchemy.dialects.sqlite import insert
        else:
            raise ConfigurationError(f"local:// runs on SQLite or PostgreSQL, not {self.dialect}")
        name = table_prefix + TABLE_NAME
        metadata = sa.MetaData()
        self.table = t = sa.Table(
            name,
            metadata,
            sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True),
            sa.Column("name", sa.String(500), nullable=False, unique=True),
            sa.Column("queue", sa.String(100), nullable=False),
            sa.Column("state", sa.SmallInteger(), nullable=False),
            sa.Column("eta", sa.Float(), nullable=False),
            sa.Column("created", sa.Float(), nullable=False),
            sa.Column("attempts", sa.Integer(), nullable=False),
            sa.Column("leased_until", sa.Float(), nullable=True),
            sa.Column("body", sa.LargeBinary(), nullable=True),
            sa.Column("url", sa.String(2000), nullable=False),
            sa.Column("options", sa.Text(), nullable=True),
            sa.Column("last_error", sa.Text(), nullable=True),
            sa.Column("finished", sa.Float(), nullable=True),
            sa.Index(f"{name}_due", "state", "queue", "eta"),
        )
        self._sa = sa
        # SQLite: take the write lock at BEGIN, so two claimers never both read
        # the same rows and then race to upgrade their locks.
        self._writer = engine.execution_options(sqlite_begin="IMMEDIATE")
        try:
            # The writer, so that on SQLite the check and the creation happen under
            # one write lock (a deferred transaction would fail, not wait, to upgrade).
            metadata.create_all(self._writer, checkfirst=True)
        except sa.exc.SQLAlchemyError:
            # Workers starting at once: PostgreSQL may refuse the second CREATE of
            # the same table. The first one's table, committed with its indexes, serves.
            if not sa.inspect(engine).has_table(name):
                raise
        # RETURNING tells whether the row went in: rowcount is unreliable here on psycopg.
        self._insert = insert(t).on_conflict_do_nothing(index_elements=["name"]).returning(t.c.id)
        # defer()'s hot path: compiled once, run on the pooled DBAPI connection.
        self._insert_prepared = Prepared(self._insert, engine, column_keys=list(_ROW_KEYS))
        self._claim_columns = (t.c.id, t.c.name, t.c.queue, t.c.eta, t.c.created, t.c.attempts, t.c.body, t.c.url, t.c.options)
        b = sa.bindparam
        guard = (t.c.id == b("b_id")) & (t.c.attempts == b("b_attempt")) & (t.c.state == PENDING)
        self._done_stmt = t.update().where(guard).values(
            state=DONE, eta=b("b_eta"), finished=b("b_now"), leased_until=None, body=None, last_error=None
        )
        self._fail_stmt = t.update().where(guard).values(
            state=FAILED, finished=b("b_now"), leased_until=None, last_error=b("b_error")
        )
        self._retry_stmt = t.update().where(guard).values(
            eta=b("b_eta"), leased_until=None, last_error=b("b_error")
        )
        self._release_stmt = t.update().where(guard).values(
            eta=b("b_eta"), leased_until=None, attempts=t.c.attempts - 1
        )
        self._wakeup = threading.Event()

    @classmethod
    def from_url(cls, url: BackendURL, services: Any) -> LocalQueue:
        store_url = services.backend_url("store")
        if store_url is None or store_url.scheme not in ("sqlite", "postgresql", "postgres"):
            shown = store_url.url if store_url is not None else type(services.store).__name__
            raise ConfigurationError(
                f"GAESERVICES_QUEUE=local:// keeps tasks in the store's SQL database, but "
                f"GAESERVICES_STORE is {shown!r}. Use a sqlite:/// or postgresql:// store, "
                "or GAESERVICES_QUEUE=appengine:// (on App Engine) or celery://."
            )

        max_payload = url.option("max_payload", DEFAULT_MAX_PAYLOAD, int)
        return cls(
            get_engine(store_url),
            services,
            table_prefix=store_url.option("table_prefix", ""),
            lease=url.option("lease", DEFAULT_LEASE, float),
            tombstone=url.option("tombstone", DEFAULT_TOMBSTONE, float),
            max_payload=max_payload or None,
        )

    # -- adding ---------------------------------------------------------------

    def add(self, task: Task) -> TaskHandle:
        """Queue ``task``; TaskAlreadyExistsError if its name is taken or tombstoned.

        ``_transactional`` takes a SQLAlchemy ``Connection`` on this database with
        a transaction open: the task is queued if, and only if, it commits.
        """
        now = time.time()
        eta = task.eta if task.eta is not None else now
        name = task.name
        if not name:  # defer() names every task: its body is signed for that name
            raise InvalidTaskError("local:// needs the task's name (the one its body is signed for)")
        options: dict[str, Any] = {}
        if task.headers:
            options["headers"] = task.headers
        if task.target:
            options["target"] = task.target
        if task.retry_options is not None:
            options["retry"] = task.retry_options.to_dict()
        row = {
            "name": name,
            "queue": task.queue,
            "state": PENDING,
            "eta": eta,
            "created": now,
            "attempts": 0,
            "body": task.body,
            "url": task.url,
            "options": json.dumps(options) if options else None,
        }
        connection = self._transaction_connection(task.transactional)
        if connection is not None:
            if connection.execute(self._insert, row).first() is None:
                raise TaskAlreadyExistsError(f"a task named {name!r} exists or finished recently")
        else:
            inserted = self._insert_row(row)
            if not inserted and not self._reuse_tombstone(name, row, now):
                raise TaskAlreadyExistsError(
                    f"a task named {name!r} is queued, failed, or finished less than "
                    f"{self.tombstone:g}s ago (its tombstone)"
                )
        self._wakeup.set()
        return TaskHandle(name, task.queue, to_datetime(eta))

    def _insert_row(self, row: dict[str, Any]) -> bool:
        prepared = self._insert_prepared
        with dbapi_cursor(self.engine) as cursor:
            cursor.execute(prepared.sql, prepared.params(row))
            return bool(cursor.fetchall())

    def _transaction_connection(self, transactional: Any) -> Any:
        if not transactional:
            return None
        if isinstance(transactional, self._sa.engine.Connection):
            if transactional.engine.url != self.engine.url:
                raise InvalidTaskError("_transactional's connection is on another database than the queue")
            if not transactional.in_transaction():
                raise InvalidTaskError("_transactional's connection has no transaction open")
            return transactional
        raise UnsupportedTaskOptionError(
            "local:// joins a transaction only when given it: pass the SQLAlchemy Connection "
            "whose transaction is open (defer(fn, _transactional=conn)), on the queue's database"
        )

    def _reuse_tombstone(self, name: str, row: dict[str, Any], now: float) -> bool:
        t = self.table
        with self._writer.begin() as conn:
            gone = conn.execute(
                t.delete().where(t.c.name == name, t.c.state == DONE, t.c.eta <= now)
            ).rowcount
            return bool(gone) and conn.execute(self._insert, row).first() is not None

    # -- claiming and finishing --------------------------------------------------

    def claim(
        self,
        limit: int = 1,
        *,
        queues: Sequence[str] | None = None,
        lease: float | None = None,
        names: Sequence[str] | None = None,
        finished: Sequence[tuple[ClaimedTask, TaskResult]] = (),
    ) -> list[ClaimedTask]:
        """Lease up to ``limit`` due tasks (oldest ETA first) in one transaction.

        ``finished`` outcomes are recorded in the same transaction: a busy
        dispatcher pays one write per batch, not two.
        """
        sa, t = self._sa, self.table
        now = time.time()
        leased_until = now + (self.lease if lease is None else lease)
        query = sa.select(*self._claim_columns).where(t.c.state == PENDING)
        if names is None:
            query = query.where(t.c.eta <= now)
        else:
            # by hand: due or not, but never one that a worker holds right now
            query = query.where(
                t.c.name.in_(list(names)), t.c.leased_until.is_(None) | (t.c.leased_until <= now)
            )
        if queues:
            query = query.where(t.c.queue.in_(list(queues)))
        query = query.order_by(t.c.eta).limit(limit).with_for_update(skip_locked=True)
        with self._writer.begin() as conn:
            if finished:
                self._record(conn, finished, now)
            rows = conn.execute(query).all()
            if not rows:
                return []
            conn.execute(
                t.update()
                .where(t.c.id.in_([r[0] for r in rows]))
                .values(attempts=t.c.attempts + 1, eta=leased_until, leased_until=leased_until)
            )
        return [ClaimedTask(r, r[5] + 1, leased_until) for r in rows]

    def finish(self, results: Iterable[tuple[ClaimedTask, TaskResult]]) -> int:
        """Record a batch of outcomes; returns how many still held their lease."""
        with self._writer.begin() as conn:
            return self._record(conn, results, time.time())

    def _record(self, conn: Any, results: Iterable[tuple[ClaimedTask, TaskResult]], now: float) -> int:
        done, failed, retried = [], [], []
        for task, result in results:
            key = {"b_id": task.id, "b_attempt": task.attempt, "b_now": now}
            if result.outcome == "success":
                key["b_eta"] = now + self.tombstone
                done.append(key)
                continue
            key["b_error"] = result.error or f"HTTP {result.status}"
            if result.done or result.outcome == REFUSED:  # a refused body cannot get better
                failed.append(key)
                continue
            retry = task.retry_options
            if retry.gives_up(task.attempt - 1, now - task.created):
                failed.append(key)
            else:
                key["b_eta"] = now + retry.backoff(task.attempt - 1)
                retried.append(key)
        kept = 0
        for statement, params in ((self._done_stmt, done), (self._fail_stmt, failed), (self._retry_stmt, retried)):
            if params:
                kept += conn.execute(statement, params).rowcount
        if retried:
            self._wakeup.set()
        return kept

    def release(self, tasks: Iterable[ClaimedTask]) -> None:
        """Give back leased tasks that were never run (a worker stopping)."""
        now = time.time()
        params = [{"b_id": task.id, "b_attempt": task.attempt, "b_eta": now} for task in tasks]
        if params:
            with self._writer.begin() as conn:
                conn.execute(self._release_stmt, params)

    def next_eta(self, queues: Sequence[str] | None = None) -> float | None:
        """When the next pending task is due (None if none is pending)."""
        sa, t = self._sa, self.table
        query = sa.select(sa.func.min(t.c.eta)).where(t.c.state == PENDING)
        if queues:
            query = query.where(t.c.queue.in_(list(queues)))
        with self.engine.connect() as conn:
            return conn.execute(query).scalar()

    def purge(self) -> int:
        """Delete expired tombstones; returns how many."""
        t = self.table
        with self._writer.begin() as conn:
            return conn.execute(t.delete().where(t.c.state == DONE, t.c.eta <= time.time())).rowcount

    # -- inspection and repair (the ``gaeservices tasks`` command) ----------------

    def tasks(self, *, queue: str | None = None, state: str | None = None, limit: int = 100) -> list[TaskInfo]:
        sa, t = self._sa, self.table
        query = sa.select(
            t.c.name, t.c.queue, t.c.state, t.c.eta, t.c.created, t.c.attempts,
            t.c.leased_until, t.c.url, t.c.last_error, t.c.finished,
        )
        if queue:
            query = query.where(t.c.queue == queue)
        if state:
            codes = {v: k for k, v in STATE_NAMES.items()}
            if state not in codes:
                raise ValueError(f"state must be one of {sorted(codes)}")
            query = query.where(t.c.state == codes[state])
        query = query.order_by(t.c.state, t.c.eta).limit(limit)
        with self.engine.connect() as conn:
            return [TaskInfo(r) for r in conn.execute(query)]

    def get(self, name: str) -> TaskInfo | None:
        found = [i for i in self._by_name(name)]
        return found[0] if found else None

    def _by_name(self, name: str) -> list[TaskInfo]:
        sa, t = self._sa, self.table
        query = sa.select(
            t.c.name, t.c.queue, t.c.state, t.c.eta, t.c.created, t.c.attempts,
            t.c.leased_until, t.c.url, t.c.last_error, t.c.finished,
        ).where(t.c.name == name)
        with self.engine.connect() as conn:
            return [TaskInfo(r) for r in conn.execute(query)]

    def counts(self) -> dict[tuple[str, str], int]:
        """Number of tasks per (queue, state)."""
        sa, t = self._sa, self.table
        query = sa.select(t.c.queue, t.c.state, sa.func.count()).group_by(t.c.queue, t.c.state)
        with self.engine.connect() as conn:
            return {(q, STATE_NAMES[s]): n for q, s, n in conn.execute(query)}

    def retry(self, name: str) -> bool:
        """Make a failed (or waiting) task due now, with its attempts kept.

        A task a worker is running (its lease not yet out) is left to that worker:
        making it due would have a second worker run it at the same time.
        """
        t = self.table
        now = time.time()
        not_running = t.c.leased_until.is_(None) | (t.c.leased_until <= now)
        with self._writer.begin() as conn:
            return bool(
                conn.execute(
                    t.update()
                    .where(t.c.name == name, t.c.state.in_([PENDING, FAILED]), t.c.body.is_not(None), not_running)
                    .values(state=PENDING, eta=now, leased_until=None)
                ).rowcount
            )

    def delete(self, name: str) -> bool:
        """Delete a task (any state) and its stored payload; frees its name."""
        t = self.table
        with self._writer.begin() as conn:
            body = conn.execute(self._sa.select(t.c.body).where(t.c.name == name)).scalar()
            deleted = bool(conn.execute(t.delete().where(t.c.name == name)).rowcount)
        if deleted and body:
            key = self.codec.stored_key(body)
            if key:
                self.codec.discard(key)
        return deleted

    def wait_for_work(self, timeout: float) -> None:
        """Sleep up to ``timeout``, or until a task is added by this process."""
        if self._wakeup.wait(timeout):
            self._wakeup.clear()

    def close(self) -> None:
        self._wakeup.set()

    def __repr__(self) -> str:
        return f"<LocalQueue {self.dialect} {self.table.name}>"
