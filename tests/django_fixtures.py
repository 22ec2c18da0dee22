"""Django, configured once for the adapter's in-process tests, with a test database.

Django allows one configuration per process, so every adapter test module shares
this one (``settings.configure``, no ``DJANGO_SETTINGS_MODULE``: other tests build
their ``Services`` from the environment and must not see a Django project there).
Django's own contract test packages (``cache``, ``sessions_tests``, see
``django_source.py``) are put on ``sys.path`` and installed as apps, as Django's
runtests does. The example project (examples/django_site) has settings of its own
and is tested in subprocesses instead.
"""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile

import pytest

from conftest import unavailable

SECRET_KEY = "django-secret-key-for-the-gaeservices-test-suite"
_state: dict[str, object] = {}


def configure() -> str | None:
    """Configure and set up Django once; the contract tests' directory, or why they are missing."""
    if "configured" in _state:
        return _state.get("contract")  # type: ignore[return-value]
    import django
    from django.conf import settings

    import django_source

    apps = [
        "django.contrib.contenttypes",
        "django.contrib.auth",
        "django.contrib.sessions",
        "gaeservices.django",
    ]
    try:
        where = str(django_source.tests_dir())
    except django_source.Unavailable as exc:
        _state["missing"] = str(exc)
        where = None
    else:
        if where not in sys.path:
            sys.path.append(where)
        apps += ["cache", "sessions_tests"]
    _state["contract"] = where
    data = tempfile.mkdtemp(prefix="gaeservices-django-")
    atexit.register(shutil.rmtree, data, True)
    settings.configure(
        SECRET_KEY=SECRET_KEY,
        INSTALLED_APPS=apps,
        DATABASES={
            "default": {
                "ENGINE": "django.db.backends.sqlite3",
                "NAME": os.path.join(data, "db.sqlite3"),
                "TEST": {"NAME": os.path.join(data, "test.sqlite3")},
            }
        },
        CACHES={"default": {"BACKEND": "gaeservices.django.cache.CacheBackend", "LOCATION": "memory://"}},
        SESSION_ENGINE="gaeservices.django.sessions",
        TASKS={  # read by Django 6 only
            "default": {"BACKEND": "gaeservices.django.tasks.TaskBackend", "QUEUES": ["default", "mail"]}
        },
        USE_TZ=True,
        ROOT_URLCONF="django_test_urls",
        MIDDLEWARE=[],
        TEMPLATES=[{"BACKEND": "django.template.backends.django.DjangoTemplates", "APP_DIRS": True}],
        DEFAULT_AUTO_FIELD="django.db.models.AutoField",
        ALLOWED_HOSTS=["*"],
        MEDIA_ROOT=os.path.join(data, "media"),
        GAESERVICES_DATA=data,
    )
    django.setup()
    _state["configured"] = True
    return where


def contract_dir() -> str:
    """Where Django's contract test packages are; skip (fail in CI) when they cannot be had."""
    where = configure()
    if where is None:
        unavailable("Django's contract tests", f"{_state['missing']}; `make test` fetches them")
    return where


@pytest.fixture(scope="session")
def django_test_db():
    """Django's test environment and test database, for the whole session.

    Each module that imports this fixture holds its own copy of it: the first one
    sets Django up, the others find it done.
    """
    configure()
    if _state.get("test_db"):
        yield
        return
    _state["test_db"] = True
    from django.test.utils import (
        setup_databases,
        setup_test_environment,
        teardown_databases,
        teardown_test_environment,
    )

    setup_test_environment()
    old = setup_databases(verbosity=0, interactive=False)
    yield
    teardown_databases(old, verbosity=0)
    teardown_test_environment()
