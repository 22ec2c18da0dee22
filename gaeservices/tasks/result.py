"""How one delivery of a task went: :class:`TaskResult` and its outcomes.

A small value of its own, so that queue backends read results without importing
the WSGI endpoint that produces them.
"""

from __future__ import annotations

__all__ = ["TaskResult", "SUCCESS", "PERMANENT_FAILURE", "RETRY", "REFUSED"]

SUCCESS = "success"
PERMANENT_FAILURE = "permanent-failure"
RETRY = "retry"
REFUSED = "refused"


class TaskResult:
    """How one delivery went: HTTP ``status``, ``outcome``, ``error`` text and ``exception``.

    ``outcome`` is ``success``, ``permanent-failure`` (never run it again),
    ``retry`` (run it again after its backoff) or ``refused`` (the body did not
    verify, or was delivered under another name or queue than it is signed for:
    running it again cannot help).
    """

    __slots__ = ("status", "outcome", "error", "exception")

    def __init__(self, status: int, outcome: str, error: str = "", exception: BaseException | None = None):
        self.status = status
        self.outcome = outcome
        self.error = error
        self.exception = exception

    @property
    def done(self) -> bool:
        """True when the task must not run again (success or permanent failure)."""
        return self.outcome in (SUCCESS, PERMANENT_FAILURE)

    def __repr__(self) -> str:
        return f"<TaskResult {self.status} {self.outcome}{' ' + self.error[:60] if self.error else ''}>"
