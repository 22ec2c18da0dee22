"""Deferred tasks: count the words of a text in the background, show the result when done.

The server runs a dispatcher thread (``start``); with ``--disable-task-running``
tasks stay in the queue until ``gaeservices tasks run --all`` runs them.
"""

from __future__ import annotations

import argparse
import html
import json
import time
from collections import Counter
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

from gaeservices.config import Services, get_services
from gaeservices.tasks import current_task, defer

from .app import page

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment
    from gaeservices.tasks.worker import Dispatcher

PREFIX = "/tasks"
TITLE = "Tasks: count words in the background"
JOBS_KEY = "demo:tasks:jobs"


def count_words(job: str, text: str) -> None:
    """The deferred task: its result goes to the store, where the page finds it."""
    words = [w.strip(".,;:!?\"'()").lower() for w in text.split()]
    common = Counter(w for w in words if w).most_common(5)
    task = current_task()
    result = {
        "words": len(words),
        "common": common,
        "task": task.name if task else "",
        "attempt": task.execution_count if task else 0,
        "finished": time.time(),
    }
    get_services().store.put(f"demo:tasks:result:{job}", json.dumps(result).encode())


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--disable-task-running",
        action="store_true",
        help="leave deferred tasks in the queue (run them with `gaeservices tasks run --all`)",
    )


def start(services: Services, options: argparse.Namespace) -> Dispatcher | None:
    """Start a dispatcher thread (returned, so it can be stopped) unless told not to."""
    if getattr(options, "disable_task_running", False):
        print(
            "task running disabled: run queued tasks with `gaeservices tasks run --all`, "
            "or one by one from the task admin page (/_ah/admin/tasks/)",
            flush=True,
        )
        return None
    from gaeservices.tasks.local import LocalQueue
    from gaeservices.tasks.worker import Dispatcher

    if isinstance(services.queue, LocalQueue):
        return Dispatcher(services, threads=1).start()
    return None


def _jobs(services: Services) -> list[dict[str, Any]]:
    raw = services.store.get(JOBS_KEY)
    return json.loads(raw) if raw else []


def make_app(services: Services) -> WSGIApplication:
    def tasks_page(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        store = services.store
        if environ["REQUEST_METHOD"] == "POST":
            size = int(environ.get("CONTENT_LENGTH") or 0)
            form = parse_qs(environ["wsgi.input"].read(size).decode("utf-8", "replace"))
            text = (form.get("text") or [""])[0][:100_000]
            job = f"{time.time_ns():x}"
            handle = defer(count_words, job, text, _services=services)
            jobs = [{"job": job, "task": handle.name, "chars": len(text)}] + _jobs(services)[:9]
            store.put(JOBS_KEY, json.dumps(jobs).encode())
            start_response("303 See Other", [("Location", environ.get("SCRIPT_NAME", "") + "/")])
            return [b""]
        rows = []
        for item in _jobs(services):
            raw = store.get(f"demo:tasks:result:{item['job']}")
            if raw:
                result = json.loads(raw)
                common = ", ".join(f"{html.escape(w)} ({n})" for w, n in result["common"])
                status = f"<strong>{result['words']} words</strong>; most common: {common}"
            else:
                status = "<em>queued</em>"
            rows.append(
                f"<tr><td><code>{html.escape(item['task'][:12])}</code></td>"
                f"<td>{item['chars']} chars</td><td class='result'>{status}</td></tr>"
            )
        table = f"<table>{''.join(rows)}</table>" if rows else "<p class='note'>No jobs yet.</p>"
        body = (
            "<form method='post'><textarea name='text' rows='5' cols='60'>"
            "The quick brown fox jumps over the lazy dog. The dog sleeps.</textarea><br>"
            "<button>Count words later</button></form>"
            f"<p class='note'>queue: <code>{html.escape(type(services.queue).__name__)}</code>; "
            "reload to see results; the queue itself is on the "
            "<a href='/_ah/admin/tasks/'>task admin page</a>.</p>" + table
        )
        start_response("200 OK", [("Content-Type", "text/html; charset=utf-8")])
        return [page(TITLE, body)]

    return tasks_page
