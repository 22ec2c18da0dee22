"""The dispatcher: claims due tasks from the local queue and delivers them.

Delivery is in-process by default -- :meth:`DeferredApp.execute`, the same
verification and outcome code as an HTTP request, minus the HTTP -- or, with
``push_to``, a real POST to the application's endpoint (``/_ah/queue/deferred``
by default), as App Engine's push queues do.

Each thread claims a batch, runs it, and records the outcomes in one
transaction. Batches shrink to one task when tasks are slow, so a lease covers
what it claims and a crash repeats little. ``gaeservices worker`` runs it::

    gaeservices worker [--queues default,mail] [--threads 4] [--drain] [--push-to URL]
"""

from __future__ import annotations

import argparse
import http.client
import logging
import signal
import threading
import time
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

from ..config import Services, get_services
from ..exceptions import ConfigurationError
from .context import TaskContext
from .endpoint import OUTCOME_HEADER, PERMANENT_FAILURE, RETRY, SUCCESS, DeferredApp, TaskResult
from .local import ClaimedTask, LocalQueue

__all__ = ["Dispatcher", "main"]

logger = logging.getLogger("gaeservices.tasks.worker")

FLUSH_SECONDS = 0.2  # outcomes are written at least this often
PURGE_SECONDS = 60.0


class Dispatcher:
    """Runs the local queue's due tasks on ``threads`` threads until stopped.

    ``drain=True`` stops once no task is due. ``lease`` overrides the queue's.
    ``gather`` is how long a thread that has caught up waits before its next
    claim, so that tasks arriving one by one are claimed in batches.
    """

    def __init__(
        self,
        services: Services | None = None,
        *,
        queues: Sequence[str] | None = None,
        threads: int = 1,
        batch: int = 100,
        poll: float = 1.0,
        lease: float | None = None,
        push_to: str | None = None,
        drain: bool = False,
        gather: float = 0.005,
    ) -> None:
        self.services = services or get_services()
        queue = self.services.queue
        if not isinstance(queue, LocalQueue):
            raise ConfigurationError(
                f"the worker runs the local:// queue; GAESERVICES_QUEUE is {type(queue).__name__} "
                "(App Engine and Celery run their own workers)"
            )
        self.queue = queue
        self.queues = list(queues) if queues else None
        self.threads = max(1, threads)
        self.batch = max(1, batch)
        self.poll = poll
        self.lease = lease
        self.push_to = push_to.rstrip("/") if push_to else None
        self.drain = drain
        self.gather = gather
        self.app = DeferredApp(self.services, require_task_header=False)
        self.processed = 0
        self._stopping = threading.Event()
        self._workers: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._next_purge = time.monotonic()
        self._busy = 0

    # -- running ------------------------------------------------------------

    def start(self) -> Dispatcher:
        """Run in background threads (daemons); :meth:`stop` ends them."""
        for i in range(self.threads):
            thread = threading.Thread(target=self._loop, name=f"gaeservices-tasks-{i}", daemon=True)
            thread.start()
            self._workers.append(thread)
        return self

    def run(self) -> int:
        """Run in this thread (and ``threads - 1`` others) until stopped or drained."""
        self.start()
        for thread in self._workers:
            while thread.is_alive():
                thread.join(0.5)  # wake up for signals
        return self.processed

    def stop(self, timeout: float | None = None) -> None:
        """Finish the running tasks, give back the claimed ones, and end the threads."""
        self._stopping.set()
        self.queue.close()  # wakes sleeping threads
        for thread in self._workers:
            if thread is not threading.current_thread():
                thread.join(timeout)

    def run_batch(self, limit: int | None = None) -> int:
        """Claim, run and record one batch in this thread; returns how many ran."""
        tasks = self.queue.claim(limit or self.batch, queues=self.queues, lease=self.lease)
        results = self._run(tasks)
        if results:
            self.queue.finish(results)
        return len(tasks) if not self._stopping.is_set() else len(results)

    def _loop(self) -> None:
        size = self.batch
        unrecorded: list[tuple[ClaimedTask, TaskResult]] = []
        while not self._stopping.is_set():
            try:
                with self._lock:
                    self._busy += 1
                try:
                    # the previous batch's outcomes go in with this claim
                    tasks = self.queue.claim(size, queues=self.queues, lease=self.lease, finished=unrecorded)
                    unrecorded = []
                    if tasks:
                        started = time.perf_counter()
                        unrecorded = self._run(tasks)
                        per_task = (time.perf_counter() - started) / len(tasks)
                        size = max(1, min(self.batch, int(FLUSH_SECONDS / max(per_task, 1e-6))))
                finally:
                    with self._lock:
                        self._busy -= 1
                if tasks:
                    if len(tasks) < size and self.gather:
                        # Caught up with the producers: let a few tasks gather so
                        # the next claim is a batch, not a write per task.
                        self._stopping.wait(self.gather)
                    continue
                self._maybe_purge()
                if self.drain:
                    with self._lock:
                        idle = self._busy == 0
                    if idle:
                        break
                self.queue.wait_for_work(self._sleep_time())
            except Exception:  # the database is away: keep trying, slowly
                logger.exception("dispatcher error; retrying in %.1fs", self.poll)
                self._stopping.wait(self.poll)
        if unrecorded:
            try:
                self.queue.finish(unrecorded)
            except Exception:  # their leases will run out and they will run again
                logger.exception("could not record %d outcome(s)", len(unrecorded))

    def _sleep_time(self) -> float:
        next_eta = self.queue.next_eta(self.queues)
        if next_eta is None:
            return self.poll
        return min(self.poll, max(0.0, next_eta - time.time()))

    def _maybe_purge(self) -> None:
        now = time.monotonic()
        if now >= self._next_purge:
            self._next_purge = now + PURGE_SECONDS
            purged = self.queue.purge()
            if purged:
                logger.debug("purged %d expired tombstones", purged)

    def _run(self, tasks: list[ClaimedTask]) -> list[tuple[ClaimedTask, TaskResult]]:
        """Run ``tasks``; returns the outcomes not yet recorded (slow batches record as they go)."""
        results: list[tuple[ClaimedTask, TaskResult]] = []
        flush_at = time.monotonic() + FLUSH_SECONDS
        for index, task in enumerate(tasks):
            if self._stopping.is_set():
                try:
                    self.queue.release(tasks[index:])
                except Exception:  # their leases will run out and they will run then
                    logger.exception("could not give back %d task(s)", len(tasks) - index)
                break
            results.append((task, self.deliver(task)))
            if time.monotonic() >= flush_at:
                # If the database is away, the outcomes stay with us and go in with a
                # later write: dropping them would run these tasks again.
                try:
                    self.queue.finish(results)
                except Exception:
                    logger.exception("could not record %d outcome(s) yet; keeping them", len(results))
                else:
                    with self._lock:
                        self.processed += len(results)
                    results = []
                flush_at = time.monotonic() + FLUSH_SECONDS
        with self._lock:
            self.processed += len(results)
        return results

    def deliver(self, task: ClaimedTask) -> TaskResult:
        """Run one claimed task (in-process, or POSTed with ``push_to``); record nothing."""
        if self.push_to:
            return self._post(task)
        return self.app.execute(task.body, TaskContext(task.name, task.queue, task.attempt, task.eta))

    def _post(self, task: ClaimedTask) -> TaskResult:
        target = urlsplit(self.push_to + task.url)
        headers = dict(task.options.get("headers") or {})
        headers.update(
            {
                "Content-Type": "application/octet-stream",
                "X-AppEngine-TaskName": task.name,
                "X-AppEngine-QueueName": task.queue,
                "X-AppEngine-TaskRetryCount": str(task.attempt - 1),
                "X-AppEngine-TaskExecutionCount": str(task.attempt - 1),
                "X-AppEngine-TaskETA": repr(task.eta),
            }
        )
        cls = http.client.HTTPSConnection if target.scheme == "https" else http.client.HTTPConnection
        connection = cls(target.netloc, timeout=self.lease or self.queue.lease)
        try:
            connection.request("POST", target.path or "/", body=task.body, headers=headers)
            response = connection.getresponse()
            text = response.read().decode("utf-8", "replace")
            outcome = response.getheader(OUTCOME_HEADER)
        except OSError as exc:
            return TaskResult(503, RETRY, f"POST {self.push_to + task.url} failed: {exc!r}")
        finally:
            connection.close()
        if 200 <= response.status < 300:
            if outcome == PERMANENT_FAILURE:
                return TaskResult(response.status, PERMANENT_FAILURE, text)
            return TaskResult(response.status, SUCCESS)
        return TaskResult(response.status, RETRY, f"HTTP {response.status}: {text.strip()}")


