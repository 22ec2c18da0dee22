"""``queue.yaml``, the file an App Engine application deploys, read for the local queue.

The same file configures both platforms, so a queue behaves alike on each:

- ``rate`` (``N/s``, ``N/m``, ``N/h``, ``N/d``, or ``0``: paused) and
  ``bucket_size`` (default 5): a token bucket per queue, shared by every worker
  (its state is in the database), refilled at ``rate`` up to ``bucket_size``;
  each task a worker claims takes a token;
- ``max_concurrent_requests``: at most that many of the queue's tasks leased
  (running) at once, across every worker;
- ``retry_parameters`` (``task_retry_limit``, ``task_age_limit`` such as ``2d``,
  ``min_backoff_seconds``, ``max_backoff_seconds``, ``max_doublings``): the
  retry options of the queue's tasks that bring none of their own
  (``_retry_options`` wins, as on App Engine).

As on App Engine, ``default`` exists even when the file does not name it (at
5/s, bucket 5), and a task for a queue the file does not name is refused when
it is deferred. Pull queues (``mode: pull``) hold no deferred tasks: a task for
one is refused too. ``target``, ``acl`` and ``total_storage_limit`` mean nothing
here and are ignored.

Reading YAML needs ``ruamel.yaml`` -- what the App Engine SDK itself reads
queue.yaml with (``pip install 'gaeservices[yaml]'``, included in ``[appengine]``),
imported only when a file is loaded.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

from ..exceptions import ConfigurationError
from .api import RetryOptions

__all__ = ["QueueSettings", "QueueConfig", "load_queue_yaml", "parse_queue_yaml", "parse_rate", "format_rate", "parse_age"]

_RATE = re.compile(r"^([0-9]+(?:\.[0-9]*)?)/([smhd])$")
_AGE = re.compile(r"^([0-9]+(?:\.[0-9]*)?)([smhd])$")
_UNIT = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_QUEUE_NAME = re.compile(r"^[a-zA-Z0-9-]{1,100}$")
DEFAULT_BUCKET_SIZE = 5
DEFAULT_RATE = 5.0  # App Engine's rate for "default" when queue.yaml does not set one
_QUEUE_KEYS = {"name", "rate", "bucket_size", "max_concurrent_requests", "retry_parameters", "mode", "target", "acl"}
_RETRY_KEYS = {"task_retry_limit", "task_age_limit", "min_backoff_seconds", "max_backoff_seconds", "max_doublings"}


def parse_rate(text: Any) -> float:
    """Tasks per second from ``"5/s"``, ``"2.5/m"``, ``"100/h"``, ``"1/d"`` or ``"0"``."""
    value = str(text).strip()
    if value == "0":
        return 0.0
    match = _RATE.match(value)
    if not match:
        raise ValueError(f"rate {text!r} is not N/s, N/m, N/h, N/d or 0")
    return float(match.group(1)) / _UNIT[match.group(2)]


def format_rate(per_second: float) -> str:
    """A rate in tasks per second in the first unit where it is at least 1: ``"2.5/m"``."""
    for unit, seconds in _UNIT.items():
        value = per_second * seconds
        if value >= 1 or unit == "d":
            return f"{round(value, 6):g}/{unit}"
    raise AssertionError("unreachable")


def parse_age(text: Any) -> float:
    """Seconds from ``"30s"``, ``"10m"``, ``"2h"`` or ``"2d"``."""
    match = _AGE.match(str(text).strip())
    if not match:
        raise ValueError(f"task_age_limit {text!r} is not a number followed by s, m, h or d")
    return float(match.group(1)) * _UNIT[match.group(2)]


class QueueSettings:
    """One queue's limits: ``rate`` (tasks/s; None: unlimited; 0: paused), ``bucket_size``,
    ``max_concurrent`` (None: unlimited) and ``retry`` (RetryOptions or None)."""

    __slots__ = ("name", "rate", "bucket_size", "max_concurrent", "retry")

    def __init__(
        self,
        name: str,
        *,
        rate: float | None = None,
        bucket_size: int = DEFAULT_BUCKET_SIZE,
        max_concurrent: int | None = None,
        retry: RetryOptions | None = None,
    ) -> None:
        self.name = name
        self.rate = rate
        self.bucket_size = bucket_size
        self.max_concurrent = max_concurrent
        self.retry = retry

    def describe(self) -> str:
        """The limits as people read them: ``"2.5/m, bucket 3, at most 2 running"``,
        ``"paused (rate 0)"``, ``"unlimited"``."""
        if self.rate == 0:
            return "paused (rate 0)"
        parts = ["unlimited" if self.rate is None else f"{format_rate(self.rate)}, bucket {self.bucket_size}"]
        if self.max_concurrent is not None:
            parts.append(f"at most {self.max_concurrent} running")
        return ", ".join(parts)

    @property
    def limited(self) -> bool:
        """True when claims of this queue's tasks must ask the bucket or count the running ones."""
        return self.rate is not None or self.max_concurrent is not None

    def __repr__(self) -> str:
        return (
            f"<QueueSettings {self.name} rate={self.rate} bucket={self.bucket_size} "
            f"max_concurrent={self.max_concurrent} retry={self.retry}>"
        )


