"""The dispatcher: claims due tasks from the local queue and delivers them.

Delivery is in-process by default -- :meth:`DeferredApp.execute`, the same
verification and outcome code as an HTTP request, minus the HTTP -- or, with
``push_to``, a real POST to the application's endpoint (``/_ah/queue/deferred``
by default), as App Engine's push queues do.

Each thread claims a batch, runs it, and records the outcomes in one
transaction. Batches shrink to one task when tasks are slow, so a lease covers
what it claims and a crash repeats little; a batch that turns out slow gives
its unstarted tail back at once, for other workers to take. A heartbeat thread
renews the leases of every task the dispatcher holds (running, waiting its
turn, or with an outcome not yet written) every third of the lease, so a slow
task is never taken by a second worker; and a task whose lease has run out
anyway (the heartbeat could not reach the database, the process was stopped)
is never started. ``gaeservices worker`` runs it::

    gaeservices worker [--queues default,mail] [--threads 4] [--drain] [--push-to URL]

Import it as ``from gaeservices.tasks import Dispatcher``.
"""

from __future__ import annotations

import argparse
import http.client
import logging
import signal
import sys
import threading
import time
import traceback
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

from ..config import Services, get_services
from ..exceptions import ConfigurationError
from .bootstrap import add_import_paths
from .context import TaskContext
from .endpoint import OUTCOME_HEADER, DeferredApp
from .local import ClaimedTask, LocalQueue
from .result import PERMANENT_FAILURE, RETRY, SUCCESS, TaskResult

__all__ = ["Dispatcher", "main"]

logger = logging.getLogger("gaeservices.tasks.worker")

FLUSH_SECONDS = 0.2  # outcomes are written at least this often
PURGE_SECONDS = 60.0
PUSH_DEADLINE = 600.0  # App Engine's deadline for a push task's request


