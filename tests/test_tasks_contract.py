"""The core task suite: one set of tests, written against ``defer``, run on every backend.

The ``backend`` fixture (tests/tasks_backends.py, a plugin of conftest) gives each backend's harness:
``local://`` on SQLite and on PostgreSQL, ``immediate://``, ``appengine://``
(the SDK's testbed, the harness delivering as the platform does), and any
backend added to ``HARNESSES``. What differs by design is said by the
harness's ``inline`` flag (``immediate://`` runs tasks inside ``defer``), not by
the tests.
"""

from __future__ import annotations

import pickle
import time

import pytest
import tasks_fixtures as fx
from tasks_backends import lines

from gaeservices import Services, defer
from gaeservices.exceptions import TaskAlreadyExistsError
from gaeservices.tasks import payload
from gaeservices.tasks.api import Task
from gaeservices.tasks.endpoint import DeferredApp


def attempts(path, tag):
    """(execution_count, time) of each run of ``tag``, from the evidence file."""
    found = []
    for line in lines(path):
        name, count, when = line.split()
        if name == tag:
            found.append((int(count), float(when)))
    return found


def test_a_deferred_call_runs_once_with_its_arguments(backend, evidence):
    handle = defer(fx.note, evidence, "hello", _services=backend.services)
    assert handle.queue == "default" and handle.name
    backend.run()
    assert lines(evidence) == ["hello"]
    backend.run()
    assert lines(evidence) == ["hello"]
    assert backend.state(handle.name) in ("done", None)


def test_the_queue_is_kept(backend, evidence):
    defer(fx.note_attempt, evidence, "mail", _queue="mail", _services=backend.services)
    backend.run()
    assert [count for count, _ in attempts(evidence, "mail")] == [1]


def test_countdown_is_honoured(backend, evidence):
    before = time.time()
    handle = defer(fx.note, evidence, "later", _countdown=1.5, _services=backend.services)
    eta = handle.eta.timestamp()
    assert before + 1.5 <= eta <= time.time() + 1.5
    backend.run()
    if backend.inline:  # immediate:// runs it inside defer, countdown or not
        assert lines(evidence) == ["later"]
        return
    if time.time() < eta:  # a run that ended before the ETA cannot have run it
        assert lines(evidence) == []
    time.sleep(max(0.0, eta - time.time()))
    backend.run_until(lambda: lines(evidence))
    assert lines(evidence) == ["later"]


def test_a_name_is_taken_while_queued_and_after_it_ran(backend, evidence):
    name = f"nightly-{time.time_ns()}"
    handle = defer(fx.note, evidence, "first", _name=name, _services=backend.services)
    assert handle.name == name
    with pytest.raises(TaskAlreadyExistsError):
        defer(fx.note, evidence, "second", _name=name, _services=backend.services)
    backend.run()
    with pytest.raises(TaskAlreadyExistsError):
        defer(fx.note, evidence, "third", _name=name, _services=backend.services)
    backend.run()
    assert lines(evidence) == ["first"]


def test_unnamed_tasks_never_collide(backend, evidence):
    handles = [defer(fx.note, evidence, str(i), _services=backend.services) for i in range(20)]
    assert len({h.name for h in handles if h.name}) == len([h for h in handles if h.name])
    backend.run()
    assert sorted(lines(evidence), key=int) == [str(i) for i in range(20)]


def test_failures_are_retried_with_backoff(backend, evidence):
    retry = {"min_backoff_seconds": 0.3, "max_doublings": 4, "max_backoff_seconds": 10}
    if backend.inline:  # a failure that would be retried raises from defer
        with pytest.raises(RuntimeError, match="attempt 1 fails"):
            defer(fx.fail_until_attempt, evidence, "r", 3, _retry_options=retry, _services=backend.services)
        return
    handle = defer(fx.fail_until_attempt, evidence, "r", 3, _retry_options=retry, _services=backend.services)
    backend.run_until(lambda: len(attempts(evidence, "r")) == 3)
    runs = attempts(evidence, "r")
    assert [count for count, _ in runs] == [1, 2, 3]
    gaps = [b - a for (_, a), (_, b) in zip(runs, runs[1:])]
    assert gaps[0] >= 0.3 and gaps[1] >= 0.6  # the backoff doubles
    backend.run()
    assert len(attempts(evidence, "r")) == 3
    assert backend.state(handle.name) in ("done", None)


