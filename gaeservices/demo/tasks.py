"""Deferred tasks: count the words of a text in the background, and watch each
task run, fail, be retried and, when it keeps failing, be given up.

The server runs a dispatcher thread (``start``); with ``--disable-task-running``
tasks stay in the queue until ``gaeservices tasks run --all`` (or the task admin
page) runs them. Each task's state is read from the queue itself: a task that
failed shows its error and when it is retried, one that was given up shows as
dead, never as queued for ever.
"""

from __future__ import annotations

import argparse
import html
import json
import secrets
import time
from collections import Counter
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, quote

from gaeservices.config import Services, get_services
from gaeservices.exceptions import StoreError
from gaeservices.tasks import RetryOptions, current_task, defer

from .app import page, recall, remember, unavailable

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment
    from gaeservices.tasks.worker import Dispatcher

PREFIX = "/tasks"
TITLE = "Tasks: count words in the background"
JOBS_KEY = "demo:tasks:jobs"
RESULT_KEY = "demo:tasks:result:"
MAX_FORM = 128 * 1024
ADMIN = "/_ah/admin/tasks/"

#: What a task may be asked to do: (label, attempts that fail first, retry options).
#: ``-1`` fails every attempt. The "fail once" task waits long enough before its
#: retry that there is time to retry it by hand from the task admin page.
BEHAVIOURS: dict[str, tuple[str, int, RetryOptions]] = {
    "count": ("count the words", 0, RetryOptions(task_retry_limit=2, min_backoff_seconds=1)),
    "flaky": ("fail the first attempt, then count (retried after 30 s)", 1,
              RetryOptions(task_retry_limit=2, min_backoff_seconds=30)),
    "broken": ("fail every attempt (given up after 3)", -1,
               RetryOptions(task_retry_limit=2, min_backoff_seconds=1, max_backoff_seconds=2)),
}


class DemoTaskFailure(Exception):
    """Raised by a task told to fail: the queue retries it after its backoff."""


def count_words(job: str, text: str, fail_first: int = 0) -> None:
    """The deferred task: its result goes to the store, where the page finds it."""
    task = current_task()
    attempt = task.execution_count if task else 1
    if fail_first < 0 or attempt <= fail_first:
        raise DemoTaskFailure(f"failing on purpose, attempt {attempt}")
    words = [w.strip(".,;:!?\"'()").lower() for w in text.split()]
    common = Counter(w for w in words if w).most_common(5)
    result = {
        "words": len(words),
        "common": common,
        "task": task.name if task else "",
        "attempt": attempt,
        "finished": time.time(),
    }
    get_services().store.put(RESULT_KEY + job, json.dumps(result).encode())


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
            f"or one by one from the task admin page ({ADMIN})",
            flush=True,
        )
        return None
    from gaeservices.tasks.local import LocalQueue
    from gaeservices.tasks.worker import Dispatcher

    if isinstance(services.queue, LocalQueue):
        return Dispatcher(services, threads=1).start()
    return None


def _when(moment: float, now: float) -> str:
    seconds = moment - now
    if seconds < 1:
        return "now"
    return f"in {seconds:.0f} s" if seconds < 120 else f"in {seconds / 60:.0f} min"


def _state(label: str, view: str) -> str:
    return f"<span class='state s-{view}'>{label}</span>"


def _status(item: dict[str, Any], result: dict[str, Any] | None, tasks: dict[str, Any] | None,
            now: float) -> tuple[str, str]:
    """The job's state as HTML, and its view on the task admin page (its words and colours).

    ``tasks`` is what the queue holds of the page's tasks, by name (None: a queue
    this page cannot look into, App Engine's or Celery's).
    """
    if result is not None:
        common = ", ".join(f"{html.escape(w)} ({n})" for w, n in result["common"])
        tries = f" on attempt {result['attempt']}" if result["attempt"] > 1 else ""
        shown = f"{_state('done', 'done')} <strong>{result['words']} words</strong>{tries}; most common: {common}"
        return shown, "done"
    if tasks is None:
        return _state("queued", "queued") + " <span class='note'>no result yet</span>", ""
    info = tasks.get(item["task"])
    if info is None:
        return _state("gone", "scheduled") + " <span class='note'>deleted from the queue</span>", ""
    view = info.view(now)
    error = html.escape(info.last_error.strip().splitlines()[-1]) if info.last_error else ""
    if view == "dead":
        return f"{_state('dead', 'dead')} given up after {info.attempts} attempts: <code>{error}</code>", view
    if view == "failed":
        return (f"{_state('failed', 'failed')} attempt {info.attempts} of {item.get('limit', '?')} "
                f"failed: <code>{error}</code>; retried {_when(info.eta, now)}"), view
    if view == "running":
        return _state("running", "running") + f" attempt {info.attempts + 1}", view
    if view == "scheduled":
        return _state("scheduled", "scheduled") + f" runs {_when(info.eta, now)}", view
    return _state(view, view), view


