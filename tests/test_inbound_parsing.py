"""`inbound.parsing.parse` on ordinary mail and on every kind of hostile input issue 19 lists
(and more of the same kinds): each is read with the right values or refused with the right
reason, never an unnamed exception. Plus a Hypothesis property over arbitrary bytes."""

from __future__ import annotations

import base64
import re
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from inbound import parsing
from inbound.classification import Kind, classify
from inbound.excerpt import excerpt
from inbound.parsing import (
    MAX_HEADER_BYTES,
    MAX_MESSAGE_BYTES,
    MAX_MIME_CONTAINERS,
    MAX_MIME_DEPTH,
    MAX_MIME_PARTS,
    MAX_PARAM_FIELD_BYTES,
    MAX_RECIPIENTS,
    MAX_REFERENCES,
    MAX_SUBJECT_CHARS,
    MAX_TEXT_CHARS,
    REFERENCES_HEAD,
    InboundError,
    InboundMessage,
    MessageRefused,
    RefusalReason,
    parse,
)
from tests.inbound_mail import BASE, message, plain, sample

CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def refused(raw: bytes) -> RefusalReason:
    with pytest.raises(MessageRefused) as caught:
        parse(raw)
    assert isinstance(caught.value, InboundError)
    return caught.value.reason


# --- ordinary mail -----------------------------------------------------------------------


def test_a_gmail_reply_is_read_whole() -> None:
    parsed = parse(sample("standard/reply_gmail.eml"))

    assert parsed.message_id == "<CAF=reply1@mail.gmail.com>"
    assert parsed.in_reply_to == ("<ce.5f3a9c0e1b2d4c6a8e0f1a2b.intro@campaign.example>",)
    assert parsed.references == ("<ce.5f3a9c0e1b2d4c6a8e0f1a2b.intro@campaign.example>",)
    assert parsed.from_address == "ada@example.org"
    assert parsed.recipients == ("sales@campaign.example",)
    assert parsed.subject == "Re: A quick question"
    assert parsed.date == datetime(2025, 12, 1, 11, 0, tzinfo=UTC)
    assert parsed.return_path == "ada@example.org"
    assert parsed.content_type == "multipart/alternative"
    # text/plain is preferred over the HTML alternative, base64 and UTF-8 decoded, CRLF → LF
    assert parsed.text.startswith("Thanks — let's talk on Tuesday. Can you do 10 am?\n\nOn Mon")
    assert "> Hi Ada," in parsed.text
    assert parsed.defects == ()


def test_html_only_mail_becomes_text() -> None:
    parsed = parse(sample("standard/reply_outlook_html.eml"))

    assert parsed.text.startswith("Not interested, please remove me.\n\nBob\n\nFrom: Sales")
    assert "margin" not in parsed.text  # <style> content dropped
    assert "From: Sales <sales@campaign.example>" in parsed.text  # entities unescaped


def test_report_and_automatic_headers() -> None:
    parsed = parse(sample("standard/dsn_hard.eml"))

    assert parsed.content_type == "multipart/report"
    assert parsed.report_type == "delivery-status"
    assert parsed.return_path == ""
    assert parsed.auto_submitted == "auto-replied"
    assert parsed.recipients == ("bounces+k7q2m9x4@campaign.example",)

    ooo = parse(sample("standard/ooo_outlook.eml"))
    assert ooo.auto_submitted == "auto-generated"
    assert ooo.date == datetime(2025, 12, 5, 10, 0, tzinfo=timezone(timedelta(hours=1)))


def test_recipients_come_from_the_envelope_then_the_delivery_fields_then_to_and_cc() -> None:
    raw = message(
        "From: a@example.org",
        "To: Sales <Sales@Campaign.Example>, other@example.org",
        "Cc: cc@example.org, sales@campaign.example",
        "Delivered-To: bounces+ABC@campaign.example",
        "X-Original-To: orig@campaign.example",
    )

    parsed = parse(raw, envelope_recipients=["env@campaign.example", "not an address"])

    assert parsed.recipients == (
        "env@campaign.example",
        "bounces+abc@campaign.example",
        "orig@campaign.example",
        "sales@campaign.example",
        "other@example.org",
        "cc@example.org",
    )


