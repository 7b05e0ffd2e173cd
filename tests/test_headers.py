"""Header construction on its own: properties over arbitrary Unicode, and hostile inputs by kind.

Every message is read back the way a mail reader does: `email.message_from_bytes` with the
current policy (`email.policy.default`), which decodes RFC 2047 encoded words.
"""

from __future__ import annotations

import email
import email.policy
from email.message import EmailMessage
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from activities.messages import MAX_LINE_OCTETS, CompositionError, compose, single_line
from campaign_engine.addresses import (
    MAX_ENCODED_DISPLAY_NAME_OCTETS,
    InvalidAddress,
    MailAddress,
    Mailbox,
    parse_address,
    parse_mailbox,
    text_problem,
)

EXPECTED_HEADERS = [
    "Message-ID",
    "Date",
    "From",
    "To",
    "Subject",
    "Content-Type",
    "Content-Transfer-Encoding",
    "MIME-Version",
]
MESSAGE_ID = "<campaign.1.2.3.intro@campaign-engine>"
SENDER = Mailbox("Campaign Engine", parse_address("campaigns@example.com"))
LEAD = parse_address("ada@example.com")
# Pieces that have broken header construction somewhere: encoded-word syntax, line breaks,
# header names, address punctuation, quoting.
HOSTILE = st.sampled_from(
    [
        "=?",
        "?=",
        "=?utf-8?q?",
        "=?utf-8?b?",
        "=0D=0A",
        "\r\n",
        "\n",
        "\r",
        "\t",
        "\x00",
        "\u2028",
        "\u0085",
        "Bcc: x@evil.test",
        "Reply-To:_x@evil.test",
        '"',
        "\\",
        ",",
        "<",
        ">",
        "(",
        ";",
        ":",
        " ",
        "é",
        "\U0001d518",
        "\ud800",
    ]
)
LONG_NAME = " ".join(["Long Name"] * 20)
HOSTILE_TEXT = st.lists(st.one_of(st.text(), HOSTILE), max_size=12).map("".join)


