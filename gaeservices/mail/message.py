"""Building and checking messages: the standard library's modern email API, made strict.

Messages are :class:`email.message.EmailMessage` objects on a policy derived
from :data:`email.policy.SMTP` (CRLF line ends, RFC 2047/2231 encoding of
non-ASCII text, 7-bit transfer encodings chosen for bodies). On top of what
the standard library checks, this module refuses:

- any control character in a header value, a display name or a file name.
  The standard library refuses a CR or LF *inside* a value, but accepts one at
  its end (``"Hi\\r\\n"``) and writes it out, ending the header block early;
  it also writes NUL. Here both are an :class:`InvalidMessageError`;
- an address that does not parse as exactly one ``local@domain`` without
  defects, a local part that is not ASCII (that would need SMTPUTF8), or a
  domain that is neither a host name nor an address literal. Internationalised
  domain names are converted to their ASCII (IDNA) form, in the headers and in
  the envelope alike.

The :class:`Envelope` is what the SMTP server is told: the sender and every
recipient (Bcc included), separately from the headers, which never carry Bcc.
"""

from __future__ import annotations

import mimetypes
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from email import policy as _policies
from email.headerregistry import Address, HeaderRegistry
from email.message import EmailMessage, Message
from email.utils import formatdate, make_msgid
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Union

from ..exceptions import InvalidMessageError

__all__ = [
    "POLICY",
    "Envelope",
    "AddressLike",
    "AttachmentLike",
    "build_message",
    "prepare_message",
    "parse_address",
    "check_header_value",
]

#: An address as the API takes it: ``"Ada <ada@example.com>"``, ``("Ada", "ada@example.com")``
#: or an :class:`email.headerregistry.Address`.
AddressLike = Union[str, Address, "tuple[str, str]"]

#: An attachment: ``(filename, content)``, ``(filename, content, mimetype)``, a path,
#: or a ready MIME part (:class:`email.message.Message`).
AttachmentLike = Union["tuple[str, bytes | str]", "tuple[str, bytes | str, str]", "os.PathLike[str]", Message]


class _Registry(HeaderRegistry):
    """The standard header registry, remembering the class it makes for each name.

    ``HeaderRegistry.__getitem__`` builds a new class with ``type()`` on every
    call -- about a fifth of the cost of setting a header. The classes are
    stateless, so one per header name serves every message.
    """

    def __init__(self) -> None:
        super().__init__()
        self._classes: dict[str, Any] = {}

    def __getitem__(self, name: str) -> Any:
        key = name.lower()
        cls = self._classes.get(key)
        if cls is None:
            cls = self._classes[key] = super().__getitem__(name)
        return cls


_ONE_LINE = re.compile(r"[\t -~]*\Z")


if TYPE_CHECKING:
    _EmailPolicy = _policies.EmailPolicy[EmailMessage]
else:
    _EmailPolicy = _policies.EmailPolicy


class _Policy(_EmailPolicy):
    """``email.policy.SMTP``, writing the headers that need no folding directly.

    The standard ``fold_binary`` writes a short printable ASCII value as
    ``name: value`` and a line end, after checking it for surrogates and line
    breaks and splitting it into lines; this writes the same bytes at once. A
    shared header object (the text/plain Content-Type) is written from the
    bytes folded for it once. Everything else goes to the standard folding.
    """

    def fold_binary(self, name: str, value: Any) -> bytes:
        if type(value) is str and len(name) + 2 + len(value) <= _MAX_LINE and _ONE_LINE.match(value):
            return f"{name}: {value}{self.linesep}".encode("ascii")
        if value is _TEXT_PLAIN and name == "Content-Type":
            return _TEXT_PLAIN_LINE
        return super().fold_binary(name, value)


_MAX_LINE = 78

#: The policy messages are built with: SMTP's (CRLF), bodies in 7-bit encodings
#: (quoted-printable or base64 for non-ASCII text), so any server takes them.
POLICY = _Policy(
    linesep="\r\n", cte_type="7bit", header_factory=_Registry(), max_line_length=_MAX_LINE
)

