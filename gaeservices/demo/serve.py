"""``gaeservices demo``: serve the demo with waitress on embedded defaults."""

from __future__ import annotations

import argparse
import logging
import signal
from types import FrameType

from gaeservices.cli import CommandError, listen
from gaeservices.config import get_services

from .app import load_pages, make_app


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gaeservices demo", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080, help="TCP port (default 8080; 0: any free one)")
    parser.add_argument("--threads", type=int, default=4)
    for p in load_pages():
        if hasattr(p, "add_arguments"):
            p.add_arguments(parser)
    options = parser.parse_args(argv)

    try:
        from waitress.server import create_server
    except ImportError:
        raise CommandError("needs waitress and SQLAlchemy: pip install 'gaeservices[demo]'", 2) from None
    # Listen first: if the port is taken, that is said in one line and nothing
    # else (the application, its signing key, the task dispatcher) has started.
    sock = listen(options.host, options.port)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    services = get_services()
    server = create_server(make_app(services), sockets=[sock], threads=options.threads)
    for p in load_pages():
        if hasattr(p, "start"):
            p.start(services, options)
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    print(f"gaeservices demo on http://{shown}:{port}/  ({services!r})", flush=True)

    def stop(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(0)  # waitress shuts its threads down on SystemExit

    signal.signal(signal.SIGTERM, stop)
    server.run()
    return 0
