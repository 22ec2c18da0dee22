"""Race-free claims on unique values: usernames, e-mail addresses, slugs.

Datastore has no uniqueness constraints, and "check, then insert" races: two
registrations of the same username both see it free. A claim is one atomic
insert-if-absent in the durable store (:meth:`Store.add`), so of any number of
concurrent claims on a value exactly one wins, on every backend::

    from gaeservices import claim, release

    if not claim("username", form["username"], owner=user_id):
        return "that name is taken"
    ...
    release("username", old_name, owner=user_id)   # on rename or account deletion

Values are compared exactly; normalise them first (``casefold()``, strip) if
``Alice`` and ``alice`` should be the same name.
"""

from __future__ import annotations

from typing import Any

from .config import Services, get_services

__all__ = ["claim", "release", "owner_of"]

_PREFIX = "gaeunique:"


def _key(namespace: str, value: str) -> str:
    if not isinstance(namespace, str) or not namespace or ":" in namespace:
        raise ValueError(f"namespace must be a non-empty str without ':', not {namespace!r}")
    if not isinstance(value, str):
        raise TypeError(f"claimed values are str, not {type(value).__name__}")
    return f"{_PREFIX}{namespace}:{value}"


def _owner(owner: Any) -> bytes:
    if isinstance(owner, bytes):
        return owner
    if isinstance(owner, (str, int)) and not isinstance(owner, bool):
        return str(owner).encode()
    raise TypeError(f"owner must be str, int or bytes, not {type(owner).__name__}")


def claim(
    namespace: str,
    value: str,
    owner: str | int | bytes,
    *,
    timeout: float | None = None,
    services: Services | None = None,
) -> bool:
    """Make ``owner`` the holder of ``value`` in ``namespace``.

    True when ``owner`` now holds it (or already did), False when someone else
    does. ``timeout`` (seconds) makes a claim lapse unless claimed again, which
    suits reservations that a form submission may never complete.
    """
    store = (services or get_services()).store
    key, holder = _key(namespace, value), _owner(owner)
    if store.add(key, holder, timeout=timeout):
        return True
    if timeout is None:
        current = store.get(key)
        if current == holder:
            return True
        if current is not None:
            return False
    # Released or lapsed since our add, or our lease to renew: decide in one
    # transaction, so a concurrent claim cannot slip in between.

    def take(current: bytes | None) -> bytes:
        if current is None or current == holder:
            return holder
        raise _Taken

    try:
        store.update(key, take, timeout=timeout)
    except _Taken:
        return False
    return True


class _Taken(Exception):
    """Someone else holds the value: leaves ``update`` without writing."""


def release(
    namespace: str, value: str, owner: str | int | bytes, *, services: Services | None = None
) -> bool:
    """Give ``value`` up, if ``owner`` holds it; True when released.

    Releasing what someone else holds does nothing, atomically: a stale
    release cannot free a value another owner has claimed since.
    """
    store = (services or get_services()).store
    return store.delete(_key(namespace, value), expected=_owner(owner))


def owner_of(namespace: str, value: str, *, services: Services | None = None) -> bytes | None:
    """Who holds ``value`` (the owner as bytes), or None."""
    return (services or get_services()).store.get(_key(namespace, value))
