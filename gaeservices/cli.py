"""The ``gaeservices`` command: ``gaeservices COMMAND [options]``.

Each command lives with the service it belongs to and receives the remaining
arguments; this module only dispatches, so adding a command imports nothing else.
"""

from __future__ import annotations

import sys

# command -> ("module:function", one-line help). The function takes argv (list[str])
# and returns an exit status.
COMMANDS = {
    "demo": ("gaeservices.demo.serve:main", "serve the demo application on embedded defaults"),
    "worker": ("gaeservices.tasks.worker:main", "run deferred tasks from the local queue"),
    "tasks": ("gaeservices.tasks.admin:main", "list, run, retry or delete queued tasks"),
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: gaeservices COMMAND [options]", "", "commands:"]
    lines += [f"  {name.ljust(width)}  {help_}" for name, (_, help_) in COMMANDS.items()]
    lines += ["", "`gaeservices COMMAND --help` describes a command's options."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    name, rest = argv[0], argv[1:]
    entry = COMMANDS.get(name)
    if entry is None:
        print(f"gaeservices: unknown command {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    from .config import load_callable

    function = load_callable(entry[0], f"command {name}")
    return int(function(rest) or 0)
