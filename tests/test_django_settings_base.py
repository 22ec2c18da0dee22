"""settings_base: importing it is cheap, and what it sets names real, working backends."""

from __future__ import annotations

import importlib
import subprocess
import sys


def test_importing_settings_base_imports_nothing_of_django():
    code = (
        "import sys; from gaeservices.django.settings_base import *; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('django', 'sqlalchemy') "
        "or m.startswith('google.appengine')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_the_environment_picks_the_queue_and_file_backends(monkeypatch):
    monkeypatch.setenv("EMAIL_QUEUE_NAME", "mail")
    monkeypatch.setenv("GAESERVICES_FILES_SERVE", "xaccel")
    import gaeservices.django.settings_base as base

    base = importlib.reload(base)
    try:
        assert base.EMAIL_QUEUE_NAME == "mail" and base.GAESERVICES_FILES_SERVE == "xaccel"
        assert base.GAESERVICES_FILES_UPLOAD is None  # left to the service: local, or blobstore on App Engine
    finally:
        monkeypatch.undo()
        importlib.reload(base)


def test_every_backend_it_names_is_importable():
    import django_fixtures

    django_fixtures.configure()
    from django.utils.module_loading import import_string

    import gaeservices.django.settings_base as base

    names = [base.EMAIL_BACKEND, base.CACHES["default"]["BACKEND"], base.STORAGES["default"]["BACKEND"],
             base.SESSION_ENGINE + ".SessionStore"]
    try:
        import django.tasks  # noqa: F401

        names.append(base.TASKS["default"]["BACKEND"])
    except ImportError:  # Django 5.2: TASKS is read by Django 6 only
        pass
    for name in names:
        assert import_string(name)


def test_on_django_5_2_the_task_backend_says_what_it_needs():
    import django

    if django.VERSION >= (6,):
        import pytest

        pytest.skip("Django 6 has django.tasks: tests/test_django_tasks.py covers the backend")
    import django_fixtures

    django_fixtures.configure()
    import pytest
    from django.core.exceptions import ImproperlyConfigured

    from gaeservices.django.tasks import TaskBackend

    with pytest.raises(ImproperlyConfigured, match="Django 6.0"):
        TaskBackend("default", {})
