"""Deferred tasks: ``defer`` a call, run it in a worker through ``DeferredApp``."""

from __future__ import annotations

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
]