def read_back(raw: bytes) -> EmailMessage:
    """As a reader does. A UTF-8 message (RFC 6532) is decoded first: the stdlib's bytes parser
    would leave its UTF-8 header bytes as surrogates."""
    if raw.isascii():
        message = email.message_from_bytes(raw, policy=email.policy.default)
    else:
        message = email.message_from_string(raw.decode("utf-8"), policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


def header_lines(raw: bytes) -> list[bytes]:
    head, _, _ = raw.partition(b"\r\n\r\n")
    return head.split(b"\r\n")


def check_structure(raw: bytes) -> EmailMessage:
    """Exactly the expected headers, once each; no header line longer than RFC 5322 allows."""
    message = read_back(raw)
    assert sorted(message.keys()) == sorted(EXPECTED_HEADERS)
    assert message.defects == []
    for line in header_lines(raw):
        assert len(line) <= 998, line
        # A continuation line starts with white space; anything else must be one of ours.
        if not line[:1].isspace():
            assert line.split(b":", 1)[0].decode() in EXPECTED_HEADERS, line
    return message


def build(**overrides: Any) -> bytes:
    parts: dict[str, Any] = {
        "message_id": MESSAGE_ID,
        "sender": SENDER,
        "recipient": LEAD,
        "subject": "Hello",
        "body": "Hi",
        **overrides,
    }
    return compose(**parts).as_bytes()


# --- properties ---------------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(subject=st.one_of(st.text(), HOSTILE_TEXT))
def test_any_subject_decodes_to_its_single_line_form(subject: str) -> None:
    raw = build(subject=subject)

    message = check_structure(raw)

    assert message["Subject"] == single_line(subject)


@settings(max_examples=200, deadline=None)
@given(name=st.one_of(st.text(), HOSTILE_TEXT))
def test_any_display_name_decodes_to_its_single_line_form(name: str) -> None:
    line = single_line(name)
    encoded = not line.isascii() or "=?" in line
    if encoded and len(line.encode()) > MAX_ENCODED_DISPLAY_NAME_OCTETS:
        # More than one encoded word would be read two ways; refused (the setting at start).
        with pytest.raises(CompositionError):
            build(sender=Mailbox(name, SENDER.address))
        return

    raw = build(sender=Mailbox(name, SENDER.address))

    message = check_structure(raw)

    [address] = message["From"].addresses
    assert address.display_name == single_line(name)
    assert address.addr_spec == "campaigns@example.com"
    assert [a.addr_spec for a in message["To"].addresses] == ["ada@example.com"]


@settings(max_examples=200, deadline=None)
@given(text=st.one_of(st.text(), HOSTILE_TEXT))
def test_single_line_is_one_idempotent_line(text: str) -> None:
    line = single_line(text)

    assert single_line(line) == line
    assert line == line.strip()
    assert not any(c.isspace() and c != " " for c in line)
    assert "  " not in line
    assert text_problem(line) is None


@settings(max_examples=200, deadline=None)
@given(text=st.text(alphabet=st.characters(codec="ascii", exclude_characters="\r\n")))
def test_plain_subjects_stay_readable_and_fold_at_78(text: str) -> None:
    raw = build(subject=text)

    message = check_structure(raw)

    assert message["Subject"] == single_line(text)
    if "=?" not in text and all(len(word) < 60 for word in text.split()):
        assert all(len(line) <= MAX_LINE_OCTETS for line in header_lines(raw))


# --- the inputs, and more of their kinds ------------------------------------------------


@pytest.mark.parametrize(
    "first_name",
    [
        "=?utf-8?q?Ada=0D=0AReply-To:_attacker@evil.test?=",
        "=?utf-8?q?Ada=0D=0ABcc:_victim@evil.test?=",
        "=?utf-8?b?QWRhDQpCY2M6IHZpY3RpbUBldmlsLnRlc3Q=?=",
        "=?iso-8859-1?q?Ada=0ABcc:_x@evil.test?=",
        "Ada =?utf-8?q?=0D=0A?= Bcc: x@evil.test",
        "Ada\r\nBcc: x@evil.test",
        "Ada\u2028Reply-To: x@evil.test",
        "Ada\u0085Reply-To: x@evil.test",
        "Ada\x00Bcc: x@evil.test",
        "x" * 1200,
        "é" * 600,
        " ".join(["word"] * 300),
    ],
)
def test_hostile_subject_text_is_text(first_name: str) -> None:
    subject = single_line(f"Hello {first_name}")
    raw = build(subject=subject)

    message = check_structure(raw)

    assert message["Subject"] == subject
    assert message["Reply-To"] is None and message["Bcc"] is None


def test_literal_encoded_word_is_itself_encoded() -> None:
    literal = "=?utf-8?q?Ada=0D=0AReply-To:_attacker@evil.test?="

    raw = build(subject=f"Hello {literal}")

    assert b"Reply-To" not in raw and b"=0D=0A" not in raw
    assert read_back(raw)["Subject"] == f"Hello {literal}"


@pytest.mark.parametrize(
    ("address", "wire", "smtputf8"),
    [
        ("ada@example.com", "ada@example.com", False),
        ("ada@xn--bcher-kva.example", "ada@xn--bcher-kva.example", False),
        ("ada@bücher.example", "ada@xn--bcher-kva.example", False),
        ("ADA@BÜCHER.example", "ADA@xn--bcher-kva.example", False),
        ("zoë@example.com", "zoë@example.com", True),
        ("zoë@bücher.example", "zoë@xn--bcher-kva.example", True),
    ],
)
def test_addresses_go_out_with_a_labels(address: str, wire: str, smtputf8: bool) -> None:
    outgoing = compose(
        message_id=MESSAGE_ID,
        sender=SENDER,
        recipient=parse_address(address),
        subject="Hi",
        body="b",
    )

    message = check_structure(outgoing.as_bytes())

    assert (outgoing.recipient, outgoing.smtputf8) == (wire, smtputf8)
    assert [a.addr_spec for a in message["To"].addresses] == [wire]
    if not smtputf8:
        outgoing.as_bytes().decode("ascii")  # nothing but ASCII: any server can carry it


@pytest.mark.parametrize(
    "address",
    [
        '"ada\r\nBcc: x@evil.test"@example.com',
        '"ada\\r\\nBcc: x@evil.test"@example.com',
        "=?utf-8?q?a=0D=0A?=@example.com",
        "=?utf-8?b?YQ0KQmNjOiB4QGV2aWwudGVzdA==?=@example.com",
        "ada@=?utf-8?q?evil?=.example",
        "ada@example.com\r\nBcc: x@evil.test",
        "ada@example.com\nBcc: x@evil.test",
        "ada\x00@example.com",
        "ada@exa\u2028mple.com",
        "ada\u0085@example.com",
        "Ada <ada@example.com>",
        "ada@example.com, x@evil.test",
        "ada@example.com>, <x@evil.test",
        "ada@[127.0.0.1]",
        "ada@localhost",
        "ada@example.test",
        "ada",
        "",
    ],
)
def test_addresses_that_could_carry_structure_are_refused(address: str) -> None:
    with pytest.raises(InvalidAddress):
        parse_address(address)


@pytest.mark.parametrize(
    ("setting", "display_name", "addr_spec"),
    [
        ("Campaign Engine <campaigns@localhost>", "Campaign Engine", "campaigns@localhost"),
        ("Sales <sales@acme.test>", "Sales", "sales@acme.test"),
        ("s@example.com", "", "s@example.com"),
        ('"Sales, \\"Team\\"" <sales@acme.test>', 'Sales, "Team"', "sales@acme.test"),
        ('"Zoë Café; (R&D)" <zoe@bücher.example>', "Zoë Café; (R&D)", "zoe@xn--bcher-kva.example"),
        (f'"{LONG_NAME}" <a@example.com>', LONG_NAME, "a@example.com"),
        # In a quoted-string a backslash escapes the next character (RFC 5322 §3.2.4).
        (f'"{LONG_NAME}, \\\\ \\" ?=" <a@example.com>', f'{LONG_NAME}, \\ " ?=', "a@example.com"),
    ],
)
def test_sender_setting_becomes_exactly_its_from(
    setting: str, display_name: str, addr_spec: str
) -> None:
    raw = build(sender=parse_mailbox(setting))

    message = check_structure(raw)

    [address] = message["From"].addresses
    assert (address.display_name, address.addr_spec) == (display_name, addr_spec)


@pytest.mark.parametrize(
    "setting",
    [
        "Campaign Engine <campaigns@localhost>\r\nBcc: x@evil.test",
        "campaigns@localhost\nBcc: x@evil.test",
        "=?utf-8?q?Ops=0D=0ABcc:_x@evil.test?= <ops@example.com>",
        "zoë@example.com",
        "Ops <ops@example.com>, x@evil.test",
        "nobody",
        "a@-bad-.test",
        '"' + "Zoë " * 12 + '" <zoe@example.com>',
    ],
)
def test_sender_settings_that_are_not_one_address_are_refused(setting: str) -> None:
    with pytest.raises(InvalidAddress):
        parse_mailbox(setting)


def test_recipient_display_fields_never_come_from_an_address_string() -> None:
    # The To header is built from the validated parts: there is no string left to parse.
    outgoing = compose(
        message_id=MESSAGE_ID,
        sender=SENDER,
        recipient=MailAddress("ada", "example.com", "example.com"),
        subject="Hi",
        body="b",
    )

    assert outgoing.message["To"] == "ada@example.com"
    assert outgoing.envelope_from == "campaigns@example.com"