class Dispatcher:
    """Runs the local queue's due tasks on ``threads`` threads until stopped.

    ``drain=True`` stops once no task is due. ``lease`` overrides the queue's
    (the heartbeat renews it every third of it). ``gather`` is how long a thread
    that has caught up waits before its next claim, so that tasks arriving one
    by one are claimed in batches.
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
        self.lease = float(lease if lease is not None else queue.lease)
        self.push_to = push_to.rstrip("/") if push_to else None
        self.drain = drain
        self.gather = gather
        self.app = DeferredApp(self.services, require_task_header=False)
        self.processed = 0
        self.succeeded = 0
        self.failed = 0  # deliveries that did not succeed (retried or not)
        self.renewed = 0  # leases renewed by the heartbeat
        self._stopping = threading.Event()
        self._workers: list[threading.Thread] = []
        self._heartbeat: threading.Thread | None = None
        self._beat_stop = threading.Event()
        self._lock = threading.Lock()
        self._held: dict[int, ClaimedTask] = {}  # id(task) -> task, leases to renew
        self._next_purge = time.monotonic()
        self._busy = 0

    # -- running ------------------------------------------------------------

    def start(self) -> Dispatcher:
        """Run in background threads (daemons); :meth:`stop` ends them."""
        self._start_heartbeat()
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
        self._stop_heartbeat()
        return self.processed

    def stop(self, timeout: float | None = None) -> None:
        """Finish the running tasks, give back the claimed ones, and end the threads."""
        self._stopping.set()
        self.queue.close()  # wakes sleeping threads
        for thread in self._workers:
            if thread is not threading.current_thread():
                thread.join(timeout)
        self._stop_heartbeat()

    def run_batch(self, limit: int | None = None) -> int:
        """Claim, run and record one batch in this thread; returns how many ran."""
        tasks = self.queue.claim(limit or self.batch, queues=self.queues, lease=self.lease)
        self._hold(tasks)
        results = self._run(tasks)
        if results:
            self.queue.finish(results)
            self._unhold(task for task, _ in results)
        return len(tasks) if not self._stopping.is_set() else len(results)

    def run_now(self, names: Sequence[str]) -> list[tuple[str, TaskResult | None]]:
        """Run the named tasks here and now, due or not, one claim each (by hand).

        A task that is not pending, or that a worker holds, gives None.
        """
        outcomes: list[tuple[str, TaskResult | None]] = []
        own_heartbeat = self._heartbeat is None
        if own_heartbeat:
            self._start_heartbeat()
        try:
            for name in names:
                claimed = self.queue.claim(1, names=[name], lease=self.lease)
                if not claimed:
                    outcomes.append((name, None))
                    continue
                (task,) = claimed
                self._hold(claimed)
                try:
                    result = self.deliver(task)
                    self.queue.finish([(task, result)])
                finally:
                    self._unhold(claimed)
                self._count([result])
                outcomes.append((name, result))
        finally:
            if own_heartbeat:
                self._stop_heartbeat()
        return outcomes

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
                    self._unhold(task for task, _ in unrecorded)
                    unrecorded = []
                    if tasks:
                        self._hold(tasks)
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
                    # tasks due but held back by queue.yaml's rates or concurrency: wait for them
                    if idle and not (self.queue.limited and self.queue.due(self.queues, paused=False)):
                        break
                self.queue.wait_for_work(self._sleep_time())
            except Exception:  # the database is away: keep trying, slowly
                logger.exception("dispatcher error; retrying in %.1fs", self.poll)
                self._stopping.wait(self.poll)
        if unrecorded:
            try:
                self.queue.finish(unrecorded)
                self._unhold(task for task, _ in unrecorded)
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
        unstarted: list[ClaimedTask] = []
        started = time.monotonic()
        flush_at = started + FLUSH_SECONDS
        margin = self.lease / 4  # a healthy heartbeat keeps two thirds of the lease ahead
        for index, task in enumerate(tasks):
            if self._stopping.is_set():
                unstarted += tasks[index:]
                break
            if task.leased_until - time.time() < margin:
                # The lease is (nearly) gone: another worker may hold the task now.
                logger.warning("task %r: its lease ran out before its turn; not started", task.name)
                unstarted.append(task)
                continue
            results.append((task, self._deliver(task)))
            now = time.monotonic()
            if now >= flush_at:
                # If the database is away, the outcomes stay with us and go in with a
                # later write: dropping them would run these tasks again.
                try:
                    self.queue.finish(results)
                except Exception:
                    logger.exception("could not record %d outcome(s) yet; keeping them", len(results))
                else:
                    self._count(result for _, result in results)
                    self._unhold(task for task, _ in results)
                    results = []
                flush_at = now + FLUSH_SECONDS
                rest = tasks[index + 1:]
                if rest and (now - started) / (index + 1) * len(rest) > FLUSH_SECONDS:
                    # A slow batch: give its unstarted tail to whoever is free.
                    unstarted += rest
                    break
        if unstarted:
            try:
                self.queue.release(unstarted)
            except Exception:  # their leases will run out and they will run then
                logger.exception("could not give back %d task(s)", len(unstarted))
            self._unhold(unstarted)
        self._count(result for _, result in results)
        return results

    def _count(self, results: Any) -> None:
        results = list(results)
        with self._lock:
            self.processed += len(results)
            ok = sum(1 for result in results if result.outcome == SUCCESS)
            self.succeeded += ok
            self.failed += len(results) - ok

    # -- leases: the heartbeat --------------------------------------------------

    def _hold(self, tasks: Any) -> None:
        with self._lock:
            for task in tasks:
                self._held[id(task)] = task

    def _unhold(self, tasks: Any) -> None:
        with self._lock:
            for task in tasks:
                self._held.pop(id(task), None)

    def _start_heartbeat(self) -> None:
        if self._heartbeat is None:
            self._beat_stop.clear()
            self._heartbeat = threading.Thread(target=self._beat, name="gaeservices-tasks-heartbeat", daemon=True)
            self._heartbeat.start()

    def _stop_heartbeat(self) -> None:
        thread, self._heartbeat = self._heartbeat, None
        if thread is not None and thread is not threading.current_thread():
            self._beat_stop.set()
            thread.join()

    def _beat(self) -> None:
        interval = self.lease / 3
        while not self._beat_stop.wait(interval):
            with self._lock:
                held = list(self._held.values())
            if not held:
                continue
            try:
                lost = self.queue.renew(held, self.lease)
            except Exception:  # the database is away: tasks not started yet will wait
                logger.exception("could not renew %d lease(s)", len(held))
                continue
            with self._lock:
                self.renewed += len(held) - len(lost)
            for task in lost:
                task.leased_until = 0.0  # never start it; its outcome will not be written
                logger.warning("task %r: its lease was lost (another worker may run it)", task.name)

    # -- delivery -------------------------------------------------------------

    def _deliver(self, task: ClaimedTask) -> TaskResult:
        """:meth:`deliver`, where a fault outside the task is a failed attempt (its
        traceback logged), so the batch's other outcomes are still recorded and the
        task's retry limit still applies."""
        try:
            return self.deliver(task)
        except Exception as exc:
            logger.exception("task %r: its delivery failed outside the task", task.name)
            return TaskResult(500, RETRY, "".join(traceback.format_exception(exc)), exc)

    def deliver(self, task: ClaimedTask) -> TaskResult:
        """Run one claimed task (in-process, or POSTed with ``push_to``); record nothing."""
        if self.push_to:
            return self._post(task)
        return self.app.execute(task.body, TaskContext(task.name, task.queue, task.attempt, task.eta))

    def _post(self, task: ClaimedTask) -> TaskResult:
        assert self.push_to is not None
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
        connection = cls(target.netloc, timeout=max(PUSH_DEADLINE, self.lease))
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


