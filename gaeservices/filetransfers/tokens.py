"""One-time upload tokens: a private upload's callback cannot be replayed.

``prepare_upload(private=True)`` issues a signed token: it names the success URL's
path, carries the time it was issued, and is signed with the Services' rotating
keys. The local backend puts it in the upload URL's query string, so it is checked
before a byte of the body is read; the Blobstore backend puts it in the form,
which App Engine passes on to the callback. Receiving the upload redeems it: the
signature, age and path must check out (:func:`verify`, which changes nothing),
and its nonce must never have been seen (:func:`use`) -- recorded with the store's
add-if-absent, which only the first caller wins, so a replayed (or resubmitted)
callback is rejected on every machine of the deployment.
"""

from __future__ import annotations

import os
import secrets
import time
from typing import Any

from ..exceptions import BackendUnavailableError, UploadRejectedError

__all__ = ["FIELD", "MAX_AGE", "issue", "verify", "use", "redeem", "from_query"]

FIELD = "gaeservices_upload_token"
MAX_AGE = 24 * 3600
_SALT = "gaeservices.filetransfers.upload"


def issue(services: Any, success_path: str) -> str:
    """A fresh token for an upload whose callback goes to ``success_path``."""
    payload = f"{secrets.token_urlsafe(18)}|{success_path}"
    return services.signer(_SALT, timestamped=True).sign(payload.encode()).decode("ascii")


def from_query(environ: dict[str, Any]) -> str | None:
    """The token in the request's query string, if any (without reading the body)."""
    query = environ.get("QUERY_STRING", "")
    if FIELD not in query:
        return None
    from urllib.parse import parse_qs

    values = parse_qs(query).get(FIELD)
    return values[-1] if values else None


def redeem(services: Any, token: str | None, request_path: str, *, max_age: int = MAX_AGE) -> float:
    """Check and use up ``token``; return when it was issued. UploadRejectedError if it fails."""
    nonce, issued = verify(services, token, request_path, max_age=max_age)
    use(services, nonce, max_age=max_age)
    return issued


def verify(services: Any, token: str | None, request_path: str, *, max_age: int = MAX_AGE) -> tuple[str, float]:
    """The nonce of a valid ``token`` and when it was issued; UploadRejectedError if it is not.

    Changes nothing: the token stays unused until :func:`use`.
    """
    import itsdangerous

    if not token:
        raise UploadRejectedError("this upload needs its one-time token and came without one")
    try:
        payload, issued = services.signer(_SALT, timestamped=True).unsign(
            token.encode("ascii", "replace"), max_age=max_age, return_timestamp=True
        )
    except itsdangerous.SignatureExpired:
        raise UploadRejectedError("the upload token has expired") from None
    except itsdangerous.BadData:
        raise UploadRejectedError("the upload token is not valid") from None
    nonce, _, path = payload.decode().partition("|")
    if path != request_path:
        raise UploadRejectedError("the upload token was issued for another URL")
    return nonce, issued.timestamp()


def use(services: Any, nonce: str, *, max_age: int = MAX_AGE) -> None:
    """Record ``nonce`` as used; UploadRejectedError if it already was (here or on another machine)."""
    if not _first_use(services, nonce, max_age):
        raise UploadRejectedError("the upload token was already used")


def _first_use(services: Any, nonce: str, max_age: int) -> bool:
    try:
        store = services.store
    except BackendUnavailableError:  # the store's driver is not installed
        store = None
    if store is not None:
        return bool(store.add(f"gaeservices:upload-token:{nonce}", b"1", timeout=max_age + 60))
    # Without a store (a bare install missing its SQL driver), a file created
    # exclusively under the data dir gives the same first-caller-wins answer on
    # this machine.
    directory = os.path.join(services.data_dir, "upload-tokens")
    os.makedirs(directory, exist_ok=True)
    _forget_old(directory, max_age)
    try:
        os.close(os.open(os.path.join(directory, nonce), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        return False
    return True


def _forget_old(directory: str, max_age: int) -> None:
    limit = time.time() - max_age - 60
    try:
        with os.scandir(directory) as entries:
            for entry in entries:
                if entry.stat().st_mtime < limit:
                    os.unlink(entry.path)
    except OSError:
        pass
