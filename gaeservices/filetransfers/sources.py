"""What a ``file`` argument means to the local backends (stream, xsendfile, xaccel).

- a ``str`` or path-like is a *name* under the files root: it is checked (no NUL,
  not absolute, no ``..``, no symlink out of the root) because it often comes,
  one way or another, from a request;
- an object with a ``path`` attribute (an :class:`~gaeservices.filetransfers.uploads.UploadedFile`,
  a Django ``FieldFile``) is trusted: its storage built that path;
- an open binary file (anything with ``read``) is trusted: the application opened it.
  Its ``name`` gives the type and the save-as name.
"""

from __future__ import annotations

import functools
import os
from typing import Any, BinaryIO

from .paths import UnsafePath, resolve
from .stream import FileInfo, file_info

__all__ = ["LocalFile", "local_file", "real_root", "UnsafePath"]


@functools.lru_cache(maxsize=64)
def real_root(root: str) -> str:
    """The canonical root directory; remembered, as realpath costs a syscall per component."""
    return os.path.realpath(root)


class LocalFile:
    """A resolved local file: where it is (or how to open it), its info and its name."""

    __slots__ = ("path", "opener", "info", "filename")

    def __init__(self, path: str | None, opener: Any, info: FileInfo, filename: str | None) -> None:
        self.path = path
        self.opener = opener
        self.info = info
        self.filename = filename

    def own_name(self) -> str | None:
        """The name to save the file under: its original name, or its path's last part."""
        if self.filename is None and self.path is not None:
            return os.path.basename(self.path)
        return self.filename


def local_file(file: Any, root: str) -> LocalFile:
    """Resolve ``file`` (see the module docs); UnsafePath or OSError if it cannot be served."""
    if type(file) is str or isinstance(file, (str, os.PathLike)):
        name = file if type(file) is str else os.fspath(file)
        if isinstance(name, bytes):
            name = os.fsdecode(name)
        resolved, found = resolve(real_root(root), name)
        return LocalFile(resolved, None, file_info(resolved, found), None)
    path = getattr(file, "path", None)
    if isinstance(path, str) and not hasattr(file, "read"):
        if "\x00" in path:
            raise UnsafePath("NUL byte in path")
        path = os.path.realpath(path)
        st = os.stat(path)
        if not _regular(st):
            raise FileNotFoundError(path)
        filename = getattr(file, "filename", None) or os.path.basename(path)
        return LocalFile(path, None, file_info(path, st), filename)
    if hasattr(file, "read"):
        return _open_file(file)
    inner = getattr(file, "file", None)  # storage wrappers (Django's File) hold the file here
    if inner is not None and hasattr(inner, "read"):
        return _open_file(inner, getattr(file, "name", None))
    raise TypeError(f"cannot serve {type(file).__name__!r}: give a name, a path or an open file")


def _regular(st: os.stat_result) -> bool:
    import stat

    return stat.S_ISREG(st.st_mode)


def _open_file(file: BinaryIO, name: Any = None) -> LocalFile:
    name = name if isinstance(name, str) else getattr(file, "name", None)
    name = name if isinstance(name, str) else None
    try:
        st: os.stat_result | None = os.fstat(file.fileno())
    except (AttributeError, OSError, ValueError):
        st = None
    if st is not None and _regular(st):
        size = st.st_size
    else:
        st = None
        position = file.seek(0, 2)
        size = position
    path = os.path.realpath(name) if name and os.path.isabs(name) else None
    info = FileInfo(st, size, name)
    return LocalFile(path, lambda: file, info, os.path.basename(name) if name else None)
