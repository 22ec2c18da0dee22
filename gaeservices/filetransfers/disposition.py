"""Content-Disposition per RFC 6266, with an RFC 5987 ``filename*`` for non-ASCII names.

Browsers that understand ``filename*`` (all current ones) use the exact UTF-8 name;
older clients fall back to the quoted ASCII ``filename``. Whatever the name holds,
no CR, LF, control character, quote or backslash ever reaches the header, and any
directory part is dropped so a client is never told to save to a path.

Invisible characters are dropped from names too: format characters (Unicode
category Cf: the bidirectional overrides and isolates U+202A-U+202E and
U+2066-U+2069 that make ``invoice\u202efdp.exe`` display as ``invoiceexe.pdf``,
zero-width spaces and joiners, the byte-order mark, soft hyphens), line and
paragraph separators, and lone surrogates (undecodable bytes of a name read from
disk, which no header can carry).
"""

from __future__ import annotations

import re
import unicodedata
from urllib.parse import quote

__all__ = ["content_disposition", "safe_filename"]

# RFC 5987 attr-char: what may appear unescaped in filename*.
_ATTR_CHARS = "!#$&+-.^_`|~"
# Cc control, Cf format, Cs surrogate, Zl line and Zp paragraph separators.
_INVISIBLE = frozenset(("Cc", "Cf", "Cs", "Zl", "Zp"))
_FALLBACK_UNSAFE = re.compile(r'[^\x20-\x7e]|["\\%]')


def safe_filename(name: str) -> str:
    """``name`` without directories, control or format characters, or surrounding blanks and dots."""
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    if not name.isprintable():  # every character _INVISIBLE names is non-printable
        category = unicodedata.category
        name = "".join(c for c in name if category(c) not in _INVISIBLE)
    return name.strip().strip(".")


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