def main(argv: list[str] | None = None) -> int:
    """``gaeservices worker``: run the local queue's tasks."""
    parser = argparse.ArgumentParser(
        prog="gaeservices worker",
        description="Run deferred tasks from the local:// queue (GAESERVICES_STORE's database).",
    )
    parser.add_argument("--queues", action="append", help="queue names (comma-separated, repeatable); default all")
    parser.add_argument("--threads", type=int, default=1, help="tasks run at the same time (default 1)")
    parser.add_argument("--drain", action="store_true", help="exit once no task is due")
    parser.add_argument("--batch", type=int, default=100, help="most tasks claimed at once (default 100)")
    parser.add_argument("--lease", type=float, help="seconds a claimed task is ours (default: the queue's, 600)")
    parser.add_argument("--poll", type=float, default=1.0, help="longest sleep between looks at the queue")
    parser.add_argument("--push-to", metavar="URL", help="POST tasks to this base URL instead of running them here")
    parser.add_argument("--log-level", default="INFO")
    options = parser.parse_args(argv)
    logging.basicConfig(level=options.log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s")
    queues = [q for item in options.queues or [] for q in item.split(",") if q] or None
    dispatcher = Dispatcher(
        queues=queues,
        threads=options.threads,
        batch=options.batch,
        poll=options.poll,
        lease=options.lease,
        push_to=options.push_to,
        drain=options.drain,
    )

    def on_signal(signum: int, frame: Any) -> None:
        logger.info("signal %d: finishing running tasks", signum)
        dispatcher._stopping.set()
        dispatcher.queue.close()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    logger.info("worker on %r, queues %s, %d thread(s)", dispatcher.queue, queues or "all", dispatcher.threads)
    processed = dispatcher.run()
    logger.info("worker stopping after %d task(s)", processed)
    return 0