def test_return_path_null_absent_and_daemon() -> None:
    assert parse(plain("Return-Path: <>")).return_path == ""
    assert parse(plain("Return-Path: < >")).return_path == ""
    assert parse(plain()).return_path is None
    assert parse(plain("Return-Path: <MAILER-DAEMON@mx.example>")).return_path == (
        "mailer-daemon@mx.example"
    )


def test_message_ids_with_control_characters_are_dropped() -> None:
    parsed = parse(
        message("From: a@example.org", "Message-ID: \x00@", "References: <a\x00@b> <ok@b>")
    )
    assert parsed.message_id is None
    assert parsed.references == ("<ok@b>",)


def test_message_ids_are_normalised() -> None:
    parsed = parse(
        message(
            "From: a@example.org",
            "Message-ID:   bare-id@host.example  ",
            "In-Reply-To: your message of Monday <p1@example.org> (comment) <p2@example.org>",
            "References: <r1@example.org>\r\n\t< r2@example.org >  <no-at-sign> <>",
        )
    )

    assert parsed.message_id == "<bare-id@host.example>"
    assert parsed.in_reply_to == ("<p1@example.org>", "<p2@example.org>")
    assert parsed.references == ("<r1@example.org>", "<r2@example.org>")


def test_mbox_separator_bom_and_bare_cr_line_breaks_are_accepted() -> None:
    mbox = b"From ada@example.org Mon Dec  1 09:00:00 2025\n" + plain()
    assert parse(mbox).from_address == "ada@example.org"
    assert parse(b"\xef\xbb\xbf" + plain()).from_address == "ada@example.org"
    cr_only = plain(body="one\rtwo").replace(b"\r\n", b"\r")
    parsed = parse(cr_only)
    assert parsed.from_address == "ada@example.org"
    assert parsed.text == "one\ntwo"


def test_raw_utf8_headers_and_encoded_words() -> None:
    parsed = parse(
        message(
            "From: Zoë <zoe@bücher.example>",
            "Subject: Grüße =?utf-8?q?und_=F0=9F=91=8B?= =?iso-8859-1?b?5g==?=",
        )
    )

    assert parsed.subject == "Grüße und 👋æ"
    assert parsed.from_address == "zoe@bücher.example"


# --- refusals ----------------------------------------------------------------------------


@pytest.mark.parametrize("raw", [b"", b"\r\n", b" \t\r\n\r\n"], ids=["nothing", "crlf", "spaces"])
def test_empty(raw: bytes) -> None:
    assert refused(raw) == RefusalReason.EMPTY


def test_over_the_size_limit_and_at_it() -> None:
    head = plain(body="")
    assert refused(head + b"x" * (MAX_MESSAGE_BYTES - len(head) + 1)) == RefusalReason.TOO_LARGE
    assert refused(b"\x00" * (MAX_MESSAGE_BYTES * 2)) == RefusalReason.TOO_LARGE

    at_limit = parse(head + b"x" * (MAX_MESSAGE_BYTES - len(head)))
    assert at_limit.size == MAX_MESSAGE_BYTES
    assert len(at_limit.text) == MAX_TEXT_CHARS
    assert "text_cut" in at_limit.defects


@pytest.mark.parametrize(
    "raw",
    [
        b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR",
        b'{"from": "ada@example.org", "subject": "hi"}',
        b"GET / HTTP/1.1\r\nHost: example.org\r\n\r\n",
        b"hello, this is just text\nwith: a colon later\n",
        "From: a@example.org\r\n\r\nhi".encode("utf-16"),
        b"\x00\x00\x00From: a@example.org\r\n\r\n",
        b": no name\r\n\r\n",
        b"\r\nFrom: a@example.org\r\n\r\nbody",
        b"From a@example.org Mon Dec  1 09:00:00 2025\n",
        b"PK\x03\x04" + bytes(range(256)),
    ],
    ids=[
        "png",
        "json",
        "http-request",
        "plain-text",
        "utf-16",
        "leading-nul",
        "empty-field-name",
        "leading-blank-line",
        "mbox-line-only",
        "zip",
    ],
)
def test_not_a_message(raw: bytes) -> None:
    assert refused(raw) == RefusalReason.NOT_A_MESSAGE