# Characters no header value may hold: C0 controls but tab, DEL, and the
# separators str.splitlines() treats as line ends.
_FORBIDDEN = re.compile("[\x00-\x08\x0a-\x1f\x7f\x85\u2028\u2029]")
_FIELD_NAME = re.compile(r"[!-9;-~]+\Z")
_MESSAGE_ID = re.compile(r"<[!-;=?-~]+@[!-;=?-Z^-~]+>\Z|<[!-;=?-~]+@\[[!-Z^-~]*\]>\Z")
_DOMAIN_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)\Z")
_ADDRESS_HEADERS = frozenset(
    ("from", "sender", "to", "cc", "bcc", "reply-to", "resent-from", "resent-sender",
     "resent-to", "resent-cc", "resent-bcc")
)
# Headers ``send_mail(headers=...)`` may not set: they describe the structure
# this module builds, or (Bcc) would show hidden recipients to everyone.
_RESERVED = {
    "bcc": "pass hidden recipients as bcc=, which never appear in the headers",
    "content-type": "the message's structure is built from body, html and attachments",
    "content-transfer-encoding": "transfer encodings are chosen per part",
    "mime-version": "it is always 1.0",
}


class Envelope:
    """The SMTP envelope: ``sender`` and ``recipients`` (addr-specs, Bcc included)."""

    __slots__ = ("sender", "recipients")

    def __init__(self, sender: str, recipients: Sequence[str]) -> None:
        self.sender = sender
        self.recipients = tuple(recipients)

    def __repr__(self) -> str:
        return f"Envelope({self.sender!r}, {list(self.recipients)!r})"

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Envelope)
            and (self.sender, self.recipients) == (other.sender, other.recipients)
        )

    def __hash__(self) -> int:
        return hash((self.sender, self.recipients))


# --- checks ------------------------------------------------------------------


def check_header_value(name: str, value: str) -> str:
    """``value`` if it may go in header ``name``; InvalidMessageError otherwise."""
    if not isinstance(value, str):
        raise InvalidMessageError(f"header {name!r}: the value must be a str, not {type(value).__name__}")
    bad = _FORBIDDEN.search(value)
    if bad:
        what = "CR or LF" if bad.group() in "\r\n" else f"the control character {bad.group()!r}"
        raise InvalidMessageError(
            f"header {name!r} holds {what}: refused, as it could end the header and start another "
            f"(value {value[:80]!r})"
        )
    return value


def _check_field_name(name: Any) -> str:
    if not isinstance(name, str) or not _FIELD_NAME.match(name):
        raise InvalidMessageError(
            f"{name!r} is not a header name: printable ASCII without spaces or colons"
        )
    return name


def _ascii_domain(domain: str, text: str) -> str:
    if domain.startswith("[") and domain.endswith("]"):
        if _FORBIDDEN.search(domain) or not domain[1:-1].isascii() or " " in domain:
            raise InvalidMessageError(f"{text!r} has a malformed address literal")
        return domain
    try:
        ascii_domain = domain.encode("idna").decode("ascii") if not domain.isascii() else domain
    except UnicodeError as exc:
        raise InvalidMessageError(f"{text!r}: the domain {domain!r} is not a valid host name ({exc})") from None
    labels = ascii_domain.rstrip(".").split(".")
    if not all(_DOMAIN_LABEL.match(label) for label in labels) or len(ascii_domain) > 253:
        raise InvalidMessageError(f"{text!r}: the domain {domain!r} is not a valid host name")
    return ascii_domain


def _checked(address: Address, text: str) -> Address:
    username, domain = address.username, address.domain
    if not username or not domain:
        raise InvalidMessageError(f"{text!r} is not an address of the form local-part@domain")
    if not username.isascii():
        raise InvalidMessageError(
            f"{text!r}: a local part that is not ASCII needs SMTPUTF8, which is not supported; "
            "non-ASCII domains and display names are"
        )
    if _FORBIDDEN.search(username) or _FORBIDDEN.search(address.display_name or ""):
        raise InvalidMessageError(f"{text!r} holds a control character")
    ascii_domain = _ascii_domain(domain, text)
    if ascii_domain is domain:
        return address
    return Address(address.display_name, username, ascii_domain)


_LOCAL = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
_DOMAIN = r"[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*"
# "local@domain" and "Some Name <local@domain>" with plain atoms: the standard
# parser finds exactly these three parts in them (a test compares the two over
# generated addresses), so they are taken apart without it.
_SIMPLE_ADDRESS = re.compile(
    rf"(?:(?P<name>[A-Za-z0-9]+(?: [A-Za-z0-9]+)*) <(?P<local>{_LOCAL})@(?P<domain>{_DOMAIN})>"
    rf"|(?P<bare_local>{_LOCAL})@(?P<bare_domain>{_DOMAIN}))\Z"
)


