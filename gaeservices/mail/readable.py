"""A message as a person reads it: decoded headers, the text part, what is attached.

Used by ``console://`` and ``gaeservices smtpd``. Headers are decoded (RFC 2047
words become the text they encode), the text/plain part is shown whole, an
HTML part by its size, and each attachment by file name, type and size.
"""

from __future__ import annotations

import email
from email import policy
from email.message import EmailMessage

from .message import Envelope

__all__ = ["readable"]

RULE = "-" * 72


def _size(n: int) -> str:
    return f"{n:,} byte{'s' if n != 1 else ''}"


def readable(raw: bytes, envelope: Envelope | None = None, *, title: str = "message") -> str:
    """``raw`` (a message as sent) as readable text, ending with a rule line."""
    lines = [f"-- {title} " + "-" * max(3, len(RULE) - len(title) - 4)]
    if envelope is not None:
        lines.append(f"envelope: from <{envelope.sender}> to " + ", ".join(f"<{r}>" for r in envelope.recipients))
    try:
        msg: EmailMessage = email.message_from_bytes(raw, policy=policy.default)
        for name, value in msg.items():
            lines.append(f"{name}: {value}")
        lines.append("")
        text = msg.get_body(preferencelist=("plain",))
        if text is not None:
            lines.append(text.get_content().replace("\r\n", "\n").rstrip("\n"))
        else:
            lines.append("(no text part)")
        html = msg.get_body(preferencelist=("html",))
        if html is not None:
            lines.append("")
            html_text = html.get_content().replace("\r\n", "\n")
            lines.append(f"[text/html part: {_size(len(html_text.encode()))}]")
        attachments = list(msg.iter_attachments())
        if attachments:
            lines.append("")
            lines.append(f"attachments ({len(attachments)}):")
            for part in attachments:
                payload = part.get_payload(decode=True) or b""
                lines.append(f"  {part.get_filename() or '(no name)'}  {part.get_content_type()}  {_size(len(payload))}")
    except Exception as exc:  # a client sent something we cannot parse: show it as it came
        lines.append(f"(not parsed: {exc!r})")
        lines.append(raw.decode("utf-8", "replace"))
    lines.append(RULE)
    return "\n".join(lines) + "\n"
