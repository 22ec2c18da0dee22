"""``python -m bench import``: what importing gaeservices costs, beside its peers.

Each statement runs in a fresh interpreter (``python -I -c``), timed inside it
around the import alone, so interpreter start-up is not counted. Rounds take the
contenders in turn, after one warm-up round that writes the bytecode caches; the
table gives each one's median and its ratio to gaeservices' line of the same group.

``tests/test_config.py::test_import_is_light`` checks what matters for
correctness -- ``import gaeservices`` imports no backend's dependency -- without
a clock; the time is measured here, where a loaded machine cannot fail a test.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys

from bench._common import table

# group -> [(contender, import statement)]; the first of each group is ours.
GROUPS: dict[str, list[tuple[str, str]]] = {
    "package": [
        ("gaeservices", "import gaeservices"),
        ("webob (a dependency)", "import webob"),
    ],
    "sessions": [
        ("gaeservices SessionMiddleware", "from gaeservices import SessionMiddleware"),
        ("Beaker SessionMiddleware", "from beaker.middleware import SessionMiddleware"),
        ("Django SessionMiddleware", "from django.contrib.sessions.middleware import SessionMiddleware"),
        ("Django cached_db SessionStore", "from django.contrib.sessions.backends.cached_db import SessionStore"),
    ],
    "tasks": [
        ("gaeservices defer", "from gaeservices import defer"),
        ("Celery", "from celery import Celery"),
        ("huey SqliteHuey", "from huey import SqliteHuey"),
    ],
    "files": [
        ("gaeservices serve_file", "from gaeservices import serve_file"),
        ("whitenoise WhiteNoise", "from whitenoise import WhiteNoise"),
        ("Werkzeug send_file", "from werkzeug.utils import send_file"),
    ],
}

_TIMER = "import time; t = time.perf_counter(); {statement}; print(time.perf_counter() - t)"


def time_import(statement: str) -> float | None:
    """Seconds the import took in a fresh interpreter; None if it failed (not installed)."""
    done = subprocess.run(
        [sys.executable, "-I", "-c", _TIMER.format(statement=statement)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        return None
    return float(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench import", description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=9, help="timed rounds (default 9)")
    options = parser.parse_args(argv)

    contenders = [item for group in GROUPS.values() for item in group]
    for _, statement in contenders:  # warm-up: bytecode caches written, files in the page cache
        time_import(statement)
    samples: dict[str, list[float]] = {statement: [] for _, statement in contenders}
    missing: set[str] = set()
    for _ in range(options.rounds):
        for _, statement in contenders:
            seconds = time_import(statement)
            if seconds is None:
                missing.add(statement)
            else:
                samples[statement].append(seconds)

    print(f"Python {sys.version.split()[0]}, {options.rounds} rounds, medians of a fresh interpreter each")
    rows = []
    for group, items in GROUPS.items():
        ours = statistics.median(samples[items[0][1]]) if samples[items[0][1]] else None
        for name, statement in items:
            if statement in missing or not samples[statement]:
                rows.append([group, name, "not installed", ""])
                continue
            median = statistics.median(samples[statement])
            ratio = f"{median / ours:.2f}x" if ours else ""
            rows.append([group, name, f"{median * 1000:.1f}", ratio])
    print(table(rows, ["group", "import", "ms", "vs gaeservices"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