@lru_cache(maxsize=1024)
def _parse_address_text(text: str) -> Address:
    simple = _SIMPLE_ADDRESS.match(text)
    if simple is not None:
        if simple["name"] is not None:
            return _checked(Address(simple["name"], simple["local"], simple["domain"]), text)
        return _checked(Address("", simple["bare_local"], simple["bare_domain"]), text)
    return _parse_with_the_standard_parser(text)


def _parse_with_the_standard_parser(text: str) -> Address:
    check_header_value("address", text)
    try:
        header = POLICY.header_factory("To", text)
    except Exception as exc:  # the parser raises IndexError on some inputs ("a@")
        raise InvalidMessageError(f"{text!r} is not a valid address ({exc!r})") from None
    if header.defects:
        raise InvalidMessageError(f"{text!r} is not a valid address ({header.defects[0]})")
    if header.groups and any(group.display_name is not None for group in header.groups):
        raise InvalidMessageError(f"{text!r}: address groups are not accepted here")
    addresses = header.addresses
    if len(addresses) != 1:
        raise InvalidMessageError(
            f"{text!r} holds {len(addresses)} addresses; give one address per item of the list"
        )
    return _checked(addresses[0], text)


def parse_address(value: AddressLike) -> Address:
    """One address from a string, a ``(name, addr)`` pair or an Address; InvalidMessageError if malformed."""
    if isinstance(value, str):
        return _parse_address_text(value)
    if isinstance(value, Address):
        return _checked(value, str(value))
    if isinstance(value, tuple) and len(value) == 2 and all(isinstance(v, str) for v in value):
        name, addr_spec = value
        check_header_value("display name", name)
        parsed = _parse_address_text(addr_spec)
        if parsed.display_name:
            raise InvalidMessageError(f"{addr_spec!r}: give a bare address beside the name {name!r}")
        try:
            return Address(name, parsed.username, parsed.domain)
        except ValueError as exc:
            raise InvalidMessageError(f"{value!r}: {exc}") from None
    raise InvalidMessageError(
        f"{value!r} is not an address: give 'name@example.com', 'Name <name@example.com>', "
        "('Name', 'name@example.com') or an email.headerregistry.Address"
    )


def _addresses(values: AddressLike | Iterable[AddressLike] | None, field: str) -> list[Address]:
    if values is None:
        return []
    if isinstance(values, (str, Address)):  # one address; (name, addr) pairs go in a list
        values = [values]
    try:
        items = list(values)
    except TypeError:
        raise InvalidMessageError(f"{field}: {values!r} is not an address or a list of them") from None
    parsed = []
    for value in items:
        try:
            parsed.append(parse_address(value))
        except InvalidMessageError as exc:
            raise InvalidMessageError(f"{field}: {exc}") from None
    return parsed


# --- building ----------------------------------------------------------------


def _new_message_id(domain: str) -> str:
    return make_msgid(domain=domain)


def _attachment_part(item: Any) -> tuple[Any, dict[str, Any]]:
    """(content, keyword arguments of add_attachment) for one attachment item."""
    if isinstance(item, Message):
        check_message_headers(item)
        return item, {}
    if isinstance(item, (str, os.PathLike)) and not isinstance(item, tuple):
        path = os.fspath(item)
        with open(path, "rb") as f:
            content: Any = f.read()
        filename, mimetype = os.path.basename(path), None
    elif isinstance(item, tuple) and len(item) in (2, 3):
        filename, content = item[0], item[1]
        mimetype = item[2] if len(item) == 3 else None
    else:
        raise InvalidMessageError(
            f"attachment {item!r}: give (filename, content), (filename, content, mimetype), "
            "a path, or an email.message.Message"
        )
    if not isinstance(filename, str) or not filename:
        raise InvalidMessageError(f"attachment file name {filename!r} must be a non-empty str")
    check_header_value("attachment file name", filename)
    if mimetype is None:
        mimetype = mimetypes.guess_type(filename)[0] or (
            "text/plain" if isinstance(content, str) else "application/octet-stream"
        )
    if not isinstance(mimetype, str) or not re.fullmatch(r"[\w!#$&^.+-]+/[\w!#$&^.+-]+", mimetype):
        raise InvalidMessageError(f"attachment {filename!r}: {mimetype!r} is not a MIME type")
    maintype, subtype = mimetype.lower().split("/")
    if maintype == "message" or maintype == "multipart":
        raise InvalidMessageError(
            f"attachment {filename!r}: attach a {mimetype} as an email.message.Message, not as content"
        )
    options: dict[str, Any] = {"maintype": maintype, "subtype": subtype, "filename": filename}
    if isinstance(content, str):
        # As UTF-8 bytes in base64: a text part's line ends would become CRLF on
        # the wire, and the file must arrive as it was given.
        content = content.encode("utf-8")
        if maintype == "text":
            options["params"] = {"charset": "utf-8"}
    if not isinstance(content, (bytes, bytearray, memoryview)):
        raise InvalidMessageError(f"attachment {filename!r}: content must be bytes or str")
    return bytes(content), options


