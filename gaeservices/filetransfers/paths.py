"""Turning a file name into a path inside an allowed root, or refusing to.

A name is refused (the caller answers 404 and the refusal is logged) when it holds
a NUL byte, is absolute, has a ``..`` component, or resolves -- through symlinks
-- to somewhere outside its root. Resolving symlinks costs a ``realpath`` (about
12 µs), so resolutions are remembered and revalidated with one ``stat``: a
remembered answer is reused only while the name still leads to the same inode,
so swapping a symlink to point elsewhere forces a fresh check. When the name
went through a symlink, the remembered canonical path (what is opened) is
stat'ed too: it must still hold that inode, or a symlink put in its place could
lead out of the root while the name itself still looks unchanged.
"""

from __future__ import annotations

import logging
import os
import stat as stat_module
from collections.abc import Iterable

__all__ = ["UnsafePath", "resolve", "within", "check_name", "refuse"]

logger = logging.getLogger("gaeservices.filetransfers")

_MAX_REMEMBERED = 4096
_resolved: dict[tuple[str, str], tuple[str, str, int, int]] = {}


class UnsafePath(Exception):
    """The name may not be served; ``str()`` says why (for the log, not the client)."""


def within(path: str, roots: Iterable[str]) -> str | None:
    """The root (canonical) that the canonical ``path`` lies inside, or None."""
    for root in roots:
        if path == root or path.startswith(root if root.endswith(os.sep) else root + os.sep):
            return root
    return None


def check_name(name: str) -> list[str]:
    """The components of a relative name; UnsafePath if it could escape its root."""
    if "\x00" in name:
        raise UnsafePath("NUL byte in name")
    if os.sep != "/":
        name = name.replace(os.sep, "/")
    if name.startswith("/") or os.path.isabs(name) or (len(name) > 1 and name[1] == ":"):
        raise UnsafePath("absolute path")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise UnsafePath("'..' in name")
    if not parts:
        raise UnsafePath("empty name")
    return parts


def resolve(root: str, name: str) -> tuple[str, os.stat_result]:
    """The canonical path of ``name`` under ``root`` (canonical) and its stat.

    Raises UnsafePath for a name that is refused, FileNotFoundError for one that
    is not a regular file.
    """
    key = (root, name)
    remembered = _resolved.get(key)
    if remembered is not None:
        joined, path, ino, dev = remembered
        st = os.stat(joined)
        if st.st_ino == ino and st.st_dev == dev and (path == joined or _holds(path, ino, dev)):
            return path, st
        _resolved.pop(key, None)
    parts = check_name(name)
    joined = os.path.join(root, *parts)
    path = os.path.realpath(joined)
    if within(path, (root,)) is None:
        raise UnsafePath("resolves outside its root")
    st = os.stat(path)
    if not stat_module.S_ISREG(st.st_mode):
        raise FileNotFoundError(path)
    if len(_resolved) >= _MAX_REMEMBERED:
        _resolved.pop(next(iter(_resolved)), None)
    _resolved[key] = (joined, path, st.st_ino, st.st_dev)
    return path, st


def _holds(path: str, ino: int, dev: int) -> bool:
    try:
        st = os.stat(path)
    except OSError:
        return False
    return st.st_ino == ino and st.st_dev == dev


def refuse(name: object, reason: object) -> None:
    """Log a refused name: a probe for traversal is worth an operator's attention."""
    logger.warning("refused to serve %r: %s", name, reason)
