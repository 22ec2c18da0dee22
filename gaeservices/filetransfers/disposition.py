"""Content-Disposition per RFC 6266, with an RFC 5987 ``filename*`` for non-ASCII names.

Browsers that understand ``filename*`` (all current ones) use the exact UTF-8 name;
older clients fall back to the quoted ASCII ``filename``. Whatever the name holds,
no CR, LF, control character, quote or backslash ever reaches the header, and any
directory part is dropped so a client is never told to save to a path.
"""

from __future__ import annotations

import re
import unicodedata
from urllib.parse import quote

__all__ = ["content_disposition", "disposition_headers", "safe_filename"]

# RFC 5987 attr-char: what may appear unescaped in filename*.
_ATTR_CHARS = "!#$&+-.^_`|~"
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_FALLBACK_UNSAFE = re.compile(r'[^\x20-\x7e]|["\\%]')


def safe_filename(name: str) -> str:
    """``name`` without directories, control characters or surrounding blanks."""
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    name = _CONTROL.sub("", name).strip().strip(".")
    return name


def _ascii_fallback(name: str) -> str:
    decomposed = unicodedata.normalize("NFKD", name)
    ascii_only = "".join(c for c in decomposed if not unicodedata.combining(c))
    return _FALLBACK_UNSAFE.sub("_", ascii_only)


def content_disposition(filename: str | None, *, attachment: bool = True) -> str:
    """The Content-Disposition value telling a browser to save (or show) ``filename``.

    ``attachment=False`` gives ``inline`` (display in the browser, with the name
    used if the user saves it). A name that is empty once cleaned gives no
    filename parameter at all.
    """
    kind = "attachment" if attachment else "inline"
    name = safe_filename(filename or "")
    if not name:
        return kind
    fallback = _ascii_fallback(name)
    if fallback == name:
        return f'{kind}; filename="{name}"'
    encoded = quote(name, safe=_ATTR_CHARS, encoding="utf-8")
    return f"{kind}; filename=\"{fallback or 'download'}\"; filename*=UTF-8''{encoded}"


def disposition_headers(save_as: bool | str | None, own_name: str | None) -> list[tuple[str, str]]:
    """The Content-Disposition header (as a list) for ``serve_file``'s ``save_as``.

    True saves under the file's own name, a string under that name, False (or
    None) sends no Content-Disposition so the browser shows the file inline.
    """
    if not save_as:
        return []
    name = save_as if isinstance(save_as, str) else own_name
    return [("Content-Disposition", content_disposition(name))]
