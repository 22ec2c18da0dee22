"""App Engine's services for any WSGI application.

Cache, sessions, deferred tasks and file transfers as composable WSGI pieces that
run on App Engine (through the services SDK), on your own servers (memcached, SQL,
Celery) and on a laptop with nothing installed (in-process cache, SQLite).

Importing this package is cheap: public names are resolved on first use, and no
backend's dependency (the SDK, SQLAlchemy, Celery, Django) is imported until a
backend that needs it is used.
"""

from __future__ import annotations

from typing import Any

from .config import Services, get_services, set_services
from .exceptions import (
    BackendUnavailableError,
    CacheError,
    ConfigurationError,
    DeliveryError,
    FileTransferError,
    GAEServicesError,
    InvalidMessageError,
    InvalidTaskError,
    MailError,
    NotAnIntegerError,
    PermanentDeliveryError,
    PermanentTaskFailure,
    QueueUnavailableError,
    SessionError,
    SessionTooLargeError,
    SingularTaskFailure,
    StoreError,
    TaskAlreadyExistsError,
    TaskError,
    TemporaryDeliveryError,
    UnsupportedTaskOptionError,
    UploadRejectedError,
    ValueTooLargeError,
)

__version__ = "0.1.0"

# public name -> module that defines it, imported on first access
_LAZY = {
    "SessionMiddleware": "gaeservices.sessions.middleware",
    "XSendfileMiddleware": "gaeservices.filetransfers.middleware",
    "DeferredApp": "gaeservices.tasks.endpoint",
    "defer": "gaeservices.tasks.api",
    "current_task": "gaeservices.tasks.context",
    "claim": "gaeservices.unique",
    "release": "gaeservices.unique",
    "owner_of": "gaeservices.unique",
    "serve_file": "gaeservices.filetransfers.api",
    "prepare_upload": "gaeservices.filetransfers.api",
    "public_download_url": "gaeservices.filetransfers.api",
    "uploaded_files": "gaeservices.filetransfers.api",
    "send_mail": "gaeservices.mail.api",
    "send_message": "gaeservices.mail.api",
}

__all__ = [
    "Services",
    "get_services",
    "set_services",
    "GAEServicesError",
    "ConfigurationError",
    "BackendUnavailableError",
    "CacheError",
    "ValueTooLargeError",
    "NotAnIntegerError",
    "StoreError",
    "SessionError",
    "SessionTooLargeError",
    "TaskError",
    "PermanentTaskFailure",
    "SingularTaskFailure",
    "InvalidTaskError",
    "TaskAlreadyExistsError",
    "UnsupportedTaskOptionError",
    "QueueUnavailableError",
    "FileTransferError",
    "UploadRejectedError",
    "MailError",
    "InvalidMessageError",
    "DeliveryError",
    "TemporaryDeliveryError",
    "PermanentDeliveryError",
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'gaeservices' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
