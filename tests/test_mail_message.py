"""Building and checking messages: structure, encodings, and every refusal before queueing."""

from __future__ import annotations

import email
import string
from email import policy
from email.headerregistry import Address
from email.message import EmailMessage
from email.mime.text import MIMEText

import pytest
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st

from gaeservices import InvalidMessageError, Services, send_mail, send_message
from gaeservices.mail.message import build_message, parse_address, prepare_message

SENDER = "Jöhn Dœ <john@example.com>"


def parsed(raw: bytes) -> EmailMessage:
    return email.message_from_bytes(raw, policy=policy.default)


def roundtrip(msg: EmailMessage) -> EmailMessage:
    return parsed(msg.as_bytes())


def text_of(part) -> str:
    """A text part's content with the wire's CRLF line ends read as LF."""
    return part.get_content().replace("\r\n", "\n")


# --- structure -----------------------------------------------------------------


def test_a_plain_message_has_every_header_and_no_bcc():
    msg, envelope = build_message(
        SENDER, ["a@example.com", "Bee <b@example.com>"], "Hello", "Body\n",
        cc="c@example.com", bcc=["hidden@example.com", "a@example.com"], reply_to="r@example.com",
    )
    got = roundtrip(msg)
    assert [a.addr_spec for a in got["To"].addresses] == ["a@example.com", "b@example.com"]
    assert str(got["Cc"]) == "c@example.com"
    assert str(got["Reply-To"]) == "r@example.com"
    assert "Bcc" not in got and b"hidden" not in msg.as_bytes()
    assert got["Date"].datetime is not None
    assert str(got["Message-ID"]).endswith("@example.com>")
    assert got.get_content_type() == "text/plain"
    assert envelope.sender == "john@example.com"
    # every recipient once, Bcc included, in order
    assert envelope.recipients == ("a@example.com", "b@example.com", "c@example.com", "hidden@example.com")


def test_every_message_gets_its_own_message_id():
    ids = {str(build_message(SENDER, "a@example.com", "s", "b")[0]["Message-ID"]) for _ in range(200)}
    assert len(ids) == 200


def test_lines_end_in_crlf_and_stay_7bit():
    msg, _ = build_message(SENDER, "a@example.com", "Grüße", "héllo\n" + "x" * 300 + "\n")
    raw = msg.as_bytes()
    assert raw.isascii()
    assert b"\n" not in raw.replace(b"\r\n", b"")
    assert max(len(line) for line in raw.split(b"\r\n")) <= 78


def test_html_goes_as_multipart_alternative_and_attachments_keep_name_and_type():
    png = b"\x89PNG\r\n\x1a\n" + bytes(range(256))
    msg, _ = build_message(
        SENDER, "a@example.com", "Report", "see attached", html="<p>see <b>attached</b></p>",
        attachments=[
            ("résumé été.pdf", b"%PDF-1.4\n" + bytes(range(256)) * 4),
            ("data.csv", "a,b\nç,ü\n"),
            ("picture", png, "image/png"),
            ("blob.bin", b"\x00\xff" * 10),
        ],
    )
    got = roundtrip(msg)
    assert got.get_content_type() == "multipart/mixed"
    body = got.get_body(preferencelist=("related", "html", "plain"))
    assert text_of(got.get_body(preferencelist=("plain",))) == "see attached\n"
    assert text_of(body) == "<p>see <b>attached</b></p>\n"
    assert [p.get_content_type() for p in got.iter_parts()][0] == "multipart/alternative"
    parts = [(p.get_filename(), p.get_content_type(), p.get_payload(decode=True)) for p in got.iter_attachments()]
    assert parts == [
        ("résumé été.pdf", "application/pdf", b"%PDF-1.4\n" + bytes(range(256)) * 4),
        ("data.csv", "text/csv", "a,b\nç,ü\n".encode()),
        ("picture", "image/png", png),
        ("blob.bin", "application/octet-stream", b"\x00\xff" * 10),
    ]


