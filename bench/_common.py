"""Shared timing helpers for the benchmarks."""

from __future__ import annotations

import os
import socket
import statistics
import time
from collections.abc import Callable


def rate(fn: Callable[[], object], n: int, repeats: int = 5) -> float:
    """Median calls per second of ``fn`` over ``repeats`` runs of ``n`` calls."""
    results = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(n):
            fn()
        results.append(n / (time.perf_counter() - start))
    return statistics.median(results)


def median_seconds(fn: Callable[[], object], repeats: int = 5) -> float:
    """Median wall time of one call of ``fn``."""
    results = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        results.append(time.perf_counter() - start)
    return statistics.median(results)


def table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(len(header))]
    fmt = "  ".join("{:<%d}" % w for w in widths)
    lines = [fmt.format(*header), fmt.format(*("-" * w for w in widths))]
    lines += [fmt.format(*map(str, r)) for r in rows]
    return "\n".join(lines)


def pin_to_one_cpu(enabled: bool = True) -> str:
    """Run this process, and every server it starts from now on, on one CPU.

    On a small virtual machine a loopback round trip between two CPUs waits for
    the hypervisor to wake the other one: here 85-110 µs against 23-28 µs on one
    CPU, and varying from run to run by more than the libraries under test
    differ. Both sides of a comparison pay it on every round trip, so it drowns
    their difference rather than measure it. Pinned, the round trip is the
    kernel's and the server's own cost. Returns a line saying what was done.
    """
    if not enabled:
        return "CPUs: not pinned (--no-pin)"
    if not hasattr(os, "sched_setaffinity"):
        return "CPUs: not pinned (no sched_setaffinity on this system)"
    cpu = max(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpu})
    return f"CPUs: this process and the servers it starts pinned to CPU {cpu} (--no-pin to leave them free)"


def bare_round_trip_us(host: str, port: int, n: int = 3000, repeats: int = 7) -> float:
    """Median microseconds of a memcached ``get`` on a bare socket: the floor
    under any client's round trip."""
    with socket.create_connection((host, port)) as sock:
        sock.sendall(b"set bench:bare 0 0 1\r\nx\r\n")
        sock.recv(64)
        results = []
        for _ in range(repeats):
            start = time.perf_counter()
            for _ in range(n):
                sock.sendall(b"get bench:bare\r\n")
                sock.recv(64)
            results.append((time.perf_counter() - start) / n * 1e6)
    return statistics.median(results)