def test_header_section_over_its_limit() -> None:
    many = plain(*[f"X-Filler-{i}: {'v' * 60}" for i in range(MAX_HEADER_BYTES // 70 + 10)])
    assert refused(many) == RefusalReason.HEADERS_TOO_LARGE
    one_line = plain("X-Big: " + "a" * (MAX_HEADER_BYTES + 10))
    assert refused(one_line) == RefusalReason.HEADERS_TOO_LARGE
    folded = plain("X-Folded: a" + "\r\n a" * (MAX_HEADER_BYTES // 3))
    assert refused(folded) == RefusalReason.HEADERS_TOO_LARGE

    # Just under: accepted, with the body after it
    fits = plain(*[f"X-Filler-{i}: {'v' * 60}" for i in range(MAX_HEADER_BYTES // 80)])
    assert parse(fits).text == "Hello"


@pytest.mark.parametrize(
    "field",
    [
        'Content-Type: multipart/mixed; boundary=x; a="' + '\\";' * 20_000,
        "Content-Type: text/plain" + "; a=b" * 2_000,
        "Content-Type: text/plain;\r\n" + "\tcharset*0=utf-8;\r\n" * 1_000,
        "Content-Disposition: attachment; filename=" + "a" * (MAX_PARAM_FIELD_BYTES + 1),
    ],
    ids=["quoted-semicolons", "many-params", "folded-continuations", "disposition"],
)
def test_a_parameter_field_longer_than_its_limit(field: str) -> None:
    assert refused(plain(field)) == RefusalReason.HEADER_TOO_LONG


def test_long_parameter_fields_in_nested_parts_and_dsn_blocks_are_refused_too() -> None:
    nested = plain(
        "Content-Type: multipart/mixed; boundary=b",
        body="--b\r\nContent-Type: text/plain; name=" + "n" * 5_000 + "\r\n\r\nx\r\n--b--\r\n",
    )
    assert refused(nested) == RefusalReason.HEADER_TOO_LONG
    status = plain(
        "Content-Type: multipart/report; report-type=delivery-status; boundary=b",
        body="--b\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; x\r\n\r\n"
        "Final-Recipient: rfc822;" + '"' * 6_000 + "\r\nAction: failed\r\n--b--\r\n",
    )
    assert refused(status) == RefusalReason.HEADER_TOO_LONG


def nested(depth: int, *, kind: str = "multipart") -> bytes:
    if kind == "multipart":
        opening = "".join(
            f"Content-Type: multipart/mixed; boundary=b{i}\r\n\r\n--b{i}\r\n" for i in range(depth)
        )
    else:
        opening = "Content-Type: message/rfc822\r\n\r\n" * depth
    return plain(body="").rstrip(b"\r\n") + b"\r\n" + opening.encode() + b"\r\ninnermost\r\n"


def test_nesting_deeper_than_the_limit() -> None:
    assert refused(nested(MAX_MIME_DEPTH + 1)) == RefusalReason.TOO_DEEP
    assert refused(nested(MAX_MIME_DEPTH + 1, kind="message")) == RefusalReason.TOO_DEEP
    # thousands of levels never reach the parser's recursion
    assert refused(nested(50_000)) == RefusalReason.TOO_MANY_PARTS
    assert refused(nested(5_000, kind="message")) == RefusalReason.TOO_MANY_PARTS

    # multipart/digest: each part is an implicit message/rfc822, two levels per declared type
    digest = "".join(
        f"Content-Type: multipart/digest; boundary=d{i}\r\n\r\n--d{i}\r\n\r\n" for i in range(199)
    )
    assert (
        refused(plain(body="").rstrip(b"\r\n") + b"\r\n" + digest.encode())
        == RefusalReason.TOO_DEEP
    )

    assert parse(nested(MAX_MIME_DEPTH - 1)).text == ""  # fine, but text under deep nesting
    assert parse(nested(MAX_MIME_DEPTH - 1, kind="message")).content_type == "message/rfc822"


def test_too_many_parts() -> None:
    def siblings(count: int) -> bytes:
        parts = "".join("--b\r\nContent-Type: text/plain\r\n\r\nx\r\n" for _ in range(count))
        return plain("Content-Type: multipart/mixed; boundary=b", body=parts + "--b--\r\n")

    assert refused(siblings(MAX_MIME_PARTS)) == RefusalReason.TOO_MANY_PARTS
    assert refused(siblings(100_000)) == RefusalReason.TOO_MANY_PARTS
    assert parse(siblings(MAX_MIME_PARTS - 2)).text == "x"
    delimiters = plain(
        "Content-Type: multipart/mixed; boundary=b",
        body="--b\r\nContent-Type: text/plain\r\n\r\n" + "--x\r\n" * 10_001 + "--b--\r\n",
    )
    assert refused(delimiters) == RefusalReason.TOO_MANY_PARTS
    dashes_in_plain_text = parse(plain(body="-- \r\n" * 20_000))  # no multipart: no boundaries
    assert dashes_in_plain_text.text.startswith("-- \n")
    containers = "".join(
        "--b\r\nContent-Type: message/rfc822\r\n\r\nSubject: x\r\n\r\nx\r\n"
        for _ in range(MAX_MIME_CONTAINERS + 1)
    )
    many = plain("Content-Type: multipart/mixed; boundary=b", body=containers + "--b--\r\n")
    assert refused(many) == RefusalReason.TOO_MANY_PARTS


# --- tolerated, with the right values ------------------------------------------------------


def test_malformed_mime_is_read_as_far_as_it_goes() -> None:
    no_boundary = parse(plain("Content-Type: multipart/mixed", body="just text"))
    assert no_boundary.text == ""
    assert "NoBoundaryInMultipartDefect" in no_boundary.defects

    unclosed = parse(
        plain(
            "Content-Type: multipart/alternative; boundary=z",
            body="--z\r\nContent-Type: text/plain\r\n\r\nthe text\r\n",
        )
    )
    assert unclosed.text.strip() == "the text"
    assert "CloseBoundaryNotFoundDefect" in unclosed.defects

    never = parse(plain("Content-Type: multipart/mixed; boundary=q", body="no parts at all"))
    assert "StartBoundaryNotFoundDefect" in never.defects

    bad_base64 = parse(
        plain("Content-Transfer-Encoding: base64", body="aGVsbG8gd29y!!!bGQ=\r\n#$%^&*")
    )
    assert bad_base64.text.startswith("hello wor")

    header_junk = parse(b"From: a@example.org\r\nthis line is no header\r\nTo: b@example.org\r\n")
    assert header_junk.from_address == "a@example.org"
    assert "MissingHeaderBodySeparatorDefect" in header_junk.defects


def test_missing_headers() -> None:
    parsed = parse(b"Subject: only a subject\r\n\r\nbody")

    assert parsed.from_address is None
    assert parsed.message_id is None
    assert parsed.in_reply_to == ()
    assert parsed.references == ()
    assert parsed.recipients == ()
    assert parsed.date is None
    assert parsed.return_path is None
    assert parsed.text == "body"
    assert classify(parsed).kind == Kind.REPLY


def test_duplicated_headers_use_the_first_and_are_recorded() -> None:
    parsed = parse(
        message(
            "From: first@example.org",
            "From: second@example.org",
            "Message-ID: <one@example.org>",
            "Message-ID: <two@example.org>",
            "Subject: first",
            "Subject: second",
            "Return-Path: <first-path@example.org>",
            "Return-Path: <>",
        )
    )

    assert parsed.from_address == "first@example.org"
    assert parsed.message_id == "<one@example.org>"
    assert parsed.subject == "first"
    assert parsed.return_path == "first-path@example.org"
    assert {"duplicate:from", "duplicate:message-id", "duplicate:subject"} <= set(parsed.defects)


def test_ten_thousand_references_keep_the_root_and_the_nearest_parents() -> None:
    ids = [f"<id{i}@example.org>" for i in range(10_000)]
    parsed = parse(plain("References: " + "\r\n ".join(ids)))

    assert parsed.references_count == 10_000
    assert len(parsed.references) == MAX_REFERENCES
    assert parsed.references[:REFERENCES_HEAD] == tuple(ids[:REFERENCES_HEAD])
    assert parsed.references[REFERENCES_HEAD:] == tuple(ids[-(MAX_REFERENCES - REFERENCES_HEAD) :])
    assert "references_trimmed" in parsed.defects

    one_line = parse(plain("References: " + " ".join(ids)))
    assert one_line.references == parsed.references


def test_in_reply_to_with_thousands_of_ids_is_bounded() -> None:
    parsed = parse(plain("In-Reply-To: " + " ".join(f"<p{i}@x.example>" for i in range(5_000))))
    assert parsed.in_reply_to == tuple(f"<p{i}@x.example>" for i in range(parsing.MAX_IN_REPLY_TO))


@pytest.mark.parametrize(
    ("subject", "expected"),
    [
        (" ".join(["=?utf-8?q?a?="] * 10_000), "a" * MAX_SUBJECT_CHARS),
        (" ".join(["=?utf-8?b?YWFh?="] * 10_000), "a" * MAX_SUBJECT_CHARS),
        ("=?utf-8?q?" * 10_000, "=?utf-8?q?" * (MAX_SUBJECT_CHARS // 10)),
        # cut at 16 KB before decoding: the word is left unterminated, so it stays text
        ("=?utf-8?b?" + "QUFB" * 50_000 + "?=", ("=?utf-8?b?" + "QUFB" * 200)[:MAX_SUBJECT_CHARS]),
    ],
    ids=["ten-thousand-q-words", "ten-thousand-b-words", "unterminated", "one-huge-word"],
)
def test_encoded_word_bombs_are_cut(subject: str, expected: str) -> None:
    parsed = parse(plain("Subject: " + subject))
    assert parsed.subject == expected
    assert "subject_cut" in parsed.defects


def test_encoded_words_are_decoded_once_and_cannot_smuggle_line_breaks() -> None:
    inner = base64.b64encode(b"=?utf-8?q?a=0D=0ABcc:_x@evil.example?=").decode()
    parsed = parse(
        plain(
            f"Subject: =?utf-8?b?{inner}?=",
            "X-Autoreply: =?utf-8?q?yes=0D=0AFrom:_evil@example.org?=",
        )
    )

    assert parsed.subject == "=?utf-8?q?a=0D=0ABcc:_x@evil.example?="
    assert parsed.x_autoreply == "yes From: evil@example.org"
    assert not CONTROL.search(parsed.subject + (parsed.x_autoreply or ""))


@pytest.mark.parametrize(
    "charset", ["x-unknown-charset", "punycode", "rot13", "idna", "base64", "utf-8'en'", "\x00"]
)
def test_unknown_and_unsafe_charsets_decode_as_utf8(charset: str) -> None:
    parsed = parse(
        plain(
            f"Subject: =?{charset}?q?caf=C3=A9?=",
            f'Content-Type: text/plain; charset="{charset}"',
            body="café ünïcode".encode(),
        )
    )

    # A NUL is no charset name: the control character becomes a space and breaks the word.
    assert parsed.subject == ("café" if charset != "\x00" else "=? ?q?caf=C3=A9?=")
    assert parsed.text == "café ünïcode"
    assert "unknown_charset" in parsed.defects


def test_known_charsets_decode() -> None:
    parsed = parse(
        plain("Content-Type: text/plain; charset=koi8-r", body="Привет".encode("koi8-r"))
    )
    assert parsed.text == "Привет"
    utf7 = parse(plain("Content-Type: text/plain; charset=utf-7", body="Hi Mom -+Jjo--!"))
    assert utf7.text == "Hi Mom -☺-!"


def test_nul_and_control_bytes_never_reach_the_strings() -> None:
    parsed = parse(
        message(
            "From: Ada\x00 <ada@example.org>",
            "Subject: a\x00b\x1bc\x7fd",
            "Auto-Submitted: auto-\x00replied",
            body=b"line\x00one\r\n\x07line two\x0c",
        )
    )

    assert parsed.from_address == "ada@example.org"
    assert parsed.subject == "a b c d"
    assert parsed.auto_submitted == "auto- replied"
    assert parsed.text == "lineone\nline two"
    assert "control_characters" in parsed.defects

    # A NUL in a field name makes that line no header: the body starts there.
    ghost = parse(message("From: ada@example.org", "Fr\x00om: ghost@example.org"))
    assert ghost.from_address == "ada@example.org"
    assert ghost.text.startswith("From: ghost@example.org")
    assert "MissingHeaderBodySeparatorDefect" in ghost.defects


def test_hostile_address_fields() -> None:
    deep_comments = parse(plain("Cc: " + "(" * 20_000 + "a@b.example" + ")" * 20_000))
    assert deep_comments.recipients == ("sales@campaign.example",)

    groups = parse(plain("Cc: " + "g:" * 5_000 + "x@y.example;"))  # the stdlib recurses per g:
    assert groups.recipients == ("sales@campaign.example", "x@y.example")

    quoted_at = parse(message('From: "boss@bank.example" <ada@example.org>'))
    assert quoted_at.from_address == "ada@example.org"

    several = parse(message("From: a@example.org, b@example.org"))
    assert several.from_address == "a@example.org"
    assert "several_from" in several.defects

    many = parse(plain("Cc: " + ", ".join(f"u{i}@example.org" for i in range(20_000))))
    assert len(many.recipients) == MAX_RECIPIENTS

    junk = parse(message("From: not an address", "To: <<<>>>, @@@, a@, @b, <a@b@c>"))
    assert junk.from_address is None
    assert junk.recipients == ()

    route = parse(message("From: <@relay.example,@other.example:ada@example.org>"))
    assert route.from_address == "ada@example.org"


def test_unreadable_dates_are_none() -> None:
    for value in ["yesterday", "Mon, 99 Foo 2025 99:99:99", "9" * 300, "Mon, 1 Dec 99999 09:00"]:
        assert parse(plain(f"Date: {value}")).date is None
    zoneless = parse(plain("Date: Mon, 1 Dec 2025 09:00:00 -0000"))
    assert zoneless.date == datetime(2025, 12, 1, 9, 0, tzinfo=UTC)


def test_the_text_is_the_message_own_not_an_attachment_or_attached_message() -> None:
    body = (
        "--o\r\nContent-Type: text/plain; name=notes.txt\r\n"
        "Content-Disposition: attachment; filename=notes.txt\r\n\r\nattached notes\r\n"
        "--o\r\nContent-Type: message/rfc822\r\n\r\nSubject: old\r\n\r\nforwarded text\r\n"
        "--o\r\nContent-Type: text/plain\r\n\r\nmy own words\r\n--o--\r\n"
    )
    parsed = parse(plain("Content-Type: multipart/mixed; boundary=o", body=body))
    assert parsed.text.strip() == "my own words"


def test_html_conversion_survives_unclosed_markup() -> None:
    markup = "<p>visible</p><!-- never closed <script>alert(1)</script>" + "<a" * 50_000
    parsed = parse(plain("Content-Type: text/html", body=markup))
    assert parsed.text == "visible"

    script = parse(plain("Content-Type: text/html", body="<script>never closed " * 1_000))
    assert script.text == ""


# --- properties --------------------------------------------------------------------------

_FIELDS = [
    "From",
    "To",
    "Cc",
    "Subject",
    "Message-ID",
    "In-Reply-To",
    "References",
    "Return-Path",
    "Auto-Submitted",
    "Precedence",
    "X-Autoreply",
    "Date",
    "Content-Type",
    "Content-Transfer-Encoding",
    "Content-Disposition",
    "Delivered-To",
]
_FRAGMENTS = [
    b"multipart/mixed; boundary=b",
    b"multipart/report; report-type=delivery-status; boundary=b",
    b"message/rfc822",
    b"message/delivery-status",
    b"message/feedback-report",
    b"text/rfc822-headers",
    b"text/html",
    b"text/plain; charset=x-nope",
    b"base64",
    b"quoted-printable",
    b"=?utf-8?b?",
    b"=?x?q?",
    b"?=",
    b"<a@b.example>",
    b"(",
    b")",
    b'"',
    b"\\",
    b"<>",
    b"@",
    b",",
    b":",
    b";",
    b"\r\n",
    b"\n",
    b"\r",
    b"\r\n\t",
    b"\x00",
    b"\xff\xfe",
    b"\xc3\xa9",
    b"--b\r\n",
    b"--b--\r\n",
    b"Action: failed\r\nStatus: 5.1.1\r\nFinal-Recipient: rfc822;x@y.example\r\n",
    b"Feedback-Type: abuse\r\n",
    b"Content-Type: ",
    b"MAILER-DAEMON",
    b"<!--",
    b"<p>",
    b"On Mon, Ada wrote:\n> ",
    b"back on Dec 12",
]


@st.composite
def mail_like(draw: st.DrawFn) -> bytes:
    """Bytes shaped like mail: header lines from the fields classification reads, values and a
    body made of MIME, DSN and syntax fragments mixed with arbitrary bytes."""
    chunk = st.one_of(st.sampled_from(_FRAGMENTS), st.binary(max_size=12))
    lines = draw(
        st.lists(
            st.tuples(st.sampled_from(_FIELDS), st.lists(chunk, max_size=6)),
            min_size=1,
            max_size=12,
        )
    )
    head = b"".join(name.encode() + b": " + b"".join(value) + b"\r\n" for name, value in lines)
    body = b"".join(draw(st.lists(chunk, max_size=40)))
    return head + draw(st.sampled_from([b"\r\n", b"\n", b""])) + body


def check(raw: bytes) -> None:
    try:
        parsed = parse(raw)
    except MessageRefused as error:
        assert isinstance(error.reason, RefusalReason)
        assert error.reason != RefusalReason.UNPARSABLE  # the safety net is not reached
        return
    assert isinstance(parsed, InboundMessage)
    assert len(parsed.subject) <= MAX_SUBJECT_CHARS
    assert len(parsed.text) <= MAX_TEXT_CHARS
    assert len(parsed.references) <= MAX_REFERENCES
    assert len(parsed.recipients) <= MAX_RECIPIENTS
    strings = [parsed.subject, parsed.text, *parsed.recipients, *parsed.references]
    strings += [s for s in (parsed.from_address, parsed.message_id, parsed.auto_submitted) if s]
    assert not any(CONTROL.search(s.replace("\n", "").replace("\t", "")) for s in strings)
    classification = classify(parsed, unsubscribe_addresses={"unsubscribe@campaign.example"})
    assert classification.kind in set(Kind)
    assert len(excerpt(parsed.text)) <= 400


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=4_000))
def test_parse_is_total_over_arbitrary_bytes(raw: bytes) -> None:
    check(raw)
    check(b"From: a@example.org\r\n" + raw)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mail_like())
def test_parse_and_classify_are_total_over_mail_shaped_bytes(raw: bytes) -> None:
    check(raw)


def test_every_base_header_is_read() -> None:
    parsed = parse(message(*BASE))
    assert (parsed.from_address, parsed.recipients, parsed.message_id) == (
        "ada@example.org",
        ("sales@campaign.example",),
        "<m1@example.org>",
    )