def test_attachments_from_a_path_and_from_a_mime_part(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_bytes(b"line one\nline two\n")
    part = EmailMessage()
    part.set_content(b"{}", maintype="application", subtype="json", filename="x.json")
    msg, _ = build_message(SENDER, "a@example.com", "s", "b", attachments=[path, part])
    names = [(p.get_filename(), p.get_content_type()) for p in roundtrip(msg).iter_attachments()]
    assert names == [("notes.txt", "text/plain"), ("x.json", "application/json")]


def test_non_ascii_names_subjects_and_bodies_arrive_intact():
    subject = "Grüße — 你好 🎉 " + "lang " * 20
    body = "héllo wörld ✓\nsecond line — ünïcode 🎉\n"
    msg, envelope = build_message(
        "Jöhn Dœ <john@exämple.com>", [("Ünïcode, Nämé", "u@example.com")], subject, body,
        html="<p>héllo 🎉</p>",
    )
    got = roundtrip(msg)
    assert str(got["Subject"]) == subject
    assert got["From"].addresses[0].display_name == "Jöhn Dœ"
    assert got["To"].addresses[0].display_name == "Ünïcode, Nämé"
    assert text_of(got.get_body(preferencelist=("plain",))) == body
    assert text_of(got.get_body(preferencelist=("html",))) == "<p>héllo 🎉</p>\n"
    # an internationalised domain is written in its ASCII form, in headers and envelope
    assert got["From"].addresses[0].domain == "xn--exmple-cua.com"
    assert envelope.sender == "john@xn--exmple-cua.com"


def test_headers_add_and_replace_but_not_structure():
    msg, envelope = build_message(
        SENDER, "a@example.com", "s", "b",
        headers={"X-Tag": "t1", "From": "Shown <shown@example.com>", "Message-ID": "<my-id@example.com>",
                 "In-Reply-To": "<earlier@example.com>"},
    )
    got = roundtrip(msg)
    assert str(got["X-Tag"]) == "t1" and str(got["In-Reply-To"]) == "<earlier@example.com>"
    assert str(got["From"]) == "Shown <shown@example.com>" and got.get_all("From") == [got["From"]]
    assert str(got["Message-ID"]) == "<my-id@example.com>"
    assert envelope.sender == "john@example.com"  # the envelope follows sender=, not a display header
    for name in ("Bcc", "Content-Type", "content-transfer-encoding", "MIME-Version"):
        with pytest.raises(InvalidMessageError, match="cannot be set through headers"):
            build_message(SENDER, "a@example.com", "s", "b", headers={name: "x"})
    with pytest.raises(InvalidMessageError, match="Message-ID"):
        build_message(SENDER, "a@example.com", "s", "b", headers={"Message-ID": "no angle brackets"})


# --- refusals ------------------------------------------------------------------

INJECTIONS = [
    "Hi\r\nBcc: victim@example.com",
    "Hi\nBcc: victim@example.com",
    "Hi\rBcc: victim@example.com",
    "Hi\r\n",  # a trailing line end: the standard library writes it, ending the header block
    "Hi\n",
    "Hi\x00there",
    "Hi\u2028Bcc: victim@example.com",
]


@pytest.mark.parametrize("value", INJECTIONS)
def test_header_injection_is_refused_in_the_subject(value):
    with pytest.raises(InvalidMessageError, match="Subject"):
        build_message(SENDER, "a@example.com", value, "b")


@pytest.mark.parametrize("value", INJECTIONS)
@pytest.mark.parametrize("field", ["to", "cc", "bcc", "reply_to", "sender"])
def test_header_injection_is_refused_in_addresses(field, value):
    kwargs = {"sender": SENDER, "to": "a@example.com", "subject": "s", "body": "b"}
    kwargs[field] = f"Evil {value} <evil@example.com>"
    with pytest.raises(InvalidMessageError):
        build_message(**kwargs)
    kwargs[field] = [("Evil" + value, "evil@example.com")]
    if field == "sender":
        kwargs[field] = kwargs[field][0]
    with pytest.raises(InvalidMessageError):
        build_message(**kwargs)


@pytest.mark.parametrize("value", INJECTIONS)
def test_header_injection_is_refused_in_extra_headers_and_file_names(value):
    with pytest.raises(InvalidMessageError):
        build_message(SENDER, "a@example.com", "s", "b", headers={"X-Tag": value})
    with pytest.raises(InvalidMessageError):
        build_message(SENDER, "a@example.com", "s", "b", attachments=[(f"a{value}.txt", b"x")])
    with pytest.raises(InvalidMessageError, match="header name"):
        build_message(SENDER, "a@example.com", "s", "b", headers={"X-Tag\r\nBcc": "x"})
    with pytest.raises(InvalidMessageError, match="header name"):
        build_message(SENDER, "a@example.com", "s", "b", headers={"X Tag": "x"})


@pytest.mark.parametrize(
    "address",
    [
        "", "not-an-address", "a@", "@example.com", "a@b@c.com", "a@-b.com", "a@b..com",
        "one@example.com, two@example.com", "Ünï@example.com", "a@exa mple.com",
        "<>", "Name <>", "group: a@example.com;", "a@" + "x" * 64 + ".com",
    ],
)
def test_malformed_addresses_are_refused(address):
    with pytest.raises(InvalidMessageError):
        build_message(SENDER, [address], "s", "b")
    with pytest.raises(InvalidMessageError):
        build_message(address, ["a@example.com"], "s", "b")


def test_an_address_is_one_item_and_pairs_go_in_a_list():
    assert parse_address(("Ada", "ada@example.com")) == Address("Ada", "ada", "example.com")
    assert parse_address(Address("Ada", "ada", "exämple.com")).domain == "xn--exmple-cua.com"
    with pytest.raises(InvalidMessageError):
        parse_address(("Ada", "Other <ada@example.com>"))
    with pytest.raises(InvalidMessageError):
        parse_address(42)
    with pytest.raises(InvalidMessageError, match="no recipients"):
        build_message(SENDER, [], "s", "b")


def test_a_refused_message_queues_nothing(tmp_path):
    svc = Services(secret_key="k-signing-key-for-the-test-suite", data_dir=str(tmp_path), environ={}, mail="memory://")
    try:
        for bad in (
            dict(subject="Hi\r\nBcc: victim@example.com"),
            dict(to=["evil@example.com\r\nBcc: victim@example.com"]),
            dict(headers={"X-Tag": "a\nb"}),
        ):
            kwargs = dict(sender=SENDER, to=["a@example.com"], subject="s", body="b", services=svc) | bad
            with pytest.raises(InvalidMessageError):
                send_mail(**kwargs)
        assert svc.queue.counts() == {}
        send_mail(SENDER, "a@example.com", "fine", "b", services=svc)
        assert sum(svc.queue.counts().values()) == 1
    finally:
        svc.close()


# --- messages built elsewhere ------------------------------------------------------


def test_a_ready_message_is_sent_without_bcc_and_is_not_changed():
    msg = EmailMessage()
    msg["From"] = "Ada <ada@example.com>"
    msg["To"] = "b@example.com"
    msg["Bcc"] = "hidden@example.com"
    msg["Subject"] = "ready"
    msg.set_content("body")
    before = msg.as_bytes()
    raw, envelope, message_id = prepare_message(msg)
    assert msg.as_bytes() == before and "Message-ID" not in msg
    got = parsed(raw)
    assert "Bcc" not in got and b"hidden" not in raw
    assert str(got["Message-ID"]) == message_id and got["Date"] is not None
    assert envelope.sender == "ada@example.com"
    assert envelope.recipients == ("b@example.com", "hidden@example.com")
    assert b"\r\n" in raw and b"\n" not in raw.replace(b"\r\n", b"")


def test_a_ready_message_keeps_its_message_id_and_takes_given_envelope():
    msg = EmailMessage()
    msg["From"] = "ada@example.com"
    msg["To"] = "shown@example.com"
    msg["Message-ID"] = "<given@example.com>"
    msg["Subject"] = "s"
    msg.set_content("b")
    raw, envelope, message_id = prepare_message(
        msg, sender="bounces@example.com", recipients=["x@example.com", "y@example.com"]
    )
    assert message_id == "<given@example.com>" and raw.count(b"Message-ID") == 1
    assert (envelope.sender, envelope.recipients) == ("bounces@example.com", ("x@example.com", "y@example.com"))


def test_a_legacy_message_is_accepted():
    legacy = MIMEText("héllo", "plain", "utf-8")
    legacy["From"] = "ada@example.com"
    legacy["To"] = "b@example.com"
    legacy["Subject"] = "legacy"
    raw, envelope, _ = prepare_message(legacy)
    assert text_of(parsed(raw)) == "héllo"
    assert envelope.recipients == ("b@example.com",)


def test_a_ready_message_with_an_injected_header_is_refused(tmp_path):
    msg = EmailMessage()
    msg["From"] = "ada@example.com"
    msg["To"] = "b@example.com"
    msg.set_raw("Subject", "hi\r\nBcc: victim@example.com")  # set_raw does not check
    msg.set_content("b")
    with pytest.raises(InvalidMessageError, match="Subject"):
        prepare_message(msg)
    trailing = EmailMessage()
    trailing["From"] = "ada@example.com"
    trailing["To"] = "b@example.com"
    trailing["Subject"] = "hi\r\n"  # the standard library takes this, and would end the header block
    trailing.set_content("b")
    with pytest.raises(InvalidMessageError, match="Subject"):
        prepare_message(trailing)
    folded = email.message_from_bytes(
        b"From: ada@example.com\r\nTo: b@example.com\r\nSubject: a long\r\n folded subject\r\n\r\nbody\r\n",
        policy=policy.default,
    )
    raw, _, _ = prepare_message(folded)  # folding is not injection
    assert str(parsed(raw)["Subject"]) == "a long folded subject"
    bad_to = EmailMessage()
    bad_to["From"] = "ada@example.com"
    bad_to["To"] = "not an address"
    bad_to.set_content("b")
    with pytest.raises(InvalidMessageError):
        prepare_message(bad_to)
    svc = Services(secret_key="k-signing-key-for-the-test-suite", data_dir=str(tmp_path), environ={}, mail="memory://")
    try:
        with pytest.raises(InvalidMessageError):
            send_message(msg, services=svc)
        assert svc.queue.counts() == {}
    finally:
        svc.close()


# --- property tests: no input crashes, none injects ---------------------------------

header_text = st.text(
    st.characters(codec="utf-8", exclude_categories=("Cs",)) | st.sampled_from("\r\n\t :;,<>\"'@=?\\()"),
    max_size=120,
)
_weird_locals = st.text(string.ascii_letters + string.digits + ".-_+\"\\ @<>\r\n", min_size=0, max_size=20)
_weird_domains = st.text(string.ascii_lowercase + "äöü-." + "\r\n @[]", min_size=0, max_size=20)
local_parts = st.one_of(st.from_regex(r"[A-Za-z0-9._+-]{1,12}", fullmatch=True), _weird_locals)
domains = st.one_of(st.from_regex(r"[a-zäöü0-9-]{1,10}(\.[a-z]{2,5}){1,2}", fullmatch=True), _weird_domains)
address_texts = st.one_of(
    st.builds(lambda n, local, d: f"{n} <{local}@{d}>", header_text, local_parts, domains),
    st.builds(lambda n, local, d: f'"{n}" <{local}@{d}>', header_text, local_parts, domains),
    st.builds(lambda local, d: f"{local}@{d}", local_parts, domains),
    header_text,
)
EXPECTED = {"from", "to", "subject", "date", "message-id", "mime-version", "content-type", "content-transfer-encoding"}


def _whitespace(text):
    return " ".join(text.split())


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(subject=header_text, name=header_text, local=local_parts, domain=domains)
def test_any_subject_and_address_either_is_refused_or_arrives_as_given(subject, name, local, domain):
    try:
        msg, envelope = build_message(SENDER, [(name, f"{local}@{domain}")], subject, "body")
    except InvalidMessageError:
        event("refused")
        return
    event("accepted")
    got = roundtrip(msg)
    assert {k.lower() for k in got.keys()} == EXPECTED  # nothing injected
    assert _whitespace(str(got["Subject"])) == _whitespace(subject)
    (address,) = got["To"].addresses
    # Python's parser keeps the folding space between two encoded words of a display
    # name, which RFC 2047 (6.2) says to drop; mail clients drop it. So spaces may
    # differ here, and nothing else may.
    assert "".join(address.display_name.split()) == "".join(name.split())
    assert envelope.recipients == (address.addr_spec,)
    assert "\r" not in address.addr_spec and "\n" not in address.addr_spec


@settings(max_examples=300, deadline=None)
@given(value=header_text, text_address=address_texts)
def test_any_header_value_or_address_text_either_is_refused_or_stays_one_header(value, text_address):
    try:
        msg, envelope = build_message(SENDER, [text_address], "s", "b", headers={"X-Value": value})
    except InvalidMessageError:
        event("refused")
        return
    event("accepted")
    got = roundtrip(msg)
    assert {k.lower() for k in got.keys()} == EXPECTED | {"x-value"}
    assert _whitespace(str(got["X-Value"])) == _whitespace(value)
    assert len(got["To"].addresses) == 1 and envelope.recipients == (got["To"].addresses[0].addr_spec,)


@settings(max_examples=200, deadline=None)
@given(body=st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=500))
def test_any_body_arrives_intact_up_to_line_ends(body):
    assume(body.strip("\r\n") == body.strip("\r\n"))
    msg, _ = build_message(SENDER, "a@example.com", "s", body)
    text = text_of(roundtrip(msg))
    expected = "\n".join(body.replace("\r\n", "\n").replace("\r", "\n").split("\n"))
    assert text.rstrip("\n") == expected.rstrip("\n")


