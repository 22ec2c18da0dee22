"""What a download may be shown as: user content is data, never active content.

An uploaded file is served on the application's own origin, so a browser that
renders it as HTML, SVG or XML, or runs it as script, runs the uploader's code with
the site's cookies: stored XSS. Unless the application says a file is ``trusted``,
a download is shown inline only when its type is on a short list of types no
browser executes (:data:`INLINE_TYPES`: raster images, audio, video, PDF, plain
text and CSV). Everything else -- HTML, SVG, XML, JavaScript, CSS, Flash, and any
type not on the list, unknown ones included -- goes out as

- ``Content-Type: application/octet-stream`` (never the uploader's claimed type,
  which the uploader chose),
- ``Content-Disposition: attachment``, so the browser saves rather than shows it,
- ``Content-Security-Policy: sandbox``, so that even a client that ignores the
  disposition renders it in an opaque origin with scripts off,

beside the ``X-Content-Type-Options: nosniff`` every file response carries, which
stops the browser from second-guessing the type. Text types carry
``charset=utf-8`` (browsers otherwise guess windows-1252); a type's other
parameters are dropped, as the uploader wrote them.

The type considered is the one the application passes (``content_type=``, often
the uploader's claim) or else the one guessed from the file's name; both are
checked against the list, so neither a harmless name with a claim of
``text/html`` nor ``x.html`` claimed as ``text/plain`` is shown as a page.
"""

from __future__ import annotations

from collections.abc import Callable

from .disposition import content_disposition

__all__ = [
    "INLINE_TYPES",
    "DEFAULT_TYPE",
    "SANDBOX",
    "media_type",
    "with_charset",
    "served_type",
    "download_headers",
    "check_header_value",
]

DEFAULT_TYPE = "application/octet-stream"
SANDBOX = ("Content-Security-Policy", "sandbox")

#: Types shown inline from untrusted files: no browser runs script from them.
INLINE_TYPES = frozenset({
    "image/png", "image/jpeg", "image/gif", "image/webp", "image/avif", "image/bmp",
    "image/x-icon", "image/vnd.microsoft.icon",
    "audio/mpeg", "audio/mp4", "audio/ogg", "audio/wav", "audio/x-wav", "audio/webm", "audio/flac",
    "audio/aac",
    "video/mp4", "video/webm", "video/ogg", "video/quicktime",
    "application/pdf",
    "text/plain", "text/csv",
})


def media_type(value: str) -> str:
    """The ``type/subtype`` of a Content-Type value, lowercased, without parameters."""
    return value.partition(";")[0].strip(" \t").lower()


def with_charset(media: str) -> str:
    """``media`` as a Content-Type value: text types get ``; charset=utf-8``."""
    return media + "; charset=utf-8" if media[:5].lower() == "text/" else media


def served_type(given: str | None, guessed: str, *, trusted: bool) -> tuple[str, bool]:
    """The Content-Type to send and whether the file may be shown inline.

    ``given`` is the application's ``content_type=`` (None if it passed none),
    ``guessed`` the type from the file's name (already a header value). A trusted
    file keeps its type (text gets ``charset=utf-8`` when none is given); an
    untrusted one is checked as the module says.
    """
    if trusted:
        if given is None:
            return guessed, True
        check_header_value(given, "content_type")
        return (given if ";" in given else with_charset(given.strip())), True
    media = media_type(given) if given is not None else media_type(guessed)
    if media in INLINE_TYPES:
        return with_charset(media), True
    return DEFAULT_TYPE, False


def check_header_value(value: str, what: str) -> str:
    """``value`` if it may travel in a header (no control character); else ValueError."""
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise ValueError(f"{what}={value!r} holds a control character and cannot travel in a header")
    return value


Headers = list[tuple[str, str]]


def download_headers(
    given: str | None,
    guessed: str,
    own_name: Callable[[], str | None],
    *,
    save_as: bool | str,
    trusted: bool,
    cache_control: str | None,
) -> tuple[str, Headers]:
    """The Content-Type of a download and the headers that go with it.

    Content-Disposition (when ``save_as`` asks for it, or the type may not be
    shown inline), the sandbox policy (when it may not) and Cache-Control.
    ``own_name`` is called only when the file's own name is needed.
    """
    content_type, inline = served_type(given, guessed, trusted=trusted)
    extra: Headers = []
    if save_as or not inline:
        name = save_as if isinstance(save_as, str) else own_name()
        extra.append(("Content-Disposition", content_disposition(name)))
    if not inline:
        extra.append(SANDBOX)
    if cache_control is not None:
        extra.append(("Cache-Control", check_header_value(cache_control, "cache_control")))
    return content_type, extra
