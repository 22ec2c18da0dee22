"""The example's deferred work, in a module of its own: a task must be importable
by the worker under the same name as in the application (not ``__main__``)."""

from __future__ import annotations

import os
from collections import Counter

from gaeservices import current_task, get_services, send_mail


def reports_dir() -> str:
    return os.path.join(get_services().data_dir, "reports")


def report_path(report_id: str) -> str:
    if not report_id.isalnum():
        raise ValueError(f"not a report id: {report_id!r}")
    return os.path.join(reports_dir(), f"{report_id}.txt")


def build_report(report_id: str, text: str, email: str) -> None:
    """Runs in the worker: count the words, write the report, mail its owner."""
    words = [w.strip(".,;:!?\"'()").lower() for w in text.split()]
    lines = [f"{count:6}  {word}" for word, count in Counter(w for w in words if w).most_common()]
    os.makedirs(reports_dir(), exist_ok=True)
    partial = report_path(report_id) + ".part"
    with open(partial, "w", encoding="utf-8") as f:
        f.write(f"{len(words)} words\n\n" + "\n".join(lines) + "\n")
    os.replace(partial, report_path(report_id))  # a download never sees half a report
    get_services().cache.incr("example:reports-built", 1, default=0)
    if email:
        task = current_task()
        send_mail("reports@example.com", [email], f"Your report {report_id} is ready",
                  f"{len(words)} words. Built by task {task.name if task else '?'}.\n")
