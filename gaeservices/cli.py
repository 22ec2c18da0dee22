"""The ``gaeservices`` command: ``gaeservices COMMAND [options]``.

Each command lives with the service it belongs to and receives the remaining
arguments; this module only dispatches, so adding a command imports nothing else.
"""

from __future__ import annotations

import errno
import os
import signal
import socket
import sys

# command -> ("module:function", one-line help). The function takes argv (list[str])
# and returns an exit status.
COMMANDS = {
    "demo": ("gaeservices.demo.serve:main", "serve the demo application on embedded defaults"),
    "worker": ("gaeservices.tasks.worker:main", "run deferred tasks from the local queue"),
    "tasks": ("gaeservices.tasks.admin:main", "list, run, retry or delete queued tasks"),
    "smtpd": ("gaeservices.mail.devserver:main", "a development SMTP server that prints each message"),
}


class CommandError(Exception):
    """A command cannot go on. :func:`main` prints ``gaeservices COMMAND: message`` as
    one line on stderr, no traceback, and exits with ``status``."""

    def __init__(self, message: str, status: int = 1) -> None:
        super().__init__(message)
        self.status = status


def cannot_listen(host: str, port: int, error: OSError) -> CommandError:
    """The error for a server command whose address cannot be bound.

    Server commands bind their socket before they start anything else (threads,
    files), so that this is all that happens when the port is taken.
    """
    if error.errno == errno.EADDRINUSE:
        reason = "the address is already in use; choose another port with --port"
    else:
        reason = error.strerror or str(error)
    return CommandError(f"cannot listen on {host}:{port}: {reason}")


def listen(host: str, port: int, *, backlog: int = 1024) -> socket.socket:
    """A socket bound to ``host:port`` and listening (port 0: any free one).

    Server commands call this before they start anything else (threads, files,
    the application), so that a taken port is all that happens: one line, no
    traceback. Hand the socket to the server (waitress' ``sockets=``,
    asyncio's ``create_server(sock=...)``).
    """
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except socket.gaierror as error:
        raise CommandError(f"cannot listen on {host}:{port}: {error.strerror}") from None
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # not over a live listener
        sock.bind(address)
        sock.listen(backlog)
    except OSError as error:
        sock.close()
        raise cannot_listen(host, port, error) from None
    return sock


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: gaeservices COMMAND [options]", "", "commands:"]
    lines += [f"  {name.ljust(width)}  {help_}" for name, (_, help_) in COMMANDS.items()]
    lines += ["", "`gaeservices COMMAND --help` describes a command's options."]
    return "\n".join(lines)


def _reader_gone() -> int:
    """The reader of our output went away (``gaeservices tasks list | head``): end
    quietly, as a Unix tool that SIGPIPE ends, without a traceback.

    What is still buffered cannot be written: stdout goes to the null device, so
    the interpreter's own flush at exit does not fail and report it once more.
    """
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return 128 + signal.SIGPIPE


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
    from .exceptions import BackendUnavailableError, ConfigurationError

    function = load_callable(entry[0], f"command {name}")
    try:
        status = int(function(rest) or 0)
        sys.stdout.flush()  # here, not at exit, where a closed pipe is only reported
        return status
    except BrokenPipeError:
        return _reader_gone()
    except CommandError as error:
        print(f"gaeservices {name}: {error}", file=sys.stderr)
        return error.status
    except (ConfigurationError, BackendUnavailableError) as error:
        # A bad setting or a missing extra: the message says what to change.
        print(f"gaeservices {name}: {error}", file=sys.stderr)
        return 2