def build_message(
    sender: AddressLike,
    to: AddressLike | Iterable[AddressLike],
    subject: str,
    body: str,
    *,
    html: str | None = None,
    cc: AddressLike | Iterable[AddressLike] = (),
    bcc: AddressLike | Iterable[AddressLike] = (),
    reply_to: AddressLike | Iterable[AddressLike] = (),
    headers: Mapping[str, str] | None = None,
    attachments: Iterable[AttachmentLike] = (),
) -> tuple[EmailMessage, Envelope]:
    """The message and its envelope; InvalidMessageError for anything malformed.

    The message carries From, To, Cc, Reply-To, Subject, Date and Message-ID
    (``headers`` may replace all but the structural ones); Bcc recipients are
    only in the envelope. ``html`` makes the body multipart/alternative;
    attachments make it multipart/mixed, keeping each one's file name and type.
    """
    msg, envelope, _ = _build(
        sender, to, subject, body, html=html, cc=cc, bcc=bcc, reply_to=reply_to,
        headers=headers, attachments=attachments, direct=True,
    )
    return msg, envelope


# What the standard library would write unchanged, on one line: for these values
# the message gets the line it would have written (``set_raw``) without building
# and folding a header object, which is most of the cost of a message. A test
# compares both ways, byte for byte, over generated values.
_ATOMS = re.compile(r"[A-Za-z0-9]+(?: [A-Za-z0-9]+)*\Z")
_DOT_ATOM = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*\Z")
_HOST = re.compile(r"[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\Z")
_PLAIN = re.compile(r"[!-~]+(?: [!-~]+)*\Z")
# One Content-Type header object for every plain text message: header objects
# do not change, and the generator reads this one several times per message
# (a raw value would be parsed again at each read).
_TEXT_PLAIN = POLICY.header_factory("Content-Type", 'text/plain; charset="utf-8"')
_TEXT_PLAIN_LINE = _policies.EmailPolicy.fold_binary(POLICY, "Content-Type", _TEXT_PLAIN)


def _written_as_is(name: str, text: str | None) -> bool:
    return text is not None and len(name) + 2 + len(text) <= _MAX_LINE


def _plain_addresses(addresses: Sequence[Address]) -> str | None:
    parts = []
    for address in addresses:
        if not (_DOT_ATOM.match(address.username) and _HOST.match(address.domain)):
            return None
        name = address.display_name
        if name and not _ATOMS.match(name):
            return None
        spec = f"{address.username}@{address.domain}"
        parts.append(f"{name} <{spec}>" if name else spec)
    return ", ".join(parts)


def _set_header(msg: EmailMessage, name: str, value: Any, plain: str | None, direct: bool) -> None:
    if direct and _written_as_is(name, plain):
        msg.set_raw(name, plain)
    else:
        msg[name] = value


def _set_plain_body(msg: EmailMessage, body: str) -> bool:
    """Set a text/plain body as ``set_content`` would when it is 7-bit; False if it is not."""
    if not body.isascii():
        return False
    lines = body.encode("ascii").splitlines()
    if max((len(line) for line in lines), default=0) > _MAX_LINE:
        return False
    msg["Content-Type"] = _TEXT_PLAIN
    msg.set_raw("Content-Transfer-Encoding", "7bit")
    msg.set_payload((b"\n".join(lines) + b"\n").decode("ascii"))
    msg.set_raw("MIME-Version", "1.0")
    return True