def test_a_task_is_given_up_at_its_retry_limit(backend, evidence):
    retry = {"task_retry_limit": 2, "min_backoff_seconds": 0.05}
    if backend.inline:
        with pytest.raises(RuntimeError):
            defer(fx.fail_always, evidence, "dead", _retry_options=retry, _services=backend.services)
        return
    handle = defer(fx.fail_always, evidence, "dead", _retry_options=retry, _services=backend.services)
    backend.run_until(lambda: backend.state(handle.name) == "failed" or len(attempts(evidence, "dead")) > 3)
    time.sleep(0.3)  # a backoff or two more: nothing runs after the limit
    backend.run()
    assert [count for count, _ in attempts(evidence, "dead")] == [1, 2, 3]  # the first run and 2 retries
    assert backend.state(handle.name) in ("failed", None)


def test_a_permanent_failure_is_not_retried(backend, evidence):
    handle = defer(fx.fail_for_good, evidence, "p", _retry_options={"min_backoff_seconds": 0}, _services=backend.services)
    backend.run()
    time.sleep(0.1)
    backend.run()
    assert [count for count, _ in attempts(evidence, "p")] == [1]
    assert backend.state(handle.name) in ("failed", None)


def test_a_singular_failure_is_retried(backend, evidence):
    retry = {"min_backoff_seconds": 0.05}
    if backend.inline:
        from gaeservices.exceptions import SingularTaskFailure

        with pytest.raises(SingularTaskFailure):
            defer(fx.fail_singular_once, evidence, "s", _retry_options=retry, _services=backend.services)
        return
    defer(fx.fail_singular_once, evidence, "s", _retry_options=retry, _services=backend.services)
    backend.run_until(lambda: len(attempts(evidence, "s")) == 2)
    assert [count for count, _ in attempts(evidence, "s")] == [1, 2]


def test_a_large_payload_travels_by_reference(backend, evidence):
    big = "x" * 20_000
    handle = defer(fx.note, evidence, big, _services=backend.services)
    task = backend.tasks[handle.name]
    assert task.payload_key is not None and len(task.body) < 2048
    backend.run()
    assert lines(evidence) == [big]


# --- forged and replayed bodies ------------------------------------------------------


def inject(backend, body, name, queue="default"):
    """Queue a raw body, as someone with access to the queue (not to the key) could."""
    try:
        backend.services.queue.add(Task(body=body, name=name, queue=queue, named=True))
    except TaskAlreadyExistsError:
        return False  # the queue itself refused the name
    return True


def test_a_forged_body_is_refused_before_it_is_unpickled(backend, evidence, tmp_path):
    other = Services(secret_key="another-signing-key-for-the-test-suite", data_dir=str(tmp_path), environ={})
    name = f"forged-{time.time_ns()}"
    pickled = pickle.dumps((fx.note, (evidence, fx.Unpickled(evidence)), {}), payload.PICKLE_PROTOCOL)
    forged, _ = payload.PayloadCodec(other).seal(pickled, name=name, queue="default", expires=time.time() + 60)
    inject(backend, forged, name)
    backend.run()
    assert lines(evidence) == []  # neither run nor unpickled
    assert backend.state(name) != "done"
    # and an unsigned pickle, the SDK's own format
    inject(backend, pickled, f"unsigned-{time.time_ns()}")
    backend.run()
    assert lines(evidence) == []


def test_a_body_delivered_under_another_name_is_refused(backend, evidence):
    handle = defer(fx.note, evidence, "genuine", _name=f"a-{time.time_ns()}", _countdown=3600, _services=backend.services)
    body = backend.tasks[handle.name].body
    other = f"b-{time.time_ns()}"
    inject(backend, body, other)
    backend.run()
    expected = ["genuine"] if backend.inline else []  # immediate:// ran the genuine one inside defer
    assert lines(evidence) == expected
    assert backend.state(other) != "done"


def test_a_replayed_body_of_a_named_task_does_not_run_again(backend, evidence):
    name = f"once-{time.time_ns()}"
    defer(fx.note, evidence, "once", _name=name, _services=backend.services)
    backend.run()
    assert lines(evidence) == ["once"]
    body = backend.tasks[name].body
    # replayed into the queue: refused by the name's tombstone, or delivered and not run
    inject(backend, body, name)
    backend.run()
    # replayed straight to the endpoint, as over HTTP
    app = DeferredApp(backend.services, require_task_header=True)
    from gaeservices.tasks.context import TaskContext

    result = app.execute(body, TaskContext(name, "default", 1))
    assert result.status == 200 and "already succeeded" in result.error
    assert lines(evidence) == ["once"]
