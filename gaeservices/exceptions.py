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


class BackendUnavailableError(GAEServicesError, ImportError):
    """A backend's optional dependency is not installed.

    Also an :class:`ImportError` (its ``name`` is the missing module), so code that
    falls back when an optional dependency is missing catches it either way.
    """


class CacheError(GAEServicesError):
    """Base class of cache errors."""


class ValueTooLargeError(CacheError, ValueError):
    """A value exceeds the backend's item size limit; it was not stored."""


class NotAnIntegerError(CacheError, TypeError):
    """``incr``/``decr`` met a value that is not an unsigned 64-bit integer."""


class StoreError(GAEServicesError):
    """The durable store failed; nothing was half-written."""


class FileTransferError(GAEServicesError):
    """Base class of file-transfer errors."""


class UploadRejectedError(FileTransferError):
    """An upload was refused and nothing of it was stored; answer with ``status``.

    Raised as such (403) when its one-time token is missing, forged, expired or
    already used; the subclasses below say why else.
    """

    status = 403


class UploadTooLargeError(UploadRejectedError):
    """The upload's body is larger than ``max_upload_size``: 413, refused before it was read
    when its length was declared, else as soon as the limit was passed."""

    status = 413


class MalformedUploadError(UploadRejectedError):
    """The upload's body is not a complete multipart/form-data body (400), or declares
    no length where one is needed (411)."""

    status = 400

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


class TaskError(GAEServicesError):
    """Base class of deferred-task errors."""


class PermanentTaskFailure(TaskError):
    """Raised by a task to fail for good: answered 200, never retried, recorded as failed."""


class SingularTaskFailure(TaskError):
    """Raised by a task to fail this once: answered 408 and retried, without a traceback."""


class InvalidTaskError(TaskError, ValueError):
    """``defer`` was given something the worker could not run (a lambda, a nested
    function, a function of ``__main__``, an unpicklable argument, a bad option)."""


class TaskAlreadyExistsError(TaskError):
    """A task of that name is queued, or finished within the name's tombstone period."""


class QueueUnavailableError(TaskError):
    """The queue's broker could not be reached in time; the task was not queued."""


class UnsupportedTaskOptionError(TaskError):
    """The queue backend cannot honour an option (``_transactional`` off App Engine)."""


class SessionError(GAEServicesError):
    """A session could not be loaded or saved (its cache or store failed); nothing
    was half-written."""


class SessionTooLargeError(SessionError, ValueError):
    """The session's data would exceed the middleware's ``max_size``; it was not changed."""


class MailError(GAEServicesError):
    """Base class of mail errors."""


class InvalidMessageError(MailError, ValueError):
    """A message cannot be sent as given: a header value holding CR or LF, a
    malformed address, an attachment the backend refuses. Raised before anything
    is queued or sent."""


class DeliveryError(MailError):
    """The mail server (or service) did not take the message for every recipient.

    ``code`` and ``response`` are the server's answer (``code`` is None when
    there was no answer: a refused connection, a timeout); ``accepted`` lists
    the recipients that did get the message, ``refused`` maps the others to
    the answer about them.
    """

    def __init__(
        self,
        message: str,
        *,
        code: int | None = None,
        response: str = "",
        accepted: tuple[str, ...] = (),
        refused: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.response = response
        self.accepted = tuple(accepted)
        self.refused = dict(refused or {})


class TemporaryDeliveryError(DeliveryError):
    """Worth trying again later: no connection, a timeout, a 4xx answer."""


class PermanentDeliveryError(DeliveryError):
    """The server refused for good (a 5xx answer): trying again cannot help."""
