"""``python -m bench files``: serving files, side by side with whitenoise, WebOb FileApp, Werkzeug.

Every server answers the same in-process WSGI requests for the same files (in the
page cache), and every body is consumed fully and closed, as a server would:

- throughput of a 100 MiB file, no ``wsgi.file_wrapper`` (everyone reads in Python);
- a 1 MiB range at a 50 MiB offset, with and without ``wsgi.file_wrapper``
  (wsgiref's, which reads what it is given: a server that reads through the prefix
  pays for it here);
- requests/s for a 1 KiB file, 200 and 304 (revalidated as a browser does, with the
  peer's own ETag and Last-Modified: WebOb's FileApp gives no ETag);
- Python memory growth (tracemalloc peak) while our 100 MiB response is consumed.

Options: ``--size-mib N`` (default 100), ``--repeats N`` (default 5; throughput is
measured in that many alternating rounds).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import tracemalloc
import wsgiref.util
from collections.abc import Callable
from typing import Any

from bench._common import table

MiB = 1024 * 1024


def consume(app: Callable[..., Any], environ: dict[str, Any]) -> tuple[str, dict[str, str], int]:
    seen: dict[str, Any] = {}

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        seen["status"], seen["headers"] = status, headers
        return None

    result = app(environ, start_response)
    size = 0
    try:
        for chunk in result:
            size += len(chunk)
    finally:
        close = getattr(result, "close", None)
        if close is not None:
            close()
    return seen["status"], dict(seen["headers"]), size


def make_environ(path: str, headers: dict[str, str] | None = None, wrapper: bool = False) -> dict[str, Any]:
    environ: dict[str, Any] = {}
    wsgiref.util.setup_testing_defaults(environ)
    environ["PATH_INFO"] = path
    environ.pop("wsgi.file_wrapper", None)
    for name, value in (headers or {}).items():
        environ["HTTP_" + name.upper().replace("-", "_")] = value
    if wrapper:
        environ["wsgi.file_wrapper"] = wsgiref.util.FileWrapper
    return environ


def build_servers(directory: str, services: Any) -> dict[str, Callable[[str], Callable[..., Any]]]:
    """name -> (file name -> WSGI app serving it)."""
    from webob import Request
    from webob.static import FileApp
    from werkzeug.utils import send_file
    from whitenoise import WhiteNoise

    from gaeservices.filetransfers import serve_file

    def not_found(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b""]

    whitenoise = WhiteNoise(not_found, root=directory, max_age=None)
    file_apps: dict[str, FileApp] = {}

    def ours(name: str) -> Callable[..., Any]:
        def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
            return serve_file(Request(environ), name, services=services)(environ, start_response)
        return app

    def webob_fileapp(name: str) -> Callable[..., Any]:
        return file_apps.setdefault(name, FileApp(os.path.join(directory, name)))

    def werkzeug(name: str) -> Callable[..., Any]:
        path = os.path.join(directory, name)

        def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
            return send_file(path, environ)(environ, start_response)
        return app

    return {
        "gaeservices": ours,
        "whitenoise": lambda name: whitenoise,
        "WebOb FileApp": webob_fileapp,
        "werkzeug send_file": werkzeug,
    }


def median_time(fn: Callable[[], Any], repeats: int) -> float:
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def interleaved_rates(calls: dict[str, Callable[[], Any]], repeats: int, seconds: float = 0.3) -> dict[str, float]:
    """Median calls/s of each callable, measured in alternating rounds of about ``seconds``."""
    sizes = {}
    for name, fn in calls.items():
        start = time.perf_counter()
        for _ in range(200):
            fn()
        sizes[name] = max(200, int(200 * seconds / max(time.perf_counter() - start, 1e-9)))
    samples: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(repeats):
        for name, fn in calls.items():
            n = sizes[name]
            start = time.perf_counter()
            for _ in range(n):
                fn()
            samples[name].append(n / (time.perf_counter() - start))
    return {name: statistics.median(values) for name, values in samples.items()}


def verdict(ok: bool) -> str:
    return "met" if ok else "NOT MET"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench files", description=__doc__)
    parser.add_argument("--size-mib", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=5)
    options = parser.parse_args(argv)

    from gaeservices.config import Services

    with tempfile.TemporaryDirectory() as tmp:
        directory = os.path.join(tmp, "files")
        os.makedirs(directory)
        big_size = options.size_mib * MiB
        with open(os.path.join(directory, "big.bin"), "wb") as f:
            block = os.urandom(MiB)
            for _ in range(options.size_mib):
                f.write(block)
        with open(os.path.join(directory, "small.txt"), "wb") as f:
            f.write(os.urandom(1024))
        services = Services(secret_key="bench-signing-key-for-the-test-suite", data_dir=tmp, environ={"GAESERVICES_FILES_ROOT": directory})
        servers = build_servers(directory, services)

        # Correctness first: every peer answers what we time.
        for name, make in servers.items():
            status, _, size = consume(make("big.bin"), make_environ("/big.bin"))
            assert status.startswith("200") and size == big_size, (name, status, size)

        print(f"files: {options.size_mib} MiB and 1 KiB files, medians of {options.repeats} runs")
        rows = []
        results: dict[str, dict[str, float]] = {}
        offset = 50 * MiB if big_size > 51 * MiB else big_size // 2
        range_header = {"Range": f"bytes={offset}-{offset + MiB - 1}"}
        # Throughput in alternating rounds, so a burst of load elsewhere on the
        # machine hits every server alike rather than whichever ran then.
        samples: dict[str, list[float]] = {name: [] for name in servers}
        for _ in range(options.repeats):
            for name, make in servers.items():
                big = make("big.bin")
                start = time.perf_counter()
                consume(big, make_environ("/big.bin"))
                samples[name].append(time.perf_counter() - start)
        throughput = {name: options.size_mib / statistics.median(times) for name, times in samples.items()}
        small_calls: dict[str, tuple[Callable[[], Any], Callable[[], Any]]] = {}
        for name, make in servers.items():
            big, small = make("big.bin"), make("small.txt")
            got: dict[str, float] = {}
            got["MiB/s"] = throughput[name]
            for label, wrapper in (("range ms", False), ("range+fw ms", True)):
                status, headers, size = consume(big, make_environ("/big.bin", range_header, wrapper))
                if status.startswith("206") and size == MiB:
                    got[label] = 1000 * median_time(
                        lambda: consume(big, make_environ("/big.bin", range_header, wrapper)), options.repeats * 4)
                else:
                    got[label] = float("nan")  # the peer does not answer ranges this way
            _, headers, _ = consume(small, make_environ("/small.txt"))
            # What a browser revalidates with: both validators the server gave.
            validators = {}
            for given, sent in (("ETag", "If-None-Match"), ("Last-Modified", "If-Modified-Since")):
                value = next((v for k, v in headers.items() if k.lower() == given.lower()), None)
                if value:
                    validators[sent] = value
            status, _, _ = consume(small, make_environ("/small.txt", validators))
            assert status.startswith("304"), (name, status)
            small_calls[name] = (
                lambda small=small: consume(small, make_environ("/small.txt")),
                lambda small=small, validators=validators: consume(small, make_environ("/small.txt", validators)),
            )
            results[name] = got
        for index, label in ((0, "1KiB 200/s"), (1, "1KiB 304/s")):
            for name, value in interleaved_rates({n: calls[index] for n, calls in small_calls.items()},
                                                 options.repeats).items():
                results[name][label] = value
        for name, got in results.items():
            rows.append([name, f"{got['MiB/s']:,.0f}", f"{got['range ms']:.2f}", f"{got['range+fw ms']:.2f}",
                         f"{got['1KiB 200/s']:,.0f}", f"{got['1KiB 304/s']:,.0f}"])
        print(table(rows, ["server", "MiB/s", "1 MiB range ms", "range, file_wrapper ms", "1 KiB 200 req/s",
                           "1 KiB 304 req/s"]))

        ours_app = servers["gaeservices"]("big.bin")
        environ = make_environ("/big.bin")
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        consume(ours_app, environ)
        peak = tracemalloc.get_traced_memory()[1] - before
        tracemalloc.stop()
        services.close()

    ours, fileapp, whitenoise = results["gaeservices"], results["WebOb FileApp"], results["whitenoise"]
    checks = [
        ("100 MiB throughput vs WebOb FileApp", ours["MiB/s"] / fileapp["MiB/s"], ">= 1.00x",
         ours["MiB/s"] >= fileapp["MiB/s"]),
        ("1 MiB range at 50 MiB, file_wrapper (ms)", ours["range+fw ms"], "<= 2 ms", ours["range+fw ms"] <= 2.0),
        ("1 KiB 200 vs WebOb FileApp", ours["1KiB 200/s"] / fileapp["1KiB 200/s"], ">= 2.00x",
         ours["1KiB 200/s"] >= 2 * fileapp["1KiB 200/s"]),
        ("1 KiB 304 vs WebOb FileApp", ours["1KiB 304/s"] / fileapp["1KiB 304/s"], ">= 2.00x",
         ours["1KiB 304/s"] >= 2 * fileapp["1KiB 304/s"]),
        ("1 KiB 200 vs whitenoise", ours["1KiB 200/s"] / whitenoise["1KiB 200/s"], ">= 0.50x",
         ours["1KiB 200/s"] >= 0.5 * whitenoise["1KiB 200/s"]),
        ("1 KiB 304 vs whitenoise", ours["1KiB 304/s"] / whitenoise["1KiB 304/s"], ">= 0.50x",
         ours["1KiB 304/s"] >= 0.5 * whitenoise["1KiB 304/s"]),
        ("peak Python memory growth, 100 MiB (MiB)", peak / MiB, "<= 1 MiB", peak <= MiB),
    ]
    print()
    print(table([[what, f"{value:.2f}", target, verdict(ok)] for what, value, target, ok in checks],
                ["target", "measured", "wanted", "verdict"]))
    return 0 if all(ok for *_, ok in checks) else 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
