"""The task admin page on a large local queue, on SQLite and PostgreSQL.

The page must stay usable when the table holds a day of tombstones. A table of
``--done`` finished tasks, a tenth as many waiting and a hundredth dead (two
queues) is built by bulk insert; then, medians of ``--repeats`` runs:

- the bare count by queue and state (one indexed GROUP BY: the floor, what the
  command's summary costs);
- ``stats()`` (the page's queue table: counts by state, kinds of unfinished
  tasks, outcomes of the last minute and hour);
- ``listing()`` of one page of 50 (with bodies);
- the whole page as a WSGI request: stats, listing, a verified preview of each
  call, HTML; and its 100th page (an OFFSET of 4,950).

No peer has such a page to compare with; the ratio printed is the page over the
bare count. PostgreSQL: ``--postgres URL`` (default the test server's database
``test``), in a schema of its own, dropped afterwards.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import uuid
from typing import Any

from bench._common import table

PG_DEFAULT = "postgresql://127.0.0.1:5432/test"


def record(*args: Any, **kwargs: Any) -> None:  # the deferred callable the rows name
    pass


def build(services: Any, done: int) -> None:
    from gaeservices.tasks import payload
    from gaeservices.tasks.local import DONE, FAILED, PENDING

    queue = services.queue
    now = time.time()
    pickled = payload.dumps(record, ("x" * 40, 1, {"k": [1, 2, 3]}), {"flag": True})
    body, _ = queue.codec.seal(pickled, name="n", queue="default", expires=now + 86400)
    rows, number = [], 0
    for state, count in ((DONE, done), (PENDING, done // 10), (FAILED, done // 100)):
        for _ in range(count):
            number += 1
            rows.append({
                "name": f"t{number:09d}", "queue": ("default", "mail")[number % 2], "state": state,
                "eta": now + (86000 if state == DONE else number % 100 - 50), "created": now - 100,
                "attempts": 0 if state == PENDING else 1, "body": None if state == DONE else body,
                "url": "/_ah/queue/deferred", "options": None,
                "last_error": "RuntimeError: x" if state == FAILED else None,
                "finished": None if state == PENDING else now - number % 7200, "leased_until": None,
            })
    with queue.engine.begin() as connection:
        for start in range(0, len(rows), 5000):
            connection.execute(queue.table.insert(), rows[start:start + 5000])


def median_ms(fn: Any, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def measure(label: str, store_url: str, done: int, repeats: int) -> list[str]:
    import webob

    from gaeservices import Services
    from gaeservices.tasks.admin_app import TaskAdminApp

    services = Services(secret_key="k-signing-key-for-the-bench-runs!", data_dir=tempfile.mkdtemp(),
                        environ={}, store=store_url, queue="local://")
    try:
        build(services, done)
        queue = services.queue
        app = TaskAdminApp(services, is_admin=lambda environ: True, basic_auth=None)

        def page(query: str = "") -> None:
            request = webob.Request.blank("/_ah/admin/tasks/?" + query)
            request.script_name, request.path_info = "/_ah/admin/tasks", "/"
            assert request.get_response(app).status_code == 200

        floor = median_ms(queue.counts, repeats)
        whole = median_ms(page, repeats)
        return [
            label, f"{done + done // 10 + done // 100:,}", f"{floor:.1f}", f"{median_ms(queue.stats, repeats):.1f}",
            f"{median_ms(lambda: queue.listing(limit=51), repeats):.1f}", f"{whole:.1f}",
            f"{median_ms(lambda: page('page=100'), repeats):.1f}", f"{whole / floor:.1f}x",
        ]
    finally:
        services.close()


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench admin", description=__doc__.split("\n\n")[0])
    parser.add_argument("--done", type=int, action="append", help="finished tasks (repeatable; default 1000 and 200000)")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--postgres", default=PG_DEFAULT, help="a PostgreSQL database URL, or '' to skip")
    options = parser.parse_args(argv)
    sizes = options.done or [1000, 200_000]
    rows = []
    for size in sizes:
        with tempfile.TemporaryDirectory() as directory:
            rows.append(measure("SQLite", f"sqlite:///{directory}/store.sqlite3", size, options.repeats))
    if options.postgres:
        import psycopg

        schema = "bench_admin_" + uuid.uuid4().hex[:8]
        dsn = options.postgres
        with psycopg.connect(dsn, autocommit=True) as connection:
            connection.execute(f'CREATE SCHEMA "{schema}"')
        try:
            separator = "&" if "?" in options.postgres else "?"
            url = f"{options.postgres}{separator}options=-csearch_path%3D{schema}"
            for size in sizes:
                rows.append(measure("PostgreSQL", url, size, options.repeats))
                with psycopg.connect(dsn, autocommit=True) as connection:
                    connection.execute(f'DELETE FROM "{schema}".gaeservices_tasks')
        finally:
            from gaeservices.config import BackendURL
            from gaeservices.store.engine import dispose_engine

            dispose_engine(BackendURL(url))
            with psycopg.connect(dsn, autocommit=True) as connection:
                connection.execute(f'DROP SCHEMA "{schema}" CASCADE')
    print(table(rows, ["database", "rows", "count ms", "stats ms", "listing ms", "page ms", "page 100 ms",
                       "page / count"]))
    return 0