class QueueConfig:
    """The queues of one queue.yaml: ``settings[name]``, and the pull queues' names."""

    __slots__ = ("settings", "pull", "source")

    def __init__(self, settings: Mapping[str, QueueSettings], pull: frozenset[str] = frozenset(), source: str = "") -> None:
        self.settings = dict(settings)
        self.pull = pull
        self.source = source

    def check_queue(self, name: str) -> None:
        """Refuse a task for a queue the file does not declare (App Engine does too)."""
        if name in self.pull:
            raise ConfigurationError(f"queue {name!r} is a pull queue in {self.source}: it holds no deferred tasks")
        if name not in self.settings:
            known = ", ".join(sorted(self.settings))
            raise ConfigurationError(f"queue {name!r} is not declared in {self.source} (its queues: {known})")

    def __repr__(self) -> str:
        return f"<QueueConfig {self.source} {sorted(self.settings)}>"


def _number(value: Any, what: str, *, integer: bool = False, minimum: float = 0.0) -> Any:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{what} must be a number, not {value!r}")
    if integer and not float(value).is_integer():
        raise ValueError(f"{what} must be a whole number, not {value!r}")
    if not math.isfinite(value) or value < minimum:
        raise ValueError(f"{what} must be at least {minimum:g}, not {value!r}")
    return int(value) if integer else float(value)


def _retry(entry: Any, where: str) -> RetryOptions:
    if not isinstance(entry, Mapping):
        raise ValueError(f"{where}: retry_parameters must be a mapping")
    unknown = set(entry) - _RETRY_KEYS
    if unknown:
        raise ValueError(f"{where}: unknown retry parameters {sorted(unknown)}; known: {sorted(_RETRY_KEYS)}")
    options: dict[str, Any] = {}
    if "task_retry_limit" in entry:
        options["task_retry_limit"] = _number(entry["task_retry_limit"], f"{where}: task_retry_limit", integer=True)
    if "task_age_limit" in entry:
        options["task_age_limit"] = parse_age(entry["task_age_limit"])
    if "min_backoff_seconds" in entry:
        options["min_backoff_seconds"] = _number(entry["min_backoff_seconds"], f"{where}: min_backoff_seconds")
    if "max_backoff_seconds" in entry:
        options["max_backoff_seconds"] = _number(entry["max_backoff_seconds"], f"{where}: max_backoff_seconds")
    if "max_doublings" in entry:
        options["max_doublings"] = _number(entry["max_doublings"], f"{where}: max_doublings", integer=True)
    return RetryOptions(**options)


def parse_queue_yaml(document: Any, source: str = "queue.yaml") -> QueueConfig:
    """The :class:`QueueConfig` of a parsed queue.yaml (a mapping with a ``queue`` list)."""
    try:
        if not isinstance(document, Mapping) or not isinstance(document.get("queue", []), list):
            raise ValueError("expected a mapping with a `queue:` list")
        settings: dict[str, QueueSettings] = {}
        pull: set[str] = set()
        for index, entry in enumerate(document.get("queue") or []):
            where = f"queue #{index + 1}"
            if not isinstance(entry, Mapping):
                raise ValueError(f"{where} is not a mapping")
            name = str(entry.get("name", ""))
            if not _QUEUE_NAME.match(name):
                raise ValueError(f"{where}: bad queue name {name!r} (letters, digits and hyphens)")
            where = f"queue {name!r}"
            if name in settings or name in pull:
                raise ValueError(f"{where} is declared twice")
            unknown = set(entry) - _QUEUE_KEYS
            if unknown:
                raise ValueError(f"{where}: unknown settings {sorted(unknown)}")
            if str(entry.get("mode", "push")) == "pull":
                pull.add(name)
                continue
            if "rate" not in entry:
                raise ValueError(f"{where}: a push queue needs a rate")
            settings[name] = QueueSettings(
                name,
                rate=parse_rate(entry["rate"]),
                bucket_size=_number(entry.get("bucket_size", DEFAULT_BUCKET_SIZE), f"{where}: bucket_size",
                                    integer=True, minimum=1),
                max_concurrent=(
                    _number(entry["max_concurrent_requests"], f"{where}: max_concurrent_requests",
                            integer=True, minimum=1)
                    if "max_concurrent_requests" in entry else None
                ),
                retry=_retry(entry["retry_parameters"], where) if "retry_parameters" in entry else None,
            )
    except ValueError as exc:
        raise ConfigurationError(f"{source}: {exc}") from None
    if "default" not in settings and "default" not in pull:
        settings["default"] = QueueSettings("default", rate=DEFAULT_RATE, bucket_size=DEFAULT_BUCKET_SIZE)
    return QueueConfig(settings, frozenset(pull), source)


def _safe_load(text: str) -> Any:
    try:
        from ruamel.yaml import YAML
    except ImportError:
        raise ConfigurationError(
            "reading queue.yaml needs ruamel.yaml, what the App Engine SDK reads it with: "
            "pip install 'gaeservices[yaml]'"
        ) from None
    return YAML(typ="safe", pure=True).load(text)


def load_queue_yaml(path: str) -> QueueConfig:
    """Read and check ``path``; ConfigurationError names the file and what is wrong."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as exc:
        raise ConfigurationError(f"cannot read the queue configuration {path!r}: {exc}") from None
    try:
        document = _safe_load(text)
    except ConfigurationError:
        raise
    except Exception as exc:  # the YAML library's own syntax errors
        raise ConfigurationError(f"{path}: not valid YAML: {exc}") from None
    return parse_queue_yaml(document or {}, path)
