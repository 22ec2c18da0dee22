"""Module-level task functions for the task tests.

They live in an importable module (not a test file, not ``__main__``) so that a
worker subprocess started by a test can import them by name.
"""

from __future__ import annotations

import os
import threading
import time

from gaeservices.exceptions import PermanentTaskFailure, SingularTaskFailure
from gaeservices.tasks.context import current_task

calls: list[tuple] = []
unpickled: list[str] = []
_lock = threading.Lock()


def record(*args, **kwargs):
    with _lock:
        calls.append((args, kwargs))


def record_context(tag):
    task = current_task()
    calls.append((tag, task.name, task.queue, task.execution_count, task.retry_count))


def noop():
    pass


def fail_permanently(reason):
    calls.append(("permanent", reason))
    raise PermanentTaskFailure(reason)


def fail_once_singular(tag):
    task = current_task()
    calls.append((tag, task.execution_count))
    if task.execution_count == 1:
        raise SingularTaskFailure("not yet")


def always_fails(tag):
    calls.append((tag, time.time()))
    raise RuntimeError(f"boom {tag}")


def fail_until(attempts, tag):
    task = current_task()
    calls.append((tag, task.execution_count))
    if task.execution_count < attempts:
        raise RuntimeError(f"attempt {task.execution_count} fails")


def append_line(path, text):
    with open(path, "a") as f:
        f.write(text + "\n")


def start_then_block(path, release_path):
    """Record the start, wait until ``release_path`` exists, record completion.

    The worker killed while it waits never writes "done"; a later run does.
    """
    append_line(path, f"start {os.getpid()}")
    while not os.path.exists(release_path):
        time.sleep(0.05)
    append_line(path, f"done {os.getpid()}")


class Sentinel:
    """Records that it was unpickled: proof that pickle.loads ran on a body."""

    def __init__(self, tag: str) -> None:
        self.tag = tag

    def __reduce__(self):
        return (_mark_unpickled, (self.tag,))


def _mark_unpickled(tag):
    unpickled.append(tag)
    return tag


class Counter:
    """A picklable instance whose methods are deferred."""

    def __init__(self, start: int) -> None:
        self.start = start

    def add(self, n):
        calls.append(("method", self.start + n))

    @staticmethod
    def static(n):
        calls.append(("static", n))

    @classmethod
    def klass(cls, n):
        calls.append(("classmethod", cls.__name__, n))

    def __call__(self, n):
        calls.append(("instance", self.start * n))


bootstrap_runs: list[int] = []


def slow_bootstrap():
    bootstrap_runs.append(threading.get_ident())
    time.sleep(0.3)


flaky_state = {"fail": True}


def flaky_bootstrap():
    bootstrap_runs.append(1)
    if flaky_state["fail"]:
        raise RuntimeError("database not ready")


def raise_sdk_permanent_failure(tag):
    """Fails the way tasks written for the SDK's deferred library do."""
    from google.appengine.ext import deferred

    calls.append(("sdk-permanent", tag))
    raise deferred.PermanentTaskFailure(tag)


def raise_sdk_singular_failure(tag):
    from google.appengine.ext import deferred

    calls.append(("sdk-singular", tag))
    raise deferred.SingularTaskFailure(tag)


def kill_own_process():
    """A poison task: it takes its worker down with it, every time."""
    import signal

    os.kill(os.getpid(), signal.SIGKILL)


def sleep_and_record(path, tag, seconds):
    append_line(path, f"{tag} {os.getpid()}")
    time.sleep(seconds)


# --- the core suite's task functions (tests/test_tasks_contract.py) -----------------
# Evidence goes to files, so backends whose workers are other processes show it too.


def note(path, text):
    append_line(path, text)


def note_attempt(path, tag):
    task = current_task()
    append_line(path, f"{tag} {task.execution_count} {time.time():.6f}")


def fail_until_attempt(path, tag, attempts):
    note_attempt(path, tag)
    if current_task().execution_count < attempts:
        raise RuntimeError(f"{tag}: attempt {current_task().execution_count} fails")


def fail_always(path, tag):
    note_attempt(path, tag)
    raise RuntimeError(f"{tag} fails")


def fail_for_good(path, tag):
    note_attempt(path, tag)
    raise PermanentTaskFailure(f"{tag}: no point retrying")


def fail_singular_once(path, tag):
    note_attempt(path, tag)
    if current_task().execution_count == 1:
        raise SingularTaskFailure("not yet")


class Unpickled:
    """Appends a line to ``path`` when unpickled: proof that a body was deserialized."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (append_line, (self.path, "unpickled"))


def timed(path, tag, seconds=0.0):
    """Records its start and end time (for rate and concurrency limits)."""
    start = time.time()
    if seconds:
        time.sleep(seconds)
    append_line(path, f"{tag} {start:.6f} {time.time():.6f} {os.getpid()}")


class BuggyStore:
    """The real store, with a programming error where it is read (a bug, not a store fault)."""

    def __init__(self, real):
        self._real = real

    def __getattr__(self, name):
        return getattr(self._real, name)

    def get(self, key):
        raise TypeError("a bug on the store path")
