"""The exception hierarchy.

Every error this library raises on purpose derives from :class:`GAEServicesError`,
so callers can catch the whole family or one precise member of it.
"""

from __future__ import annotations


class GAEServicesError(Exception):
    """Base class of every error raised on purpose by gaeservices."""


class ConfigurationError(GAEServicesError, ValueError):
    """A setting is missing, malformed or names an unknown backend.

    Raised when the :class:`~gaeservices.config.Services` object is built, so a
    bad deployment fails at start-up rather than on the first request.
    """


class BackendUnavailableError(GAEServicesError):
    """A backend's optional dependency is not installed."""


class CacheError(GAEServicesError):
    """Base class of cache errors."""


class ValueTooLargeError(CacheError, ValueError):
    """A value exceeds the backend's item size limit; it was not stored."""


class StoreError(GAEServicesError):
    """The durable store failed; nothing was half-written."""


class FileTransferError(GAEServicesError):
    """Base class of file-transfer errors."""


class UploadRejectedError(FileTransferError):
    """An upload's one-time token is missing, forged, expired or already used.

    Nothing from the rejected request was stored; answer it with 403.
    """
