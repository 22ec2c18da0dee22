"""Helpers for testing applications that use gaeservices against real servers.

:class:`MemcachedServer` starts a throwaway memcached on a free loopback port, so a
test suite (this project's, or yours) talks to the real thing rather than a mock.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time

__all__ = ["free_port", "wait_for_port", "MemcachedServer"]


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def wait_for_port(host: str, port: int, timeout: float = 10.0) -> None:
    """Block until ``host:port`` accepts connections; TimeoutError after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listens on {host}:{port} after {timeout}s") from None
            time.sleep(0.02)


class MemcachedServer:
    """A memcached process on a free loopback port.

    ``stop()`` kills it (as a crash would) and ``start()`` brings it back on the
    same port, empty; ``pause()`` and ``resume()`` stop and continue the process
    (SIGSTOP, SIGCONT), as a stalled server would: connections are still
    accepted, commands wait, and run when it resumes. That is what
    fault-tolerance tests need.

    A :class:`~gaeservices.cache.memcache.MemcacheCache` that saw the server
    fail leaves it alone for its ``retry_delay``; after ``start()`` or
    ``resume()`` call the cache's ``retry_now()`` to have it used at once.
    """

    def __init__(
        self,
        *,
        executable: str | None = None,
        host: str = "127.0.0.1",
        port: int | None = None,
        memory_mb: int = 64,
        item_size: str = "1m",
    ) -> None:
        executable = executable or shutil.which("memcached") or _sbin("memcached")
        if not executable:
            raise FileNotFoundError("memcached is not installed (Debian: apt-get install memcached)")
        self.executable = executable
        self.host = host
        self.port = port or free_port(host)
        self.memory_mb = memory_mb
        self.item_size = item_size
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        return f"memcache://{self.address}"

    def start(self) -> MemcachedServer:
        if self.process is not None and self.process.poll() is None:
            return self
        args = [
            self.executable,
            "-l", self.host,
            "-p", str(self.port),
            "-U", "0",
            "-m", str(self.memory_mb),
            "-I", self.item_size,
            "-t", "2",
        ]
        if os.geteuid() == 0:
            args += ["-u", "root"]
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            wait_for_port(self.host, self.port)
        except TimeoutError:
            self.stop()
            raise
        return self

    def pause(self) -> None:
        """Stop the process (SIGSTOP) without ending it: a stall. Returns once
        the process has stopped (on Linux, where /proc tells)."""
        if self.process is not None:
            self.process.send_signal(signal.SIGSTOP)
            self._wait_for_state(stopped=True)

    def resume(self) -> None:
        """Continue a paused process (SIGCONT)."""
        if self.process is not None:
            self.process.send_signal(signal.SIGCONT)
            self._wait_for_state(stopped=False)

    def _wait_for_state(self, *, stopped: bool, timeout: float = 5.0) -> None:
        assert self.process is not None
        path = f"/proc/{self.process.pid}/stat"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with open(path) as stat:
                    state = stat.read().rpartition(")")[2].split()[0]
            except OSError:
                return  # no /proc: the signal is all there is to go by
            if (state in ("T", "t")) == stopped:
                return
            time.sleep(0.001)
        raise TimeoutError(f"memcached did not {'stop' if stopped else 'continue'} within {timeout}s")

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            if self.process.stderr:
                self.process.stderr.close()
            self.process = None

    def stats(self) -> dict[str, str]:
        """The server's ``stats`` counters (cmd_get, cmd_set, get_hits…)."""
        with socket.create_connection((self.host, self.port), timeout=2) as sock:
            sock.sendall(b"stats\r\n")
            data = b""
            while not data.endswith(b"END\r\n"):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
        stats = {}
        for line in data.decode().splitlines():
            parts = line.split(" ", 2)
            if len(parts) == 3 and parts[0] == "STAT":
                stats[parts[1]] = parts[2]
        return stats

    def flush(self) -> None:
        with socket.create_connection((self.host, self.port), timeout=2) as sock:
            sock.sendall(b"flush_all\r\n")
            sock.recv(64)

    def __enter__(self) -> MemcachedServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _sbin(name: str) -> str | None:
    for folder in ("/usr/bin", "/usr/sbin", "/usr/local/bin"):
        path = os.path.join(folder, name)
        if os.access(path, os.X_OK):
            return path
    return None
