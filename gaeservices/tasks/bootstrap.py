"""Run the application's start-up code once per process, before its first task.

A worker process (or the endpoint of a fresh App Engine instance) may receive a
task before anything else has imported the application: models unregistered,
Django not set up. The bootstrap is, in order of preference:

- ``Services(bootstrap=...)`` or ``GAESERVICES_BOOTSTRAP=package.module:callable``;
- ``django.setup()`` when ``DJANGO_SETTINGS_MODULE`` is set;
- nothing.

It runs once per process however many endpoints or threads ask at the same
time. If it raises, it is not marked done: the task is answered 500 (and
retried later) and the next task tries the bootstrap again.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import Callable, Mapping
from typing import Any

from ..config import load_callable

__all__ = ["Bootstrap", "bootstrap_for", "add_import_paths"]

logger = logging.getLogger("gaeservices.tasks")


class Bootstrap:
    """A once-per-process start-up callable; :meth:`ensure` runs it at most once."""

    __slots__ = ("description", "_resolve", "_done", "_lock")

    def __init__(self, description: str, resolve: Callable[[], Callable[[], Any]] | None) -> None:
        self.description = description
        self._resolve = resolve
        self._done = resolve is None
        self._lock = threading.Lock()

    @property
    def done(self) -> bool:
        return self._done

    def ensure(self) -> None:
        """Run the bootstrap unless it has succeeded already; re-raise its error."""
        if self._done:
            return
        with self._lock:
            if self._done:
                return
            assert self._resolve is not None
            try:
                self._resolve()()
            except BaseException:
                logger.exception("bootstrap %s failed; it is tried again before the next task", self.description)
                raise
            self._done = True
            logger.info("bootstrap %s done", self.description)


_registry: dict[Any, Bootstrap] = {}
_registry_lock = threading.Lock()


def bootstrap_for(spec: str | Callable[[], Any] | None, environ: Mapping[str, str]) -> Bootstrap:
    """The process-wide :class:`Bootstrap` for a configured ``spec``.

    Keyed by what it runs, so two endpoints with the same configuration share
    one and the application is set up once.
    """
    if spec is None and environ.get("DJANGO_SETTINGS_MODULE"):
        key: Any = ("django", environ["DJANGO_SETTINGS_MODULE"])
    else:
        key = spec
    with _registry_lock:
        bootstrap = _registry.get(key)
        if bootstrap is None:
            bootstrap = _registry[key] = _make(spec, key)
        return bootstrap


def _make(spec: str | Callable[[], Any] | None, key: Any) -> Bootstrap:
    if isinstance(key, tuple) and key[0] == "django":

        def django_setup() -> Callable[[], Any]:
            import django

            return django.setup

        return Bootstrap(f"django.setup() for {key[1]}", django_setup)
    if spec is None:
        return Bootstrap("(none)", None)
    if isinstance(spec, str):
        path = spec
        return Bootstrap(path, lambda: load_callable(path, "GAESERVICES_BOOTSTRAP"))
    return Bootstrap(getattr(spec, "__qualname__", repr(spec)), lambda: spec)


def add_import_paths(pythonpath: str | None = None) -> None:
    """Put the current directory (and ``pythonpath``'s directories) first on the import
    path, as gunicorn and celery do: tasks name functions of the application, which
    the worker imports as the application would from its own directory."""
    extra = [p for p in (pythonpath or "").split(os.pathsep) if p] if pythonpath else []
    extra = [q for p in extra for q in p.split(",") if q]
    for path in reversed([os.getcwd(), *(os.path.abspath(p) for p in extra)]):
        if path in sys.path:
            sys.path.remove(path)
        sys.path.insert(0, path)
