"""``gaeservices demo``: serve the demo with waitress on embedded defaults."""

from __future__ import annotations

import argparse
import logging
import sys

from gaeservices.config import get_services

from .app import load_pages, make_app


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gaeservices demo", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--threads", type=int, default=4)
    for p in load_pages():
        if hasattr(p, "add_arguments"):
            p.add_arguments(parser)
    options = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")

    try:
        import waitress
    except ImportError:
        print("gaeservices demo needs waitress and SQLAlchemy: pip install 'gaeservices[demo]'",
              file=sys.stderr)
        return 2

    services = get_services()
    app = make_app(services)
    for p in load_pages():
        if hasattr(p, "start"):
            p.start(services, options)
    print(f"gaeservices demo on http://{options.host}:{options.port}/  ({services!r})", flush=True)
    waitress.serve(app, host=options.host, port=options.port, threads=options.threads)
    return 0
