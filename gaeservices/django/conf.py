"""The Services a Django project uses: Django's SECRET_KEY signs, unless
``GAESERVICES_SECRET_KEY`` is set.

Cookies, task payloads and upload tokens are signed with the Services' keys. In a
Django project those are ``SECRET_KEY`` followed by ``SECRET_KEY_FALLBACKS``
(newest first: the first signs, every one verifies), which is how Django users
already rotate keys. The web processes, ``gaeservices worker`` and the deferred
endpoint all run with ``DJANGO_SETTINGS_MODULE`` set, so they all read the same
keys (see ``Services.__init__``).
"""

from __future__ import annotations

import os
from collections.abc import Callable

from ..config import MIN_KEY_BYTES, Services, get_services
from ..exceptions import ConfigurationError

__all__ = ["secret_keys", "services", "setting"]


def setting(name: str, default: object = None) -> object:
    """A Django setting, or ``default`` when the project does not define it."""
    from django.conf import settings

    return getattr(settings, name, default)


def secret_keys() -> list[str | bytes]:
    """``SECRET_KEY`` then ``SECRET_KEY_FALLBACKS``; ConfigurationError if one is too short."""
    from django.conf import settings

    keys: list[str | bytes] = [settings.SECRET_KEY, *getattr(settings, "SECRET_KEY_FALLBACKS", ())]
    for position, key in enumerate(keys):
        size = len(key.encode() if isinstance(key, str) else key)
        if size < MIN_KEY_BYTES:
            name = "SECRET_KEY" if position == 0 else f"SECRET_KEY_FALLBACKS[{position - 1}]"
            raise ConfigurationError(
                f"{name} is {size} bytes; gaeservices signs with it and needs at least "
                f"{MIN_KEY_BYTES} (python -c 'import secrets; print(secrets.token_urlsafe(48))'), "
                "or set GAESERVICES_SECRET_KEY"
            )
    return keys


def _build() -> Services:
    if os.environ.get("GAESERVICES_SECRET_KEY") or os.environ.get("DJANGO_SETTINGS_MODULE"):
        return Services.from_environ()  # which reads SECRET_KEY itself under DJANGO_SETTINGS_MODULE
    return Services(secret_key=secret_keys())  # settings.configure(): no module to name


def services() -> Services:
    """The process-wide Services; built with Django's keys if it does not exist yet."""
    return get_services(factory=_build)


def _on_django_commit(add: Callable[[], object]) -> bool:
    """``defer(..., _transactional=True)`` inside ``transaction.atomic()``: queue on commit."""
    import sys

    if "django.db" not in sys.modules:
        return False
    from django.conf import settings

    if not settings.configured:
        return False
    from django.db import transaction

    if not transaction.get_connection().in_atomic_block:
        return False
    transaction.on_commit(add)
    return True


def _register() -> None:
    from ..tasks import api

    if _on_django_commit not in api.transaction_hooks:
        api.transaction_hooks.append(_on_django_commit)


_register()
