"""Deferred tasks: ``defer`` a call, run it in a worker through ``DeferredApp``.

``Dispatcher`` (the local queue's worker, to run in your own process),
``DeferredApp`` (the endpoint), ``LocalQueue`` and ``TaskResult`` are imported
from here on first use, so ``import gaeservices.tasks`` stays light.
"""

from __future__ import annotations

from typing import Any

from ..exceptions import (
    InvalidTaskError,
    PermanentTaskFailure,
    SingularTaskFailure,
    TaskAlreadyExistsError,
    TaskError,
    UnsupportedTaskOptionError,
)
from .api import RetryOptions, TaskHandle, defer
from .context import TaskContext, current_task

__all__ = [
    "defer",
    "current_task",
    "RetryOptions",
    "TaskHandle",
    "TaskContext",
    "TaskError",
    "PermanentTaskFailure",
    "SingularTaskFailure",
    "InvalidTaskError",
    "TaskAlreadyExistsError",
    "UnsupportedTaskOptionError",
    "Dispatcher",
    "DeferredApp",
    "LocalQueue",
    "TaskResult",
]

_LAZY = {
    "Dispatcher": "gaeservices.tasks.worker",
    "DeferredApp": "gaeservices.tasks.endpoint",
    "LocalQueue": "gaeservices.tasks.local",
    "TaskResult": "gaeservices.tasks.result",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'gaeservices.tasks' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
