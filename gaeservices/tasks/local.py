"""``local://``: the task queue in the store's SQL database (SQLite or PostgreSQL).

One table, ``gaeservices_tasks``, beside the store's. A task row is never
deleted when it is claimed: claiming *leases* it (its ETA moves to the end of
the lease), so a worker that dies mid-task loses nothing -- the task becomes due
again when the lease runs out. Every claim gives the row a new lease number
(``claims``), and an outcome is written only under the lease it was claimed
with: a worker whose lease was lost cannot mark done a task another worker now
owns. A dispatcher renews the leases of the tasks it holds while they run (its
heartbeat), and never starts a task whose lease has run out.

**Attempts are counted for tasks that started.** A claim takes a batch, and the
dispatcher starts the batch's first task at once: the claim counts that task's
attempt, the others' are counted with their outcome. A lease that runs out
without an outcome (its worker died, was killed, or hung without a heartbeat)
is settled by the next claim that meets the row: a counted attempt is a failure
("the lease ran out"), retried after its backoff or dead-lettered at its retry
limit like any other; an uncounted one did not necessarily start and costs
nothing. Either way the task becomes a *suspect*: it is claimed alone, so its
next attempt is counted when claimed. A task that kills its worker is thus
counted every time it runs alone, backs off behind the healthy tasks, and is
dead-lettered at its limit, while the healthy tasks of its batch run once.

States: ``pending`` (queued, or leased while ``leased_until`` is in the
future), ``done`` (kept as the name's tombstone until ``eta``) and ``failed``
(the dead letter: retries exhausted, a permanent failure, or a body refused,
with the last error). Claims take batches in one transaction -- ``FOR UPDATE
SKIP LOCKED`` on PostgreSQL, ``BEGIN IMMEDIATE`` on SQLite -- and outcomes are
written in batches.

URL options: ``local://?lease=60&tombstone=86400&max_payload=102400&queue_yaml=queue.yaml``.
``queue_yaml`` (the file an App Engine application deploys) sets each queue's
rate, bucket size, concurrency and retries (:mod:`gaeservices.tasks.queueconfig`):
a table ``gaeservices_task_buckets`` holds the queues' token buckets.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections.abc import Iterable, Sequence
from typing import Any

from ..config import BackendURL
from ..exceptions import (
    ConfigurationError,
    InvalidTaskError,
    TaskAlreadyExistsError,
    UnsupportedTaskOptionError,
)
from ..store.engine import Prepared, dbapi_cursor, get_engine
from .api import RetryOptions, Task, TaskHandle, to_datetime
from .payload import PayloadCodec
from .queueconfig import QueueConfig, QueueSettings, load_queue_yaml
from .result import REFUSED, SUCCESS, TaskResult

__all__ = ["LocalQueue", "ClaimedTask", "TaskInfo", "QueueStats", "VIEWS", "PENDING", "DONE", "FAILED"]

logger = logging.getLogger("gaeservices.tasks")

TABLE_NAME = "gaeservices_tasks"
BUCKETS_TABLE_NAME = "gaeservices_task_buckets"
PENDING, DONE, FAILED = 0, 1, 2
STATE_NAMES = {PENDING: "pending", DONE: "done", FAILED: "failed"}
#: How the admin page groups tasks: ``queued`` (due, waiting for a worker),
#: ``scheduled`` (its ETA is ahead, never failed), ``running`` (leased),
#: ``failed`` (failed at least once, waiting for its retry), ``dead`` (the
#: ``failed`` state: given up) and ``done`` (tombstones of finished tasks).
VIEWS = ("queued", "scheduled", "running", "failed", "dead", "done")

#: How long a claimed task is its worker's without a heartbeat. Dispatchers renew
#: the leases of running tasks every third of it, so it bounds how long a dead
#: worker's tasks wait, not how long a task may run.
DEFAULT_LEASE = 60.0
DEFAULT_TOMBSTONE = 86400.0
DEFAULT_MAX_PAYLOAD = 100 * 1024  # App Engine's limit, so code moves between the two
_DEFAULT_RETRY = RetryOptions()
_ROW_KEYS = ("name", "queue", "state", "eta", "created", "attempts", "body", "url", "options")
LOST_LEASE = "the lease ran out without an outcome (its worker died, was killed, or stopped renewing it)"


class ClaimedTask:
    """A task leased to this process: run it, then report its result in a batch.

    ``attempt`` is its execution number (1 the first time); ``claim`` the lease
    number its outcome is written under; ``counted`` whether the claim already
    counted this attempt; ``leased_until`` when the lease runs out unless renewed.
    """

    __slots__ = (
        "id", "name", "queue", "eta", "created", "attempt", "body", "url", "options",
        "leased_until", "claim", "counted", "retry_options",
    )

    def __init__(
        self,
        row: Any,
        *,
        leased_until: float,
        counted: bool,
        retry_options: RetryOptions,
    ) -> None:
        self.id, self.name, self.queue, self.eta, self.created = row[0], row[1], row[2], row[3], row[4]
        self.attempt: int = row[5] + 1
        self.body: bytes = row[6]
        self.url: str = row[7]
        self.options: dict[str, Any] = json.loads(row[8]) if row[8] else {}
        self.claim: int = row[12] + 1
        self.leased_until = leased_until
        self.counted = counted
        self.retry_options = retry_options

    def __repr__(self) -> str:
        return f"<ClaimedTask {self.name!r} attempt={self.attempt} claim={self.claim}>"


class TaskInfo:
    """One row, as listed by the admin command and page.

    ``body`` (the signed payload) is set by :meth:`LocalQueue.listing` only.
    """

    __slots__ = (
        "name", "queue", "state", "eta", "created", "attempts", "leased_until", "url", "last_error", "finished",
        "body",
    )

    def __init__(self, row: Any) -> None:
        (self.name, self.queue, state, self.eta, self.created, self.attempts,
         self.leased_until, self.url, self.last_error, self.finished) = row[:10]
        self.state = STATE_NAMES[state]
        self.body: bytes | None = row[10] if len(row) > 10 else None

    @property
    def running(self) -> bool:
        return self.state == "pending" and self.leased_until is not None and self.leased_until > time.time()

    def view(self, now: float | None = None) -> str:
        """Which of :data:`VIEWS` the task is in at ``now``."""
        if self.state != "pending":
            return "done" if self.state == "done" else "dead"
        now = time.time() if now is None else now
        if self.leased_until is not None and self.leased_until > now:
            return "running"
        if self.last_error is not None:
            return "failed"
        return "scheduled" if self.eta > now else "queued"

    def __repr__(self) -> str:
        return f"<TaskInfo {self.name!r} {self.queue} {self.state} attempts={self.attempts}>"


class QueueStats:
    """One queue's tasks by view (see :data:`VIEWS`), and what finished lately.

    ``depth`` is every task not finished (queued, scheduled, running, failed);
    ``done_last_minute``/``done_last_hour`` count successes, ``dead_last_hour``
    tasks given up, by when they finished; ``oldest_queued`` is the ETA of the
    task that has waited longest for a worker (None when none is queued).
    """

    __slots__ = (
        "queue", "queued", "scheduled", "running", "failed", "dead", "done",
        "done_last_minute", "done_last_hour", "dead_last_hour", "oldest_queued",
    )

    def __init__(self, queue: str, **counts: Any) -> None:
        self.queue = queue
        self.queued: int = counts.get("queued", 0)
        self.scheduled: int = counts.get("scheduled", 0)
        self.running: int = counts.get("running", 0)
        self.failed: int = counts.get("failed", 0)
        self.dead: int = counts.get("dead", 0)
        self.done: int = counts.get("done", 0)
        self.done_last_minute: int = counts.get("done_last_minute", 0)
        self.done_last_hour: int = counts.get("done_last_hour", 0)
        self.dead_last_hour: int = counts.get("dead_last_hour", 0)
        self.oldest_queued: float | None = counts.get("oldest_queued")

    @property
    def depth(self) -> int:
        return int(self.queued + self.scheduled + self.running + self.failed)

    def __repr__(self) -> str:
        return f"<QueueStats {self.queue} depth={self.depth} failed={self.failed} dead={self.dead}>"


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
        config: QueueConfig | None = None,
    ) -> None:
        import sqlalchemy as sa

        self.engine = engine
        self.services = services
        self.lease = lease
        self.tombstone = tombstone
        self.max_payload = max_payload
        self.codec = PayloadCodec(services)
        self.dialect = engine.dialect.name
        insert: Any
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
            *_lease_columns(sa),
            sa.Index(f"{name}_due", "state", "queue", "eta"),
        )
        # queue.yaml's rate limits: one token bucket per limited queue, shared by every worker
        self.buckets = sa.Table(
            table_prefix + BUCKETS_TABLE_NAME,
            metadata,
            sa.Column("queue", sa.String(100), primary_key=True),
            sa.Column("tokens", sa.Float(), nullable=False),
            sa.Column("updated", sa.Float(), nullable=False),
        )
        self._bucket_insert = insert(self.buckets).on_conflict_do_nothing(index_elements=["queue"])
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
        self._add_lease_columns()
        # RETURNING tells whether the row went in: rowcount is unreliable here on psycopg.
        self._insert = insert(t).on_conflict_do_nothing(index_elements=["name"]).returning(t.c.id)
        # defer()'s hot path: compiled once, run on the pooled DBAPI connection.
        self._insert_prepared = Prepared(self._insert, engine, column_keys=list(_ROW_KEYS))
        self._claim_columns = (
            t.c.id, t.c.name, t.c.queue, t.c.eta, t.c.created, t.c.attempts, t.c.body, t.c.url, t.c.options,
            t.c.leased_until, t.c.counted, t.c.suspect, t.c.claims,
        )
        b = sa.bindparam
        guard = (t.c.id == b("b_id")) & (t.c.claims == b("b_claim")) & (t.c.state == PENDING)
        self._guard = guard
        finished: dict[str, Any] = {"leased_until": None, "counted": 0, "suspect": 0, "attempts": b("b_attempt")}
        self._done_stmt = t.update().where(guard).values(
            state=DONE, eta=b("b_eta"), finished=b("b_now"), body=None, last_error=None, **finished
        )
        self._fail_stmt = t.update().where(guard).values(
            state=FAILED, finished=b("b_now"), last_error=b("b_error"), **finished
        )
        self._retry_stmt = t.update().where(guard).values(eta=b("b_eta"), last_error=b("b_error"), **finished)
        # give back unstarted tasks: the claim's count of an attempt is undone
        self._release_stmt = t.update().where(guard).values(
            eta=b("b_eta"), leased_until=None, attempts=t.c.attempts - t.c.counted, counted=0
        )
        self._renew_stmt = t.update().where(guard).values(eta=b("b_until"), leased_until=b("b_until"))
        # a lease that ran out without an outcome, settled by the claim that meets it
        self._lost_stmt = t.update().where(
            (t.c.id == b("b_id")) & (t.c.claims == b("b_claim")) & (t.c.state == PENDING)
        ).values(
            state=b("b_state"), eta=b("b_eta"), leased_until=None, counted=0, suspect=1,
            last_error=b("b_error"), finished=b("b_finished"),
        )
        self._wakeup = threading.Event()
        self.config: QueueConfig | None = None
        self._throttled: dict[str, float] = {}  # queue -> when a claim may take from it again
        self.configure(config)

    def configure(self, config: QueueConfig | None) -> None:
        """Apply a queue.yaml (:func:`~gaeservices.tasks.queueconfig.load_queue_yaml`), or none."""
        self.config = config
        self._limited = {q: s for q, s in config.settings.items() if s.limited} if config else {}
        self._throttled = {}

    def _add_lease_columns(self) -> None:
        """Tables made before lease numbers and suspects get their columns (with defaults)."""
        sa, t = self._sa, self.table
        have = {c["name"] for c in sa.inspect(self.engine).get_columns(t.name)}
        missing = [c for c in _lease_columns(sa) if c.name not in have]
        if not missing:
            return
        preparer = self.engine.dialect.identifier_preparer
        with self._writer.begin() as conn:
            have = {c["name"] for c in sa.inspect(conn).get_columns(t.name)}
            for column in missing:
                if column.name in have:
                    continue
                conn.exec_driver_sql(
                    f"ALTER TABLE {preparer.format_table(t)} ADD COLUMN {preparer.quote(column.name)} "
                    f"{column.type.compile(self.engine.dialect)} NOT NULL DEFAULT 0"
                )

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
        queue_yaml = url.option("queue_yaml", None)
        return cls(
            get_engine(store_url),
            services,
            table_prefix=store_url.option("table_prefix", ""),
            lease=url.option("lease", DEFAULT_LEASE, float),
            tombstone=url.option("tombstone", DEFAULT_TOMBSTONE, float),
            max_payload=max_payload or None,
            config=load_queue_yaml(queue_yaml) if queue_yaml else None,
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
        if self.config is not None:
            try:
                self.config.check_queue(task.queue)
            except ConfigurationError as exc:
                raise InvalidTaskError(str(exc)) from None
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

        The first task's attempt is counted here: the caller starts it at once.
        A suspect (a task whose last lease ran out without an outcome) is
        claimed alone. ``names`` claims those tasks, due or not, unless a worker
        holds them. ``finished`` outcomes are recorded in the same transaction:
        a busy dispatcher pays one write per batch, not two.
        """
        sa, t = self._sa, self.table
        limited = (
            {q: s for q, s in self._limited.items() if not queues or q in queues} if names is None else {}
        )
        with self._writer.begin() as conn:
            # The clock is read once the transaction holds its lock (SQLite's write lock
            # is taken at BEGIN): a claim that waited for it must not hand out a lease
            # that is already running out.
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
            if finished:
                self._record(conn, finished, now)
            if limited:
                rows, tokens = self._rows_within_limits(conn, query, limited, limit, now)
            else:
                query = query.order_by(t.c.eta).limit(limit).with_for_update(skip_locked=True)
                rows, tokens = [tuple(r) for r in conn.execute(query)], {}
            if not rows:
                return []
            rows = self._settle_lost_leases(conn, rows, now, by_hand=names is not None)
            taken = _batch(rows)
            if tokens:
                self._take_tokens(conn, limited, tokens, taken, now)
            if not taken:
                return []
            first = taken[0][0]
            conn.execute(
                t.update()
                .where(t.c.id.in_([r[0] for r in taken]))
                .values(
                    claims=t.c.claims + 1,
                    attempts=t.c.attempts + sa.case((t.c.id == first, 1), else_=0),
                    counted=sa.case((t.c.id == first, 1), else_=0),
                    eta=leased_until,
                    leased_until=leased_until,
                )
            )
        return [
            ClaimedTask(r, leased_until=leased_until, counted=i == 0, retry_options=self.retry_options_for(r[2], r[8]))
            for i, r in enumerate(taken)
        ]

    def _rows_within_limits(
        self, conn: Any, query: Any, limited: dict[str, QueueSettings], limit: int, now: float
    ) -> tuple[list[Any], dict[str, float]]:
        """Due rows, as many of each limited queue as its bucket and concurrency allow.

        Each limited queue's bucket row is locked for the claim (on SQLite the
        claim holds the database's write lock anyway), so workers claiming at
        once never take the same tokens or exceed ``max_concurrent_requests``
        together. Returns the rows (by ETA) and the tokens each rate-limited
        queue held before this claim.
        """
        sa, t, b = self._sa, self.table, self.buckets
        conn.execute(self._bucket_insert, [
            {"queue": q, "tokens": float(s.bucket_size), "updated": now} for q, s in limited.items()
        ])
        state = {
            row.queue: row
            for row in conn.execute(
                sa.select(b.c.queue, b.c.tokens, b.c.updated).where(b.c.queue.in_(list(limited))).with_for_update()
            )
        }
        running: dict[str, int] = {}
        concurrent = [q for q, s in limited.items() if s.max_concurrent is not None]
        if concurrent:
            running = dict(
                conn.execute(
                    sa.select(t.c.queue, sa.func.count())
                    .where(t.c.state == PENDING, t.c.queue.in_(concurrent), t.c.leased_until > now)
                    .group_by(t.c.queue)
                ).all()
            )
        tokens: dict[str, float] = {}
        rows: list[Any] = []
        for queue, settings in limited.items():
            allowed = limit
            if settings.rate is not None:
                row = state[queue]
                held = min(float(settings.bucket_size), row.tokens + settings.rate * max(0.0, now - row.updated))
                if settings.rate == 0:  # paused (App Engine's "rate: 0")
                    held = 0.0
                tokens[queue] = held
                allowed = min(allowed, math.floor(held))
            if settings.max_concurrent is not None:
                allowed = min(allowed, settings.max_concurrent - running.get(queue, 0))
            if allowed <= 0:
                self._throttle(queue, settings, tokens.get(queue), now)
                continue
            rows += conn.execute(
                query.where(t.c.queue == queue).order_by(t.c.eta).limit(allowed).with_for_update(skip_locked=True)
            ).all()
        rest = query.where(t.c.queue.not_in(list(limited))).order_by(t.c.eta).limit(limit)
        rows += conn.execute(rest.with_for_update(skip_locked=True)).all()
        rows.sort(key=lambda r: r[3])
        return [tuple(r) for r in rows[:limit]], tokens

    def _take_tokens(
        self, conn: Any, limited: dict[str, QueueSettings], tokens: dict[str, float], taken: list[Any], now: float
    ) -> None:
        """Debit the buckets for the tasks claimed, and note the queues that ran dry."""
        per_queue: dict[str, int] = {}
        for row in taken:
            per_queue[row[2]] = per_queue.get(row[2], 0) + 1
        b = self.buckets
        updates = []
        for queue, held in tokens.items():
            left = held - per_queue.get(queue, 0)
            updates.append({"b_queue": queue, "b_tokens": left, "b_updated": now})
            if left < 1:
                self._throttle(queue, limited[queue], left, now)
            else:
                self._throttled.pop(queue, None)
        bind = self._sa.bindparam
        conn.execute(
            b.update().where(b.c.queue == bind("b_queue")).values(tokens=bind("b_tokens"), updated=bind("b_updated")),
            updates,
        )

    def _throttle(self, queue: str, settings: QueueSettings, tokens: float | None, now: float) -> None:
        """Remember when a claim may take from ``queue`` again (a hint for sleeping)."""
        if settings.rate is not None and tokens is not None and tokens < 1:
            wait = math.inf if settings.rate == 0 else (1 - tokens) / settings.rate
        else:  # at its concurrency limit: a running task must finish first
            wait = 0.05
        self._throttled[queue] = now + wait

    @property
    def limited(self) -> bool:
        """True when queue.yaml limits some queue's rate or concurrency."""
        return bool(self._limited)

    def _settle_lost_leases(self, conn: Any, rows: list[Any], now: float, *, by_hand: bool) -> list[Any]:
        """Rows whose lease ran out without an outcome: count, retry or bury them.

        Returns the rows that may be claimed now, each lost one marked suspect.
        """
        claimable, settled = [], []
        for row in rows:
            if row[9] is None:  # leased_until: no lease was lost
                claimable.append(row)
                continue
            attempts, counted = row[5], row[10]
            params = {"b_id": row[0], "b_claim": row[12], "b_state": PENDING, "b_eta": row[3],
                      "b_error": None, "b_finished": None}
            if counted:  # attempt number ``attempts`` started and left no outcome: it failed
                retry = self.retry_options_for(row[2], row[8])
                params["b_error"] = f"attempt {attempts}: {LOST_LEASE}"
                if retry.gives_up(attempts - 1, now - row[4]):
                    params.update(b_state=FAILED, b_finished=now)
                elif not by_hand:
                    params["b_eta"] = now + retry.backoff(attempts - 1)
            settled.append(params)
            if params["b_state"] == PENDING and (by_hand or params["b_eta"] <= now):
                claimable.append(row[:11] + (1,) + row[12:])
        if settled:
            conn.execute(self._lost_stmt, settled)
            self._wakeup.set()
        return claimable

    def finish(self, results: Iterable[tuple[ClaimedTask, TaskResult]]) -> int:
        """Record a batch of outcomes; returns how many still held their lease."""
        with self._writer.begin() as conn:
            return self._record(conn, results, time.time())

    def _record(self, conn: Any, results: Iterable[tuple[ClaimedTask, TaskResult]], now: float) -> int:
        done, failed, retried = [], [], []
        for task, result in results:
            key = {"b_id": task.id, "b_claim": task.claim, "b_attempt": task.attempt, "b_now": now}
            if result.outcome == SUCCESS:
                key["b_eta"] = now + self.tombstone
                done.append(key)
                continue
            key["b_error"] = result.error or f"HTTP {result.status}"
            if result.done or result.outcome == REFUSED:  # a refused body cannot get better
                failed.append(key)
                continue
            retry = task.retry_options
            if retry.gives_up(task.attempt - 1, now - task.created):
                logger.warning("task %r failed %d time(s) and is given up (%r)", task.name, task.attempt, retry)
                failed.append(key)
            else:
                delay = retry.backoff(task.attempt - 1)
                logger.info("task %r failed (attempt %d); it will be retried in %.3gs", task.name, task.attempt, delay)
                key["b_eta"] = now + delay
                retried.append(key)
        kept = 0
        for statement, params in ((self._done_stmt, done), (self._fail_stmt, failed), (self._retry_stmt, retried)):
            if params:
                kept += conn.execute(statement, params).rowcount
        if retried:
            self._wakeup.set()
        return kept

    def release(self, tasks: Iterable[ClaimedTask]) -> int:
        """Give back leased tasks that were never started (a worker stopping, a lease
        that ran out before its turn); a counted attempt is uncounted."""
        now = time.time()
        params = [{"b_id": task.id, "b_claim": task.claim, "b_eta": now} for task in tasks]
        if not params:
            return 0
        with self._writer.begin() as conn:
            released = conn.execute(self._release_stmt, params).rowcount
        self._wakeup.set()
        return released

    def renew(self, tasks: Sequence[ClaimedTask], lease: float | None = None) -> list[ClaimedTask]:
        """Extend the leases of ``tasks`` (the heartbeat); returns those whose lease was lost."""
        if not tasks:
            return []
        sa, t = self._sa, self.table
        with self._writer.begin() as conn:
            until = time.time() + (self.lease if lease is None else lease)  # once the lock is held
            params = [{"b_id": task.id, "b_claim": task.claim, "b_until": until} for task in tasks]
            renewed = conn.execute(self._renew_stmt, params).rowcount
            lost: list[ClaimedTask] = []
            if renewed != len(params):
                # Not renewed: finished meanwhile (its outcome was just written: not
                # lost), or claimed by another worker, or deleted (lost).
                rows = {
                    i: (state, c) for i, state, c in conn.execute(
                        sa.select(t.c.id, t.c.state, t.c.claims).where(t.c.id.in_([task.id for task in tasks]))
                    )
                }
                for task in tasks:
                    state, claim = rows.get(task.id, (None, None))
                    if state is None or (state == PENDING and claim != task.claim):
                        lost.append(task)
        for task in tasks:
            if task not in lost:
                task.leased_until = until
        return lost

    def limits_of(self, queue: str) -> str:
        """A queue's rate, bucket and concurrency from queue.yaml, as people read them;
        ``"unlimited"`` without a queue.yaml, or for a queue it does not declare."""
        settings = self.config.settings.get(queue) if self.config is not None else None
        return settings.describe() if settings is not None else "unlimited"

    def retry_options_for(self, queue: str, options: str | None) -> RetryOptions:
        """The task's own retry options, else its queue's (queue.yaml), else the defaults."""
        if options:
            retry = json.loads(options).get("retry")
            if retry:
                return RetryOptions(**retry)
        if self.config is not None:
            settings = self.config.settings.get(queue)
            if settings is not None and settings.retry is not None:
                return settings.retry
        return _DEFAULT_RETRY

    def next_eta(self, queues: Sequence[str] | None = None) -> float | None:
        """When the next pending task may be claimed (None if none is pending).

        A queue whose rate or concurrency held its tasks back in the last claim
        counts from when it may give tasks again.
        """
        sa, t = self._sa, self.table
        now = time.time()
        throttled = {q: when for q, when in self._throttled.items() if when > now}
        if not throttled:
            query = sa.select(sa.func.min(t.c.eta)).where(t.c.state == PENDING)
            if queues:
                query = query.where(t.c.queue.in_(list(queues)))
            with self.engine.connect() as conn:
                return conn.execute(query).scalar()
        query = sa.select(t.c.queue, sa.func.min(t.c.eta)).where(t.c.state == PENDING).group_by(t.c.queue)
        if queues:
            query = query.where(t.c.queue.in_(list(queues)))
        with self.engine.connect() as conn:
            etas = [max(eta, throttled.get(queue, eta)) for queue, eta in conn.execute(query)]
        return min(etas) if etas else None

    def due(self, queues: Sequence[str] | None = None, *, paused: bool = True) -> int:
        """How many pending tasks are due now (held back by limits or not): the queue's
        depth. ``paused=False`` leaves out queues whose queue.yaml rate is 0."""
        sa, t = self._sa, self.table
        query = sa.select(sa.func.count()).where(
            t.c.state == PENDING, t.c.eta <= time.time()
        )
        if queues:
            query = query.where(t.c.queue.in_(list(queues)))
        if not paused:
            stopped = [q for q, s in self._limited.items() if s.rate == 0]
            if stopped:
                query = query.where(t.c.queue.not_in(stopped))
        with self.engine.connect() as conn:
            return int(conn.execute(query).scalar() or 0)

    def purge(self) -> int:
        """Delete expired tombstones; returns how many."""
        t = self.table
        with self._writer.begin() as conn:
            return conn.execute(t.delete().where(t.c.state == DONE, t.c.eta <= time.time())).rowcount

    # -- inspection and repair (the ``gaeservices tasks`` command) ----------------

    def _info_select(self, *, body: bool = False) -> Any:
        """The columns of a :class:`TaskInfo` (and the signed body, for the admin page)."""
        t = self.table
        columns = [t.c.name, t.c.queue, t.c.state, t.c.eta, t.c.created, t.c.attempts,
                   t.c.leased_until, t.c.url, t.c.last_error, t.c.finished]
        return self._sa.select(*columns, *([t.c.body] if body else []))

    def _infos(self, query: Any) -> list[TaskInfo]:
        with self.engine.connect() as conn:
            return [TaskInfo(r) for r in conn.execute(query)]

    def tasks(self, *, queue: str | None = None, state: str | None = None, limit: int = 100) -> list[TaskInfo]:
        t = self.table
        query = self._info_select()
        if queue:
            query = query.where(t.c.queue == queue)
        if state:
            codes = {v: k for k, v in STATE_NAMES.items()}
            if state not in codes:
                raise ValueError(f"state must be one of {sorted(codes)}")
            query = query.where(t.c.state == codes[state])
        return self._infos(query.order_by(t.c.state, t.c.eta).limit(limit))

    def get(self, name: str) -> TaskInfo | None:
        return self.get_many([name]).get(name)

    def get_many(self, names: Iterable[str]) -> dict[str, TaskInfo]:
        """The tasks of these names that the queue holds, by name, read in one query."""
        names = list(dict.fromkeys(names))
        if not names:
            return {}
        return {info.name: info for info in self._infos(self._info_select().where(self.table.c.name.in_(names)))}

    def counts(self) -> dict[tuple[str, str], int]:
        """Number of tasks per (queue, state)."""
        sa, t = self._sa, self.table
        query = sa.select(t.c.queue, t.c.state, sa.func.count()).group_by(t.c.queue, t.c.state)
        with self.engine.connect() as conn:
            return {(q, STATE_NAMES[s]): n for q, s, n in conn.execute(query)}

    def _view_filter(self, view: str, now: float) -> Any:
        t = self.table
        not_running = t.c.leased_until.is_(None) | (t.c.leased_until <= now)
        if view == "done":
            return t.c.state == DONE
        if view == "dead":
            return t.c.state == FAILED
        if view == "running":
            return (t.c.state == PENDING) & (t.c.leased_until > now)
        if view == "failed":
            return (t.c.state == PENDING) & not_running & t.c.last_error.is_not(None)
        if view in ("queued", "scheduled"):
            due = t.c.eta <= now if view == "queued" else t.c.eta > now
            return (t.c.state == PENDING) & not_running & t.c.last_error.is_(None) & due
        raise ValueError(f"view must be one of {', '.join(VIEWS)}, not {view!r}")

    def listing(
        self,
        *,
        queue: str | None = None,
        view: str | None = None,
        limit: int = 100,
        offset: int = 0,
        now: float | None = None,
    ) -> list[TaskInfo]:
        """Tasks with their signed bodies, for the admin page: of one ``queue`` and
        one of :data:`VIEWS` (None: all). Unfinished tasks come first, by ETA;
        finished ones after, the latest first."""
        sa, t = self._sa, self.table
        now = time.time() if now is None else now
        mine = t.c.queue == queue if queue else sa.true()
        if view is not None:
            finished = view in ("dead", "done")
            return self._list(mine & self._view_filter(view, now), finished, limit, offset)
        # Two queries, each sorted its own way, rather than one sorted by an
        # expression: that would sort every tombstone to show the first page.
        with self.engine.connect() as conn:
            unfinished = conn.execute(sa.select(sa.func.count()).where(mine, t.c.state == PENDING)).scalar() or 0
        rows = self._list(mine & (t.c.state == PENDING), False, limit, offset) if offset < unfinished else []
        if len(rows) < limit:
            rows += self._list(mine & (t.c.state != PENDING), True, limit - len(rows), max(0, offset - unfinished))
        return rows

    def _list(self, where: Any, finished: bool, limit: int, offset: int) -> list[TaskInfo]:
        t = self.table
        order = (t.c.finished.desc(), t.c.id.desc()) if finished else (t.c.eta, t.c.id)
        return self._infos(self._info_select(body=True).where(where).order_by(*order).limit(limit).offset(offset))

    def stats(self, *, now: float | None = None) -> dict[str, QueueStats]:
        """Every queue that holds a task (or a tombstone), with its counts by view."""
        sa, t = self._sa, self.table
        now = time.time() if now is None else now

        def count(condition: Any) -> Any:
            return sa.func.sum(sa.case((condition, 1), else_=0))

        # Three queries, each reading only what it counts: states from the
        # index; the kinds of unfinished tasks from those rows only; recent
        # outcomes from finished rows of the last hour.
        leased = t.c.leased_until > now
        waiting = t.c.leased_until.is_(None) | (t.c.leased_until <= now)
        fresh = waiting & t.c.last_error.is_(None)
        unfinished = sa.select(
            t.c.queue,
            count(leased).label("running"),
            count(waiting & t.c.last_error.is_not(None)).label("failed"),
            count(fresh & (t.c.eta > now)).label("scheduled"),
            sa.func.min(sa.case((fresh & (t.c.eta <= now), t.c.eta), else_=None)).label("oldest_queued"),
        ).where(t.c.state == PENDING).group_by(t.c.queue)
        recent = sa.select(
            t.c.queue, t.c.state, count(t.c.finished > now - 60).label("minute"), sa.func.count().label("hour"),
        ).where(t.c.state != PENDING, t.c.finished > now - 3600).group_by(t.c.queue, t.c.state)
        with self.engine.connect() as conn:
            states = conn.execute(
                sa.select(t.c.queue, t.c.state, sa.func.count()).group_by(t.c.queue, t.c.state)
            ).all()
            kinds = {row.queue: row for row in conn.execute(unfinished)}
            lately = {(row.queue, row.state): row for row in conn.execute(recent)}
        counts: dict[str, dict[str, Any]] = {}
        for name, state, number in states:
            counts.setdefault(name, {})[STATE_NAMES[state]] = number
        result = {}
        for name in sorted(counts):
            by_state, kind = counts[name], kinds.get(name)
            pending = by_state.get("pending", 0)
            values: dict[str, Any] = {"done": by_state.get("done", 0), "dead": by_state.get("failed", 0)}
            if kind is not None:
                values.update(running=kind.running or 0, failed=kind.failed or 0, scheduled=kind.scheduled or 0,
                              oldest_queued=kind.oldest_queued)
            values["queued"] = pending - values.get("running", 0) - values.get("failed", 0) - values.get("scheduled", 0)
            done, dead = lately.get((name, DONE)), lately.get((name, FAILED))
            values["done_last_minute"] = (done.minute or 0) if done else 0
            values["done_last_hour"] = done.hour if done else 0
            values["dead_last_hour"] = dead.hour if dead else 0
            result[name] = QueueStats(name, **values)
        return result

    def purge_queue(self, queue: str, *, batch: int = 500) -> int:
        """Delete every unfinished and dead task of ``queue`` and their stored
        payloads, as App Engine's purge does; returns how many.

        Tombstones of finished tasks stay, so their names stay reserved. A task
        that a worker runs meanwhile finishes, but its outcome finds no row and
        it is not run again. Tasks added after the purge began are kept. Works
        in batches of ``batch`` rows, each its own transaction, so workers and
        ``defer`` are never held up for long.
        """
        sa, t = self._sa, self.table
        mine = (t.c.queue == queue) & t.c.state.in_([PENDING, FAILED])
        with self.engine.connect() as conn:
            last = conn.execute(sa.select(sa.func.max(t.c.id)).where(mine)).scalar()
        deleted = 0
        while last is not None:
            with self._writer.begin() as conn:
                rows = conn.execute(
                    sa.select(t.c.id, t.c.body).where(mine, t.c.id <= last).order_by(t.c.id).limit(batch)
                ).all()
                if not rows:
                    break
                deleted += conn.execute(t.delete().where(t.c.id.in_([r[0] for r in rows]))).rowcount
            for _, body in rows:
                key = self.codec.stored_key(body) if body else None
                if key:
                    self.codec.discard(key)
        return deleted

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


def _lease_columns(sa: Any) -> list[Any]:
    """The lease number, whether the claim counted the attempt, and the suspect mark."""
    return [
        sa.Column("claims", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("counted", sa.SmallInteger(), nullable=False, server_default="0"),
        sa.Column("suspect", sa.SmallInteger(), nullable=False, server_default="0"),
    ]


def _batch(rows: list[Any]) -> list[Any]:
    """The rows one claim takes: a suspect alone, else those before the first suspect."""
    if not rows:
        return []
    if rows[0][11]:
        return rows[:1]
    for index, row in enumerate(rows):
        if row[11]:
            return rows[:index]
    return rows
