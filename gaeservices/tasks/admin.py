"""``gaeservices tasks``: look at the local queue, and run, retry or delete tasks by hand.

This is how a developer runs the tasks that ``gaeservices demo
--disable-task-running`` leaves in the queue, and how a dead-lettered task is
sent round again once its bug is fixed::

    gaeservices tasks list [--queue Q] [--state queued|scheduled|running|failed|dead|done]
    gaeservices tasks run NAME... | --all [--queue Q]
    gaeservices tasks retry NAME...
    gaeservices tasks delete NAME...
    gaeservices tasks purge-queue QUEUE
    gaeservices tasks purge

On other backends the commands do what the backend allows (``purge-queue`` on
App Engine and Celery, ``delete`` on App Engine) and say so otherwise. It
imports the application from the current directory (and ``--pythonpath``), as
``gaeservices worker`` does. ``run`` exits with 1 unless every task succeeded.
The listing and the actions are those of the admin page
(:mod:`gaeservices.tasks.admin_app`): both go through
:mod:`gaeservices.tasks.inspection`.
"""

from __future__ import annotations

import argparse
import sys
from datetime import datetime, timezone
from typing import Any, TextIO

from ..config import Services, get_services
from ..exceptions import ConfigurationError
from ..cli import CommandError
from .inspection import UnsupportedActionError, inspector_for
from .local import VIEWS, LocalQueue

__all__ = ["main"]


def _when(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gaeservices tasks", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    listing = commands.add_parser("list", help="list tasks: unfinished ones by ETA, then finished ones")
    listing.add_argument("--queue")
    listing.add_argument(
        "--state", choices=VIEWS,
        help="failed: failed and waiting for a retry; dead: given up (retries exhausted or a permanent failure)",
    )
    listing.add_argument("--limit", type=int, default=100)
    run = commands.add_parser("run", help="run tasks now, due or not, in this process")
    run.add_argument("names", nargs="*")
    run.add_argument("--all", action="store_true", help="every pending task (of --queue)")
    run.add_argument("--queue")
    for name, help_ in (("retry", "make failed tasks due again"), ("delete", "delete tasks and free their names")):
        command = commands.add_parser(name, help=help_)
        command.add_argument("names", nargs="+")
    purge_queue = commands.add_parser(
        "purge-queue", help="delete a queue's unfinished and dead tasks (finished tasks' names stay taken)"
    )
    purge_queue.add_argument("queue")
    commands.add_parser("purge", help="delete expired tombstones of finished tasks")
    for command in commands.choices.values():
        command.add_argument(
            "--pythonpath", metavar="DIRS",
            help="directories to import the application from, before the current one (comma- or os.pathsep-separated)",
        )
    return parser


def main(argv: list[str] | None = None, *, services: Services | None = None, out: TextIO | None = None) -> int:
    options = _parser().parse_args(argv)
    from .bootstrap import add_import_paths

    add_import_paths(options.pythonpath)  # `run` imports the application's task functions
    out = out or sys.stdout
    services = services or get_services()
    queue = services.queue
    if not isinstance(queue, LocalQueue) and (options.command == "purge" or getattr(options, "all", False)):
        raise ConfigurationError(
            f"`gaeservices tasks {options.command}{' --all' if options.command == 'run' else ''}` works on the "
            f"local:// queue, not {type(queue).__name__}"
        )
    try:
        return _COMMANDS[options.command](queue, services, options, out)
    except UnsupportedActionError as error:  # what this backend cannot do, and what to do instead
        raise CommandError(str(error), 2) from None


def _list(queue: Any, services: Services, options: Any, out: TextIO) -> int:
    inspector = inspector_for(services)
    for row in inspector.tasks(queue=options.queue, view=options.state, limit=options.limit):
        error = (row.last_error or "").strip().splitlines()
        # a finished task has no ETA: show when it finished
        when = f"eta={_when(row.eta)}" if row.eta is not None else f"finished={_when(row.finished)}"
        call = row.call.problem or f"{row.call.callable}({row.call.arguments})"
        print(
            f"{row.name}\t{row.queue}\t{row.view}\tattempts={row.attempts}\t"
            f"{when}\t{call}\t{error[-1] if error else ''}".rstrip(),
            file=out,
        )
    summary = "; ".join(
        f"{q.name}: " + ", ".join(f"{v} {getattr(q, v)}" for v in VIEWS if getattr(q, v))
        for q in inspector.queues()
    )
    print(f"# {summary or 'empty'}", file=out)
    return 0


def _run(queue: Any, services: Services, options: Any, out: TextIO) -> int:
    names = list(options.names)
    if options.all:
        names += [i.name for i in queue.tasks(queue=options.queue, state="pending", limit=1_000_000) if not i.running]
    if not names:
        print("nothing to run (give task names, or --all)", file=out)
        return 1
    inspector = inspector_for(services)
    status = 0
    for name in names:
        result = inspector.run(name)
        if result is None:
            print(f"{name}\tnot run: not waiting (finished, dead, gone) or a worker holds it", file=out)
            status = 1
            continue
        last = result.error.strip().splitlines()[-1] if result.error else ""
        print(f"{name}\t{result.outcome}\t{last}".rstrip(), file=out)
        status |= 0 if result.outcome == "success" else 1
    return status


def _retry(queue: Any, services: Services, options: Any, out: TextIO) -> int:
    inspector = inspector_for(services)
    status = 0
    for name in options.names:
        ok = inspector.retry(name)
        print(f"{name}\t{'due now' if ok else 'not found, done, running, or without a payload'}", file=out)
        status |= 0 if ok else 1
    return status


def _delete(queue: Any, services: Services, options: Any, out: TextIO) -> int:
    inspector = inspector_for(services)
    status = 0
    for name in options.names:
        ok = inspector.delete(name)
        print(f"{name}\t{'deleted' if ok else 'not found'}", file=out)
        status |= 0 if ok else 1
    return status


def _purge_queue(queue: Any, services: Services, options: Any, out: TextIO) -> int:
    purged = inspector_for(services, queue_names=[options.queue]).purge(options.queue)
    print(f"purged {purged} task(s) of {options.queue}" if purged >= 0 else f"purged {options.queue}", file=out)
    return 0


def _purge(queue: Any, services: Services, options: Any, out: TextIO) -> int:
    print(f"purged {queue.purge()} tombstone(s)", file=out)
    return 0


_COMMANDS = {
    "list": _list, "run": _run, "retry": _retry, "delete": _delete, "purge-queue": _purge_queue, "purge": _purge,
}
