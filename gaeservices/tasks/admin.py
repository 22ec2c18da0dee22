"""``gaeservices tasks``: look at the local queue, and run, retry or delete tasks by hand.

This is how a developer runs the tasks that ``gaeservices demo
--disable-task-running`` leaves in the queue, and how a dead-lettered task is
sent round again once its bug is fixed::

    gaeservices tasks list [--queue Q] [--state pending|done|failed]
    gaeservices tasks run NAME... | --all [--queue Q]
    gaeservices tasks retry NAME...
    gaeservices tasks delete NAME...
    gaeservices tasks purge
"""

from __future__ import annotations

import argparse
import sys
from datetime import datetime, timezone
from typing import Any, TextIO

from ..config import Services, get_services
from ..exceptions import ConfigurationError
from .local import LocalQueue

__all__ = ["main"]


def _when(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gaeservices tasks", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    listing = commands.add_parser("list", help="list tasks, newest state first")
    listing.add_argument("--queue")
    listing.add_argument("--state", choices=["pending", "done", "failed"])
    listing.add_argument("--limit", type=int, default=100)
    run = commands.add_parser("run", help="run tasks now, due or not, in this process")
    run.add_argument("names", nargs="*")
    run.add_argument("--all", action="store_true", help="every pending task (of --queue)")
    run.add_argument("--queue")
    for name, help_ in (("retry", "make failed tasks due again"), ("delete", "delete tasks and free their names")):
        command = commands.add_parser(name, help=help_)
        command.add_argument("names", nargs="+")
    commands.add_parser("purge", help="delete expired tombstones of finished tasks")
    return parser


def main(argv: list[str] | None = None, *, services: Services | None = None, out: TextIO | None = None) -> int:
    options = _parser().parse_args(argv)
    out = out or sys.stdout
    services = services or get_services()
    queue = services.queue
    if not isinstance(queue, LocalQueue):
        raise ConfigurationError(f"`gaeservices tasks` manages the local:// queue, not {type(queue).__name__}")
    return _COMMANDS[options.command](queue, services, options, out)


def _list(queue: LocalQueue, services: Services, options: Any, out: TextIO) -> int:
    rows = queue.tasks(queue=options.queue, state=options.state, limit=options.limit)
    for info in rows:
        state = "running" if info.running else info.state
        error = (info.last_error or "").strip().splitlines()
        # a finished task's eta is when its tombstone ends: show when it finished
        when = f"finished={_when(info.finished)}" if info.state != "pending" else f"eta={_when(info.eta)}"
        print(
            f"{info.name}\t{info.queue}\t{state}\tattempts={info.attempts}\t"
            f"{when}\t{error[-1] if error else ''}".rstrip(),
            file=out,
        )
    counts = queue.counts()
    summary = ", ".join(f"{q}/{s}: {n}" for (q, s), n in sorted(counts.items())) or "empty"
    print(f"# {summary}", file=out)
    return 0


def _run(queue: LocalQueue, services: Services, options: Any, out: TextIO) -> int:
    from .worker import Dispatcher

    names = list(options.names)
    if options.all:
        names += [i.name for i in queue.tasks(queue=options.queue, state="pending", limit=1_000_000) if not i.running]
    if not names:
        print("nothing to run (give task names, or --all)", file=out)
        return 1
    dispatcher = Dispatcher(services)
    status = 0
    for start in range(0, len(names), 500):
        for task in queue.claim(500, names=names[start:start + 500]):
            result = dispatcher.deliver(task)
            queue.finish([(task, result)])
            last = result.error.strip().splitlines()[-1] if result.error else ""
            print(f"{task.name}\t{result.outcome}\t{last}".rstrip(), file=out)
            status |= 0 if result.done else 1
    return status


def _retry(queue: LocalQueue, services: Services, options: Any, out: TextIO) -> int:
    status = 0
    for name in options.names:
        ok = queue.retry(name)
        print(f"{name}\t{'due now' if ok else 'not found, done, running, or without a payload'}", file=out)
        status |= 0 if ok else 1
    return status


def _delete(queue: LocalQueue, services: Services, options: Any, out: TextIO) -> int:
    status = 0
    for name in options.names:
        ok = queue.delete(name)
        print(f"{name}\t{'deleted' if ok else 'not found'}", file=out)
        status |= 0 if ok else 1
    return status


def _purge(queue: LocalQueue, services: Services, options: Any, out: TextIO) -> int:
    print(f"purged {queue.purge()} tombstone(s)", file=out)
    return 0


_COMMANDS = {"list": _list, "run": _run, "retry": _retry, "delete": _delete, "purge": _purge}
