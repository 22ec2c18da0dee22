"""The file-transfer backends, by name, and the settings that choose them.

Settings are read from the Services object's environment each time a backend is
chosen -- not frozen at import -- so tests and multi-tenant set-ups can change
them; reading them costs a few dictionary lookups, and the backend objects built
from one set of values are remembered.

| variable                    | meaning                                                   | default |
|-----------------------------|-----------------------------------------------------------|---------|
| ``GAESERVICES_FILES_SERVE``  | ``stream``, ``xsendfile``, ``xaccel``, ``blobstore``, ``redirect`` | ``blobstore`` on App Engine, else ``stream`` |
| ``GAESERVICES_FILES_UPLOAD`` | ``local``, ``blobstore``                                   | ``blobstore`` on App Engine, else ``local`` |
| ``GAESERVICES_FILES_PUBLIC`` | ``none``, or a base URL (``https://cdn.example.com/media/``) | ``none`` |
| ``GAESERVICES_FILES_ROOT``   | the directory names are served from and uploads saved to  | ``<data dir>/uploads`` |
| ``GAESERVICES_FILES_XACCEL`` | ``/fs/root=/internal/prefix/[,...]`` for ``xaccel``         | ``<files root>=/protected/`` |
| ``GAESERVICES_FILES_MAX_UPLOAD_SIZE`` | the largest upload body accepted, in bytes        | ``33554432`` (32 MiB) |
"""

from __future__ import annotations

import os
import threading
from typing import Any

from ..config import Services, get_services, import_backend
from ..exceptions import ConfigurationError

__all__ = ["SERVE", "UPLOAD", "FilesSettings", "settings", "backend"]

SERVE = {
    "stream": "gaeservices.filetransfers.stream_backend:StreamBackend",
    "xsendfile": "gaeservices.filetransfers.xsendfile:XSendfileBackend",
    "xaccel": "gaeservices.filetransfers.xsendfile:XAccelBackend",
    "blobstore": "gaeservices.filetransfers.blobstore:BlobstoreBackend",
    "redirect": "gaeservices.filetransfers.redirect:RedirectBackend",
}
UPLOAD = {
    "local": "gaeservices.filetransfers.uploads:LocalUploadBackend",
    "blobstore": "gaeservices.filetransfers.blobstore:BlobstoreBackend",
}
PUBLIC = {
    "none": "gaeservices.filetransfers.redirect:NoPublicURL",
    "url": "gaeservices.filetransfers.redirect:BaseURL",
    "blobstore": "gaeservices.filetransfers.blobstore:BlobstoreBackend",
}
_REGISTRIES = {"serve": SERVE, "upload": UPLOAD, "public": PUBLIC}
_VARIABLES = {
    "serve": "GAESERVICES_FILES_SERVE",
    "upload": "GAESERVICES_FILES_UPLOAD",
    "public": "GAESERVICES_FILES_PUBLIC",
}


class FilesSettings:
    """File-transfer settings of one Services object, as read now."""

    __slots__ = ("services", "serve", "upload", "public", "public_url", "root", "xaccel", "max_upload_size",
                 "built")

    def __init__(self, services: Services) -> None:
        env = services.environ
        on_gae = services.on_app_engine
        self.services = services
        self.serve = env.get("GAESERVICES_FILES_SERVE") or ("blobstore" if on_gae else "stream")
        self.upload = env.get("GAESERVICES_FILES_UPLOAD") or ("blobstore" if on_gae else "local")
        public = env.get("GAESERVICES_FILES_PUBLIC") or "none"
        self.public_url: str | None
        self.public, self.public_url = ("url", public) if "://" in public or public.startswith("/") else (public, None)
        self.root = os.path.abspath(env.get("GAESERVICES_FILES_ROOT") or os.path.join(services.data_dir, "uploads"))
        self.xaccel = _parse_xaccel(env.get("GAESERVICES_FILES_XACCEL"), self.root)
        self.max_upload_size = _parse_size(env.get("GAESERVICES_FILES_MAX_UPLOAD_SIZE"))
        self.built: dict[tuple[str, Any], Any] = {}


def _parse_xaccel(value: str | None, root: str) -> tuple[tuple[str, str], ...]:
    if not value:
        return ((root, "/protected/"),)
    pairs = []
    for item in filter(None, (part.strip() for part in value.split(","))):
        directory, sep, location = item.partition("=")
        if not sep or not directory or not location.startswith("/"):
            raise ConfigurationError(
                f"GAESERVICES_FILES_XACCEL={value!r}: expected /fs/root=/internal/prefix/[,...]"
            )
        pairs.append((directory, location))
    return tuple(pairs)


def _parse_size(value: str | None) -> int:
    from .uploads import DEFAULT_MAX_UPLOAD_SIZE

    if not value:
        return DEFAULT_MAX_UPLOAD_SIZE
    if not value.strip().isdigit() or int(value) <= 0:
        raise ConfigurationError(
            f"GAESERVICES_FILES_MAX_UPLOAD_SIZE={value!r}: expected a positive number of bytes, e.g. 33554432"
        )
    return int(value)


_settings: dict[tuple[Any, ...], FilesSettings] = {}
_lock = threading.Lock()


def settings(services: Services | None = None) -> FilesSettings:
    """The file-transfer settings of ``services`` (the process default if None), as set now."""
    services = services or get_services()
    env = services.environ
    get = env.get
    key = (
        services,
        get("GAESERVICES_FILES_SERVE"),
        get("GAESERVICES_FILES_UPLOAD"),
        get("GAESERVICES_FILES_PUBLIC"),
        get("GAESERVICES_FILES_ROOT"),
        get("GAESERVICES_FILES_XACCEL"),
        get("GAESERVICES_FILES_MAX_UPLOAD_SIZE"),
    )
    found = _settings.get(key)
    if found is None:
        found = FilesSettings(services)
        with _lock:
            if len(_settings) > 64:
                _settings.clear()
            _settings[key] = found
    return found


def backend(kind: str, given: Any, current: FilesSettings) -> Any:
    """The backend object for ``kind`` ("serve", "upload", "public").

    ``given`` is a backend object (returned as is), a registered name, or None for
    the configured one. Backends built from one set of settings are remembered.
    """
    if given is not None and not isinstance(given, str):
        return given
    found = current.built.get((kind, given))
    if found is not None:
        return found
    registry = _REGISTRIES[kind]
    name = given or getattr(current, kind)
    value = None
    if kind == "public" and given and ("://" in given or given.startswith("/")):
        name, value = "url", given
    if name not in registry:
        raise ConfigurationError(
            f"{_VARIABLES[kind]}={name!r} is not a {kind} backend; accepted: {', '.join(sorted(registry))}"
        )
    found = import_backend(registry[name]).from_settings(current, value)
    current.built[(kind, given)] = found
    return found