# --- the direct way writes what the standard library writes ---------------------------

import re as _re  # noqa: E402

from gaeservices.mail.message import _build  # noqa: E402

_VOLATILE = _re.compile(rb"(?:Date|Message-ID):[^\r\n]*\r\n(?:[ \t][^\r\n]*\r\n)*")


# The standard library's own policy, as POLICY is configured: every header set through
# it and folded by it, with none of this module's shortcuts.
STANDARD = policy.SMTP.clone(cte_type="7bit")


def _both_ways(*args, **kwargs):
    direct = _build(*args, direct=True, **kwargs)
    standard = _build(*args, direct=False, **kwargs)
    assert direct[1] == standard[1]
    assert str(direct[0]["Message-ID"]) == direct[2] and str(standard[0]["Message-ID"]) == standard[2]
    return (
        _VOLATILE.sub(b"", direct[0].as_bytes()),
        _VOLATILE.sub(b"", standard[0].as_bytes(policy=STANDARD)),
    )


names = st.from_regex(r"[A-Za-z0-9 .\"]{0,30}", fullmatch=True)
plain_locals = st.from_regex(r"[A-Za-z0-9_+=-]{1,12}(\.[A-Za-z0-9]{1,5}){0,2}", fullmatch=True)
plain_domains = st.from_regex(r"[a-z0-9-]{1,12}(\.[a-z]{2,6}){1,2}", fullmatch=True)
ascii_subjects = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=90) | st.text(max_size=20)
bodies = st.lists(
    st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=90) | st.text(max_size=20), max_size=6
).map(lambda lines: "\n".join(lines)) | st.text(max_size=200)