class Progress:
    """What a worker has done, shown while it runs: tasks done and failed, the queue's
    depth (tasks due now) and the rate of the last interval.

    On a terminal, one status line redrawn in place; otherwise a log line each
    interval in which something happened.
    """

    def __init__(self, dispatcher: Dispatcher, stream: Any, *, interval: float, terminal: bool) -> None:
        self.dispatcher = dispatcher
        self.stream = stream
        self.interval = interval
        self.terminal = terminal
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last = (0, 0)
        self._last_depth = -1

    def start(self) -> Progress:
        self._thread = threading.Thread(target=self._run, name="gaeservices-tasks-progress", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.show(final=True)

    def _run(self) -> None:
        started = time.monotonic()
        while not self._stop.wait(self.interval):
            self.show(elapsed=time.monotonic() - started)
            started = time.monotonic()

    def line(self, elapsed: float | None = None) -> str:
        d = self.dispatcher
        done, failed = d.succeeded, d.failed
        try:
            depth: Any = d.queue.due(d.queues)
        except Exception:  # the database is away: say so, keep counting
            depth = "?"
        ran = done + failed - sum(self._last)
        rate = ran / elapsed if elapsed else 0.0
        self._last = (done, failed)
        self._last_depth = depth if isinstance(depth, int) else self._last_depth
        return f"done {done}  failed {failed}  queued {depth}  {rate:.1f} tasks/s"

    def show(self, elapsed: float | None = None, final: bool = False) -> None:
        before, depth_before = self._last, self._last_depth
        text = self.line(elapsed)
        if self.terminal:
            self.stream.write("\r\x1b[K" + text + ("\n" if final else ""))
            self.stream.flush()
        elif final or self._last != before or self._last_depth != depth_before:
            logger.info("progress: %s", text)


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
    parser.add_argument(
        "--lease", type=float,
        help="seconds a claimed task stays ours without a heartbeat (default: the queue's, 60); renewed every third",
    )
    parser.add_argument("--poll", type=float, default=1.0, help="longest sleep between looks at the queue")
    parser.add_argument("--push-to", metavar="URL", help="POST tasks to this base URL instead of running them here")
    parser.add_argument(
        "--pythonpath", metavar="DIRS",
        help="directories to import the application from, before the current one (comma- or os.pathsep-separated)",
    )
    parser.add_argument(
        "--queue-yaml", metavar="PATH",
        help="the application's queue.yaml: rates, bucket sizes, concurrency and retries per queue",
    )
    parser.add_argument(
        "--progress", type=float, metavar="S",
        help="seconds between progress reports (default: 0.5 on a terminal, a log line every 10 otherwise; 0: none)",
    )
    parser.add_argument("--log-level", default="INFO")
    options = parser.parse_args(argv)
    add_import_paths(options.pythonpath)
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
    if options.queue_yaml:
        from .queueconfig import load_queue_yaml

        dispatcher.queue.configure(load_queue_yaml(options.queue_yaml))
    logger.info(
        "worker on %r, queues %s, %d thread(s)%s", dispatcher.queue, queues or "all", dispatcher.threads,
        f", limits from {dispatcher.queue.config.source}" if dispatcher.queue.config else "",
    )
    terminal = sys.stderr.isatty()
    interval = options.progress if options.progress is not None else (0.5 if terminal else 10.0)
    progress = Progress(dispatcher, sys.stderr, interval=interval, terminal=terminal).start() if interval > 0 else None
    try:
        processed = dispatcher.run()
    finally:
        if progress is not None:
            progress.stop()
    logger.info(
        "worker stopping after %d task(s): %d succeeded, %d failed", processed, dispatcher.succeeded, dispatcher.failed
    )
    return 0