def _submit(environ: WSGIEnvironment, services: Services) -> None:
    size = min(int(environ.get("CONTENT_LENGTH") or 0), MAX_FORM)
    form = parse_qs(environ["wsgi.input"].read(size).decode("utf-8", "replace"))
    text = (form.get("text") or [""])[0][:100_000]
    mode = (form.get("behaviour") or ["count"])[0]
    if mode not in BEHAVIOURS:
        mode = "count"
    label, fail_first, retry = BEHAVIOURS[mode]
    job = secrets.token_hex(8)
    handle = defer(count_words, job, text, fail_first, _retry_options=retry, _services=services)
    limit = (retry.task_retry_limit or 0) + 1
    remember(services, JOBS_KEY, {"job": job, "task": handle.name, "chars": len(text), "mode": mode,
                                  "limit": limit, "at": time.time()})


def make_app(services: Services) -> WSGIApplication:
    def tasks_page(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        try:
            if environ["REQUEST_METHOD"] == "POST":
                _submit(environ, services)
                start_response("303 See Other", [("Location", environ.get("SCRIPT_NAME", "") + "/")])
                return [b""]
            body, status = _show(services), "200 OK"
        except StoreError as error:
            body, status = unavailable("tasks cannot be listed or queued", services, "store", error), "503 Service Unavailable"
        start_response(status, [("Content-Type", "text/html; charset=utf-8"), ("Cache-Control", "no-store")])
        return [page(TITLE, body)]

    return tasks_page


def _show(services: Services) -> str:
    now = time.time()
    jobs = recall(services, JOBS_KEY)
    results = services.store.get_many([RESULT_KEY + item["job"] for item in jobs])
    get_many = getattr(services.queue, "get_many", None)
    # The tasks without a result yet, read from the queue in one query.
    tasks = None if get_many is None else get_many(
        item["task"] for item in jobs if RESULT_KEY + item["job"] not in results)
    rows = []
    for item in jobs:
        raw = results.get(RESULT_KEY + item["job"])
        status, view = _status(item, json.loads(raw) if raw else None, tasks, now)
        name = f"<code>{html.escape(item['task'])}</code>"
        if view:  # the task on the admin page, where it can be run, retried or deleted
            name = f"<a href='{ADMIN}?view={view}#task-{quote(item['task'])}'>{name}</a>"
        rows.append(
            f"<tr><td>{name}</td>"
            f"<td>{html.escape(BEHAVIOURS.get(item.get('mode', 'count'), BEHAVIOURS['count'])[0])}</td>"
            f"<td class='n'>{item['chars']:,}</td><td class='result'>{status}</td></tr>"
        )
    table = (
        "<table id='jobs'><tr><th>task</th><th>asked to</th><th>chars</th><th>state</th></tr>"
        + "".join(rows) + "</table>"
        if rows else "<p class='note'>No tasks yet.</p>"
    )
    choices = "".join(
        f"<label class='choice'><input type='radio' name='behaviour' value='{key}'"
        f"{' checked' if key == 'count' else ''}> {html.escape(label)}</label>"
        for key, (label, _, _) in BEHAVIOURS.items()
    )
    return (
        "<form method='post'><label>Text<textarea name='text' rows='4'>"
        "The quick brown fox jumps over the lazy dog. The dog sleeps.</textarea></label>"
        f"<div>The task should {choices}</div>"
        "<button>Count words later</button></form>"
        f"<p class='note'>queue: <code>{html.escape(services.describe('queue'))}</code>. "
        "<code>defer()</code> signs the call and queues it; the dispatcher runs it. A task that raises "
        "is retried after a backoff that doubles each time, and given up (dead-lettered) at its retry "
        f"limit. Reload to follow them; run, retry or delete them on the <a href='{ADMIN}'>task admin "
        "page</a>.</p>" + table
    )