@settings(max_examples=300, deadline=None)
@given(
    people=st.lists(st.tuples(names, plain_locals, plain_domains), min_size=1, max_size=4),
    subject=ascii_subjects,
    body=bodies,
)
def test_the_direct_way_writes_what_the_standard_library_writes(people, subject, body):
    sender, *rest = people
    try:
        direct, standard = _both_ways(
            (sender[0], f"{sender[1]}@{sender[2]}"), [(n, f"{lp}@{d}") for n, lp, d in people],
            subject, body, cc=[(n, f"{lp}@{d}") for n, lp, d in rest],
        )
    except InvalidMessageError:
        event("refused")
        return
    event("built")
    assert direct == standard


@pytest.mark.parametrize("length", range(60, 82))
def test_the_direct_way_folds_where_the_standard_library_folds(length):
    subject = ("word " * 20)[: length - len("Subject: ")].rstrip() or "x"
    recipients = [f"reader{i}@example.com" for i in range(length // 20)] or ["a@example.com"]
    body = "x" * (length - 2) + "\n" + "y" * length
    direct, standard = _both_ways(("Bench Sender", "s@example.com"), recipients, subject, body)
    assert direct == standard


@settings(max_examples=500, deadline=None)
@given(
    name=st.from_regex(r"[A-Za-z0-9]{1,8}( [A-Za-z0-9]{1,8}){0,3}", fullmatch=True) | st.just(""),
    local=st.from_regex(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]{1,8}(\.[A-Za-z0-9_+-]{1,5}){0,2}", fullmatch=True),
    domain=st.from_regex(r"[A-Za-z0-9-]{1,10}(\.[A-Za-z0-9-]{1,6}){0,2}", fullmatch=True),
)
def test_plain_addresses_are_taken_apart_as_the_standard_parser_does(name, local, domain):
    from gaeservices.mail.message import _parse_address_text, _parse_with_the_standard_parser

    text = f"{name} <{local}@{domain}>" if name else f"{local}@{domain}"
    _parse_address_text.cache_clear()
    try:
        quick = _parse_address_text(text)
    except InvalidMessageError:
        quick = None
    try:
        standard = _parse_with_the_standard_parser(text)
    except InvalidMessageError:
        standard = None
    assert quick == standard
    event("valid" if standard is not None else "refused")


@settings(max_examples=1000, deadline=None)
@given(
    name=st.sampled_from(["Subject", "Message-ID", "X-A", "Content-Transfer-Encoding", "X-" + "n" * 40]),
    value=st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=100)
    | st.text(st.sampled_from("ab \t\r\n\x0b\x0cé\udcff"), max_size=90),
)
def test_the_policy_folds_raw_values_as_the_standard_policy_does(name, value):
    from gaeservices.mail.message import POLICY

    try:
        expected = STANDARD.fold_binary(name, value)
    except Exception as exc:  # the same refusal, then
        with pytest.raises(type(exc)):
            POLICY.fold_binary(name, value)
        return
    assert POLICY.fold_binary(name, value) == expected


@pytest.mark.parametrize("name", ["Subject", "X-A", "Message-ID"])
def test_the_policy_folds_at_the_same_length_as_the_standard_policy(name):
    from gaeservices.mail.message import POLICY

    for length in range(40, 100):
        for value in ("word " * 30)[:length], "x" * length, ("a" * 30 + " ") * 3:
            value = value[:length]
            assert POLICY.fold_binary(name, value) == STANDARD.fold_binary(name, value), (name, value)


def test_a_long_message_id_is_folded_as_the_standard_policy_folds_it(monkeypatch):
    import gaeservices.mail.message as message

    for length in range(40, 90):
        monkeypatch.setattr(message, "_new_message_id", lambda domain: f"<{'x' * length}@{domain}>")
        msg, _, message_id = message._build(SENDER, "a@example.com", "s", "b", direct=True)
        head = msg.as_bytes().split(b"\r\n\r\n")[0]
        assert head == msg.as_bytes(policy=STANDARD).split(b"\r\n\r\n")[0]
        assert str(parsed(msg.as_bytes())["Message-ID"]).strip() == message_id
