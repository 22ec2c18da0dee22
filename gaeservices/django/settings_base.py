"""``from gaeservices.django.settings_base import *``: Django on the services, with good defaults.

It plays the part of djangoappengine's ``settings_base``. Put it at the top of a
project's settings and override below it what needs to differ::

    from gaeservices.django.settings_base import *   # noqa: F403

    SECRET_KEY = os.environ["DJANGO_SECRET_KEY"]      # signs sessions, tasks, upload tokens
    INSTALLED_APPS = [..., "gaeservices.django"]      # {% load filetransfers %}

The services are chosen by the same ``GAESERVICES_*`` environment as everywhere
(``GAESERVICES_CACHE``, ``GAESERVICES_STORE``, ``GAESERVICES_QUEUE``,
``GAESERVICES_MAIL``, ``GAESERVICES_FILES_*``): the App Engine services on App
Engine, memcached/SQL/SMTP on your servers, embedded defaults on a laptop. Django's
``SECRET_KEY`` (then ``SECRET_KEY_FALLBACKS``) signs unless ``GAESERVICES_SECRET_KEY``
is set. Importing this module imports nothing of Django or of the backends.
"""

from __future__ import annotations

import os
from typing import Any

_env = os.environ.get

# -- mail: deferred through EMAIL_QUEUE_NAME, sent by GAESERVICES_MAIL's backend --------
EMAIL_BACKEND = "gaeservices.django.mail.EmailBackend"
EMAIL_QUEUE_NAME = _env("EMAIL_QUEUE_NAME") or "default"

# -- cache: the Services' cache (GAESERVICES_CACHE) -------------------------------------
CACHES: dict[str, dict[str, Any]] = {
    "default": {
        "BACKEND": "gaeservices.django.cache.CacheBackend",
        "LOCATION": "",  # "" is GAESERVICES_CACHE; a cache URL gives this alias its own
        "TIMEOUT": 300,
    }
}

# -- sessions: cached_db records, the store the truth ------------------------------------
SESSION_ENGINE = "gaeservices.django.sessions"

# -- tasks (Django 6's django.tasks; ignored by 5.2): enqueued through defer -------------
TASKS: dict[str, dict[str, Any]] = {
    "default": {
        "BACKEND": "gaeservices.django.tasks.TaskBackend",
        "QUEUES": ["default"],
    }
}

# -- file transfers: the django-filetransfers API's backends and the upload storage ------
# None leaves the choice to the environment: stream/local off App Engine, blobstore on it.
GAESERVICES_FILES_SERVE = _env("GAESERVICES_FILES_SERVE") or None
GAESERVICES_FILES_UPLOAD = _env("GAESERVICES_FILES_UPLOAD") or None
GAESERVICES_FILES_PUBLIC = _env("GAESERVICES_FILES_PUBLIC") or None
STORAGES: dict[str, dict[str, Any]] = {
    "default": {"BACKEND": "gaeservices.django.storage.FileTransferStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}

__all__ = [
    "EMAIL_BACKEND",
    "EMAIL_QUEUE_NAME",
    "CACHES",
    "SESSION_ENGINE",
    "TASKS",
    "GAESERVICES_FILES_SERVE",
    "GAESERVICES_FILES_UPLOAD",
    "GAESERVICES_FILES_PUBLIC",
    "STORAGES",
]
