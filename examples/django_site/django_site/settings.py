"""The example project: every service through Django's own APIs.

``settings_base`` turns them on; the ``GAESERVICES_*`` environment picks the
backends (embedded defaults here: an in-process cache, SQLite, console mail).
"""

import os
from pathlib import Path

from gaeservices.django.settings_base import *  # noqa: F403

BASE_DIR = Path(__file__).resolve().parent.parent
DATA_DIR = Path(os.environ.setdefault("GAESERVICES_DATA_DIR", str(BASE_DIR / ".gaeservices")))
DATA_DIR.mkdir(parents=True, exist_ok=True)

# Signs sessions' companions, task payloads and upload tokens too (at least 32 bytes).
SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "django-example-only-key-replace-it-in-any-deployment")
DEBUG = os.environ.get("DJANGO_DEBUG", "1") == "1"
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "testserver"]

INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "gaeservices.django",  # {% load filetransfers %}
    "accounts",
]
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]
ROOT_URLCONF = "django_site.urls"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]
WSGI_APPLICATION = "django_site.wsgi.application"
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": str(DATA_DIR / "django.sqlite3"),
        "OPTIONS": {"init_command": "PRAGMA journal_mode=WAL"},
    }
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
USE_TZ = True
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "home"
DEFAULT_FROM_EMAIL = "Example site <site@example.com>"
EMAIL_QUEUE_NAME = "mail"
TASKS["default"]["QUEUES"] = ["default", "mail"]  # noqa: F405
