"""The ``django.tasks`` backend (Django 6): enqueue through defer, run by the real worker code."""

from __future__ import annotations

from datetime import timedelta

import pytest

pytest.importorskip("django.tasks", reason="django.tasks exists from Django 6.0 on")

from django_fixtures import configure, django_test_db  # noqa: E402,F401  (the fixture)

configure()

import django_task_functions as fn  # noqa: E402
from django.db import transaction  # noqa: E402
from django.tasks import TaskResultStatus, task_backends  # noqa: E402
from django.tasks.exceptions import InvalidTask, TaskResultDoesNotExist  # noqa: E402
from django.tasks.signals import task_enqueued, task_finished, task_started  # noqa: E402
from django.utils import timezone  # noqa: E402

from gaeservices import defer  # noqa: E402
from gaeservices.config import Services, set_services  # noqa: E402
from gaeservices.exceptions import UnsupportedTaskOptionError  # noqa: E402
from gaeservices.tasks.worker import Dispatcher  # noqa: E402

pytestmark = pytest.mark.usefixtures("django_test_db")

@pytest.fixture
def svc(tmp_path):
    """The process-wide Services for the test: local:// on a SQLite file, Django's key."""
    from django_fixtures import SECRET_KEY

    services = Services(secret_key=SECRET_KEY, data_dir=str(tmp_path), environ={})
    previous = set_services(services)
    fn.ran.clear()
    yield services
    set_services(previous)
    services.close()


def drain(services):
    return Dispatcher(services, drain=True, poll=0.01).run()


@pytest.fixture
def signals():
    seen = []

    def record(signal_name):
        def receiver(sender, task_result, **kwargs):
            seen.append((signal_name, task_result.id, task_result.status))

        return receiver

    receivers = {task_enqueued: record("enqueued"), task_started: record("started"), task_finished: record("finished")}
    for signal, receiver in receivers.items():
        signal.connect(receiver)
    yield seen
    for signal, receiver in receivers.items():
        signal.disconnect(receiver)


def test_enqueue_runs_in_the_worker_and_the_result_is_read_back(svc, signals):
    result = fn.add.enqueue(2, b=3)
    assert result.status == TaskResultStatus.READY
    assert fn.ran == []
    stored = fn.add.get_result(result.id)
    assert stored.status == TaskResultStatus.READY and stored.args == [2] and stored.kwargs == {"b": 3}
    assert svc.queue.get(result.id).state == "pending"  # the task is the queue's, named by the result id

    assert drain(svc) == 1
    assert fn.ran == [("add", 2, 3)]
    done = fn.add.get_result(result.id)
    assert done.status == TaskResultStatus.SUCCESSFUL
    assert done.return_value == {"sum": 5}
    assert done.started_at <= done.finished_at and done.attempts == 1
    result.refresh()
    assert result.status == TaskResultStatus.SUCCESSFUL
    assert [(name, status) for name, _, status in signals] == [
        ("enqueued", TaskResultStatus.READY),
        ("started", TaskResultStatus.RUNNING),
        ("finished", TaskResultStatus.SUCCESSFUL),
    ]
    assert {task_id for _, task_id, _ in signals} == {result.id}


def test_a_task_that_raises_fails_with_its_error_and_is_not_retried(svc):
    result = fn.explode.enqueue("no such thing")
    drain(svc)
    failed = task_backends["default"].get_result(result.id)
    assert failed.status == TaskResultStatus.FAILED
    assert failed.errors[0].exception_class is LookupError
    assert "no such thing" in failed.errors[0].traceback
    with pytest.raises(ValueError):
        failed.return_value
    assert svc.queue.get(result.id).state == "failed"
    drain(svc)
    assert fn.ran == [("explode", "no such thing")]


def test_queue_name_run_after_and_context(svc):
    later = timezone.now() + timedelta(hours=1)
    result = fn.on_mail_queue.using(run_after=later).enqueue("hello")
    info = svc.queue.get(result.id)
    assert info.queue == "mail" and abs(info.eta - later.timestamp()) < 0.01
    assert drain(svc) == 0  # not due yet
    assert fn.on_mail_queue.get_result(result.id).task.run_after == later

    ctx = fn.with_context.enqueue("t")
    drain(svc)
    assert fn.ran == [("context", "t", 1, ctx.id)]
    assert fn.with_context.get_result(ctx.id).return_value == 1


def test_what_the_backend_refuses(svc):
    with pytest.raises(InvalidTask):
        fn.add.using(queue_name="elsewhere").enqueue(1, 2)
    with pytest.raises(InvalidTask):
        fn.add.using(priority=10).enqueue(1, 2)
    with pytest.raises(TaskResultDoesNotExist):
        fn.add.get_result("0" * 32)


def test_enqueue_inside_atomic_happens_on_commit_only(svc):
    with pytest.raises(RuntimeError):
        with transaction.atomic():
            rolled_back = fn.add.enqueue(1, 1)
            raise RuntimeError("roll back")
    with pytest.raises(TaskResultDoesNotExist):
        fn.add.get_result(rolled_back.id)
    assert svc.queue.get(rolled_back.id) is None

    with transaction.atomic():
        committed = fn.add.enqueue(2, 2)
        assert svc.queue.get(committed.id) is None  # not before the commit
    assert svc.queue.get(committed.id).state == "pending"
    drain(svc)
    assert fn.ran == [("add", 2, 2)]


def test_defer_transactional_inside_atomic_happens_on_commit_only(svc):
    with pytest.raises(RuntimeError):
        with transaction.atomic():
            lost = defer(fn.plain, "lost", _transactional=True)
            raise RuntimeError("roll back")
    with transaction.atomic():
        kept = defer(fn.plain, "kept", _transactional=True, _name="kept-task")
        assert kept.name == "kept-task" and svc.queue.get("kept-task") is None
    assert svc.queue.get(lost.name) is None
    assert svc.queue.get("kept-task").state == "pending"
    drain(svc)
    assert fn.ran == [("plain", "kept")]
    # outside a transaction there is nothing to join: said, not silently ignored
    with pytest.raises(UnsupportedTaskOptionError):
        defer(fn.plain, "outside", _transactional=True)