def _build(
    sender: AddressLike,
    to: AddressLike | Iterable[AddressLike],
    subject: str,
    body: str,
    *,
    html: str | None = None,
    cc: AddressLike | Iterable[AddressLike] = (),
    bcc: AddressLike | Iterable[AddressLike] = (),
    reply_to: AddressLike | Iterable[AddressLike] = (),
    headers: Mapping[str, str] | None = None,
    attachments: Iterable[AttachmentLike] = (),
    direct: bool,
) -> tuple[EmailMessage, Envelope, str]:
    """:func:`build_message` and the Message-ID; ``direct=False`` sets every header through the policy."""
    from_ = parse_address(sender)
    to_list = _addresses(to, "to")
    cc_list = _addresses(cc, "cc")
    bcc_list = _addresses(bcc, "bcc")
    reply_list = _addresses(reply_to, "reply_to")
    if not (to_list or cc_list or bcc_list):
        raise InvalidMessageError("no recipients: give at least one address in to, cc or bcc")
    check_header_value("Subject", subject)
    if not isinstance(body, str):
        raise InvalidMessageError(f"body must be a str, not {type(body).__name__}")
    if html is not None and not isinstance(html, str):
        raise InvalidMessageError(f"html must be a str, not {type(html).__name__}")

    extra: list[tuple[str, str]] = []
    for name, value in (headers or {}).items():
        _check_field_name(name)
        reason = _RESERVED.get(name.lower())
        if reason:
            raise InvalidMessageError(f"header {name!r} cannot be set through headers: {reason}")
        if not isinstance(value, str):
            value = str(value)
        extra.append((name, check_header_value(name, value)))
    overridden = {name.lower() for name, _ in extra}

    msg = EmailMessage(policy=POLICY)
    try:
        if "from" not in overridden:
            _set_header(msg, "From", from_, _plain_addresses([from_]), direct)
        if to_list and "to" not in overridden:
            _set_header(msg, "To", to_list, _plain_addresses(to_list), direct)
        if cc_list and "cc" not in overridden:
            _set_header(msg, "Cc", cc_list, _plain_addresses(cc_list), direct)
        if reply_list and "reply-to" not in overridden:
            _set_header(msg, "Reply-To", reply_list, _plain_addresses(reply_list), direct)
        if "subject" not in overridden:
            plain = subject if _PLAIN.match(subject) and "=?" not in subject else None
            _set_header(msg, "Subject", subject, plain, direct)
        if "date" not in overridden:
            msg.set_raw("Date", formatdate(localtime=True))
        message_id = dict((n.lower(), v) for n, v in extra).get("message-id", "").strip()
        if not message_id:
            message_id = _new_message_id(from_.domain)
            msg.set_raw("Message-ID", message_id)
        for name, value in extra:
            msg[name] = value
            _check_parsed_header(name, msg[name])
        attachments = list(attachments)
        if not (direct and html is None and not attachments and _set_plain_body(msg, body)):
            msg.set_content(body)
        if html is not None:
            msg.add_alternative(html, subtype="html")
        for item in attachments:
            content, options = _attachment_part(item)
            if options:
                msg.add_attachment(content, **options)
            else:  # a ready MIME part goes in as it is
                if msg.get_content_type() != "multipart/mixed":
                    msg.make_mixed()
                msg.attach(content)
    except InvalidMessageError:
        raise
    except OSError:
        raise
    except Exception as exc:  # what the standard library refuses, or its parser trips on
        raise InvalidMessageError(f"{type(exc).__name__}: {exc}") from None
    recipients = _unique(a.addr_spec for a in (*to_list, *cc_list, *bcc_list))
    return msg, Envelope(from_.addr_spec, recipients), message_id


def _unique(addresses: Iterable[str]) -> list[str]:
    seen: dict[str, None] = {}
    for address in addresses:
        seen.setdefault(address, None)
    return list(seen)


def _check_parsed_header(name: str, header: Any) -> None:
    lowered = name.lower()
    if lowered in _ADDRESS_HEADERS:
        if getattr(header, "defects", None):
            raise InvalidMessageError(f"header {name}: {str(header)!r} is not a valid address list ({header.defects[0]})")
        for address in getattr(header, "addresses", ()):
            _checked(address, str(header))
    elif lowered == "message-id" and not _MESSAGE_ID.match(str(header).strip()):
        raise InvalidMessageError(f"Message-ID {str(header)!r} is not of the form <unique@domain>")


# --- messages built elsewhere --------------------------------------------------


_FOLD = re.compile(r"(?:\r\n|\r|\n)(?=[ \t])")


