"""``python -m bench NAME [options]`` runs bench/NAME.py; ``python -m bench all`` runs each.

Every benchmark runs this project and its peers side by side in one process, on
the same real servers, and prints medians and ratios: absolute numbers on a noisy
machine mean little, ratios measured together do.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys

import bench


def names() -> list[str]:
    return sorted(m.name for m in pkgutil.iter_modules(bench.__path__) if not m.name.startswith("_"))


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: python -m bench {all|" + "|".join(names()) + "} [options]")
        return 0
    selected = names() if argv[0] == "all" else [argv[0]]
    status = 0
    for name in selected:
        if name not in names():
            print(f"no benchmark {name!r}; have: {', '.join(names())}", file=sys.stderr)
            return 2
        print(f"=== bench {name} ===", flush=True)
        status |= int(importlib.import_module(f"bench.{name}").main(argv[1:]) or 0)
    return status


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
