"""The ``django.tasks`` backend itself (Django 6); :mod:`gaeservices.django.tasks` is its public name."""

from __future__ import annotations

import json
import os
import platform
from datetime import datetime
from functools import partial
from traceback import format_exception
from typing import Any

from django.db import transaction
from django.tasks.backends.base import BaseTaskBackend
from django.tasks.base import Task, TaskContext, TaskError, TaskResult, TaskResultStatus
from django.tasks.exceptions import TaskResultDoesNotExist
from django.tasks.signals import task_enqueued, task_finished, task_started
from django.utils import timezone
from django.utils.crypto import get_random_string
from django.utils.json import normalize_json
from django.utils.module_loading import import_string

from ..exceptions import PermanentTaskFailure
from ..tasks.api import defer
from .conf import services

__all__ = ["TaskBackend", "run"]

_PREFIX = "gaeservices.django.tasks:"
DEFAULT_RESULT_TTL = 7 * 24 * 3600


def _when(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


class TaskBackend(BaseTaskBackend):
    """Django tasks on the services' queue; results in the services' store."""

    supports_defer = True
    supports_get_result = True
    supports_priority = False
    supports_async_task = False

    def __init__(self, alias: str, params: dict[str, Any]) -> None:
        super().__init__(alias, params)
        self.result_ttl = int(self.options.get("result_ttl", DEFAULT_RESULT_TTL))

    def enqueue(self, task: Task, args: Any, kwargs: Any) -> TaskResult:
        self.validate_task(task)
        result = TaskResult(
            task=task,
            id=get_random_string(32),
            status=TaskResultStatus.READY,
            enqueued_at=None,
            started_at=None,
            last_attempted_at=None,
            finished_at=None,
            args=args,
            kwargs=kwargs,
            backend=self.alias,
            errors=[],
            worker_ids=[],
        )
        connection = transaction.get_connection()
        if connection.in_atomic_block:
            transaction.on_commit(partial(self._queue, result))
        else:
            self._queue(result)
        return result

    def _queue(self, result: TaskResult) -> None:
        task = result.task
        object.__setattr__(result, "enqueued_at", timezone.now())
        record = {
            "task": task.module_path,
            "queue": task.queue_name,
            "run_after": _iso(task.run_after),
            "args": result.args,
            "kwargs": result.kwargs,
            "status": TaskResultStatus.READY.value,
            "enqueued_at": _iso(result.enqueued_at),
            "started_at": None,
            "last_attempted_at": None,
            "finished_at": None,
            "worker_ids": [],
            "errors": [],
            "return_value": None,
        }
        svc = services()
        svc.store.put(_PREFIX + result.id, json.dumps(record).encode(), timeout=self.result_ttl)
        defer(
            run, self.alias, result.id, self.result_ttl,
            _queue=task.queue_name, _eta=task.run_after, _name=result.id, _services=svc,
        )
        task_enqueued.send(type(self), task_result=result)

    def get_result(self, result_id: str) -> TaskResult:
        raw = services().store.get(_PREFIX + result_id) if isinstance(result_id, str) else None
        if raw is None:
            raise TaskResultDoesNotExist(result_id)
        return _result(self.alias, result_id, json.loads(raw))


def _result(alias: str, result_id: str, record: dict[str, Any]) -> TaskResult:
    task = import_string(record["task"])
    changes: dict[str, Any] = {"backend": alias}
    if task.queue_name != record["queue"]:
        changes["queue_name"] = record["queue"]
    if record["run_after"] is not None:
        changes["run_after"] = _when(record["run_after"])
    task = task.using(**changes)
    result = TaskResult(
        task=task,
        id=result_id,
        status=TaskResultStatus(record["status"]),
        enqueued_at=_when(record["enqueued_at"]),
        started_at=_when(record["started_at"]),
        last_attempted_at=_when(record["last_attempted_at"]),
        finished_at=_when(record["finished_at"]),
        args=record["args"],
        kwargs=record["kwargs"],
        backend=alias,
        errors=[TaskError(**error) for error in record["errors"]],
        worker_ids=list(record["worker_ids"]),
    )
    object.__setattr__(result, "_return_value", record["return_value"])
    return result


def _update(key: str, ttl: int, **changes: Any) -> dict[str, Any]:
    """Apply ``changes`` to the stored record atomically; the record after them."""
    after: dict[str, Any] = {}

    def merge(raw: bytes | None) -> bytes | None:
        if raw is None:
            raise PermanentTaskFailure(f"the result record {key} is gone (expired?)")
        record = json.loads(raw)
        for name, value in changes.items():
            record[name] = record[name] + value if name == "worker_ids" else value
        after.clear()
        after.update(record)
        return json.dumps(record).encode()

    services().store.update(key, merge, timeout=ttl)
    return after


def run(alias: str, result_id: str, ttl: int) -> None:
    """Run a Django task in the worker: the queued call of every enqueued task."""
    from django.tasks import task_backends

    backend = task_backends[alias]
    key = _PREFIX + result_id
    started = timezone.now()
    worker = f"{platform.node()}:{os.getpid()}"[:64]
    record = _update(
        key, ttl, status=TaskResultStatus.RUNNING.value, started_at=_iso(started),
        last_attempted_at=_iso(started), worker_ids=[worker],
    )
    result = _result(alias, result_id, record)
    task_started.send(type(backend), task_result=result)
    task = result.task
    try:
        if task.takes_context:
            value = task.call(TaskContext(task_result=result), *result.args, **result.kwargs)
        else:
            value = task.call(*result.args, **result.kwargs)
        value = normalize_json(value)
    except Exception as exc:
        error = {
            "exception_class_path": f"{type(exc).__module__}.{type(exc).__qualname__}",
            "traceback": "".join(format_exception(exc)),
        }
        record = _update(
            key, ttl, status=TaskResultStatus.FAILED.value, finished_at=_iso(timezone.now()),
            errors=record["errors"] + [error],
        )
        task_finished.send(type(backend), task_result=_result(alias, result_id, record))
        raise PermanentTaskFailure(f"task {task.module_path} raised {error['exception_class_path']}") from exc
    record = _update(
        key, ttl, status=TaskResultStatus.SUCCESSFUL.value, finished_at=_iso(timezone.now()),
        return_value=value,
    )
    task_finished.send(type(backend), task_result=_result(alias, result_id, record))