def check_message_headers(msg: Message) -> None:
    """InvalidMessageError if any header of any part of ``msg`` is unsafe or malformed.

    Headers are checked as they will be written (``raw_items``): a value set
    with ``set_raw`` or parsed from a source keeps its line breaks there, and
    only a break followed by a space or tab (folding) may stay.
    """
    for part in msg.walk():
        for name, value in part.raw_items():
            _check_field_name(name)
            text = value if isinstance(value, str) else str(value)
            check_header_value(name, _FOLD.sub("", text) if isinstance(value, str) else text)
    for name in (*_ADDRESS_HEADERS, "message-id"):
        for header in msg.get_all(name) or ():
            _check_parsed_header(name, header)


def _modern(msg: Message) -> EmailMessage:
    """``msg`` on a modern policy: itself, or (a legacy Message) re-parsed from its bytes."""
    if isinstance(msg, EmailMessage) and isinstance(msg.policy, _policies.EmailPolicy):
        return msg
    if not isinstance(msg, Message):
        raise InvalidMessageError(f"send_message takes an email.message.Message, not {type(msg).__name__}")
    import email

    try:
        raw = msg.as_bytes()
    except Exception as exc:  # compat32 refuses some injected headers while writing
        raise InvalidMessageError(f"the message cannot be written out: {exc}") from None
    return email.message_from_bytes(raw, _class=EmailMessage, policy=POLICY)


def prepare_message(
    msg: Message,
    *,
    sender: AddressLike | None = None,
    recipients: Iterable[AddressLike] | None = None,
) -> tuple[bytes, Envelope, str]:
    """Check a message built elsewhere; return what is sent, its envelope and Message-ID.

    ``msg`` is not changed. The bytes sent are ``msg`` without any Bcc header,
    with a Date and a Message-ID added when it has none. The envelope sender is
    ``sender``, else the Sender header, else From; the recipients are
    ``recipients``, else every address in To, Cc and Bcc.
    """
    msg = _modern(msg)
    check_message_headers(msg)
    if sender is None:
        found = msg.get("Sender") or msg.get("From")
        if found is None:
            raise InvalidMessageError("the message has no From header, and no sender was given")
        addresses: tuple[Address, ...] = getattr(found, "addresses", ())
        if len(addresses) != 1:
            raise InvalidMessageError(f"the sender {str(found)!r} must be exactly one address")
        envelope_sender = _checked(addresses[0], str(found))
    else:
        envelope_sender = parse_address(sender)
    if recipients is None:
        found_recipients: list[Address] = []
        for name in ("To", "Cc", "Bcc"):
            for header in msg.get_all(name) or ():
                found_recipients.extend(_checked(a, str(header)) for a in header.addresses)
        rcpts = _unique(a.addr_spec for a in found_recipients)
    else:
        if isinstance(recipients, (str, Address)):
            recipients = [recipients]
        rcpts = _unique(parse_address(r).addr_spec for r in recipients)
    if not rcpts:
        raise InvalidMessageError("no recipients: the message has no To, Cc or Bcc, and none were given")

    message_id = msg.get("Message-ID")
    added: list[bytes] = []
    if message_id is None:
        message_id = _new_message_id(envelope_sender.domain)
        added.append(b"Message-ID: " + message_id.encode("ascii") + b"\r\n")
    else:
        message_id = str(message_id).strip()
    if msg.get("Date") is None:
        added.append(b"Date: " + formatdate(localtime=True).encode("ascii") + b"\r\n")
    try:
        raw = msg.as_bytes(policy=msg.policy.clone(linesep="\r\n"))
    except Exception as exc:
        raise InvalidMessageError(f"the message cannot be written out: {exc}") from None
    if "Bcc" in msg:
        raw = _without_header(raw, b"bcc")
    if added:
        raw = b"".join(added) + raw
    return raw, Envelope(envelope_sender.addr_spec, rcpts), message_id


def _without_header(raw: bytes, lowered_name: bytes) -> bytes:
    """``raw`` with every occurrence of one top-level header (and its folded lines) removed."""
    head, sep, body = raw.partition(b"\r\n\r\n")
    kept: list[bytes] = []
    dropping = False
    for line in head.split(b"\r\n"):
        if line[:1] in (b" ", b"\t"):
            if not dropping:
                kept.append(line)
            continue
        dropping = line.split(b":", 1)[0].strip().lower() == lowered_name
        if not dropping:
            kept.append(line)
    return b"\r\n".join(kept) + sep + body


def message_id_of(msg: Message) -> str | None:
    value = msg.get("Message-ID")
    return None if value is None else str(value).strip()
