"""What a running task can learn about itself: :func:`current_task`.

The endpoint sets the context around the call, so code deep inside a task (or a
helper shared with request handlers) can ask whether it runs as a task, which
attempt this is, and under which name -- without the task's signature changing.
"""

from __future__ import annotations

import contextvars
from datetime import datetime, timezone

__all__ = ["TaskContext", "current_task"]


class TaskContext:
    """The running task: its ``name``, ``queue``, ``execution_count`` (1 on the first
    attempt), ``retry_count`` (``execution_count - 1``) and ``eta`` (UTC, or None)."""

    __slots__ = ("name", "queue", "execution_count", "eta")

    def __init__(
        self,
        name: str = "",
        queue: str = "default",
        execution_count: int = 1,
        eta: float | None = None,
    ) -> None:
        self.name = name
        self.queue = queue
        self.execution_count = execution_count
        self.eta = eta  # seconds since the epoch, as the queue stores it

    @property
    def retry_count(self) -> int:
        return max(self.execution_count - 1, 0)

    @property
    def eta_datetime(self) -> datetime | None:
        return None if self.eta is None else datetime.fromtimestamp(self.eta, timezone.utc)

    def __repr__(self) -> str:
        return (
            f"<TaskContext {self.name!r} queue={self.queue!r} "
            f"execution_count={self.execution_count}>"
        )


_current: contextvars.ContextVar[TaskContext | None] = contextvars.ContextVar(
    "gaeservices_task", default=None
)


def current_task() -> TaskContext | None:
    """The task being run in this thread (or asyncio task), or None outside tasks."""
    return _current.get()
