"""`inbound.classification.classify` on standard reports (RFC 3464 DSNs, RFC 5965 ARF, RFC 8098
MDNs, RFC 3834 auto-replies) written here, on real-world bounces from flufl.bounce's own test
data (`tests/inbound_samples/flufl_bounce/`), and on hostile variants; plus the out-of-office
return date and the reply excerpt."""

from __future__ import annotations

import dataclasses
from datetime import UTC, date, datetime

import flufl.bounce
import pytest

from inbound.classification import (
    MAX_REPORT_RECIPIENTS,
    OUT_OF_OFFICE_PREFIXES,
    Classification,
    Kind,
    classify,
)
from inbound.excerpt import EXCERPT_CHARS, excerpt, new_text
from inbound.outofoffice import return_date
from inbound.parsing import InboundError, parse
from tests.inbound_mail import FLUFL, STANDARD, dsn, message, plain, sample

UNSUBSCRIBE = {"unsubscribe@campaign.example"}


def classified(raw: bytes, **options: object) -> Classification:
    return classify(parse(raw), **options)  # type: ignore[arg-type]


def evidence_text(result: Classification) -> str:
    fields = dataclasses.asdict(result.evidence)
    return " ".join(str(v) for v in fields.values() if v)


# --- the kinds' values are the HTTP API's --------------------------------------------------


def test_kind_values() -> None:
    assert [k.value for k in Kind] == [
        "reply",
        "auto_reply",
        "hard_bounce",
        "soft_bounce",
        "complaint",
        "unsubscribe",
        "unknown",
    ]


# --- RFC 3464 delivery status notifications ------------------------------------------------


def test_a_permanent_failure_is_a_hard_bounce_even_with_auto_submitted() -> None:
    result = classified(sample("standard/dsn_hard.eml"), unsubscribe_addresses=UNSUBSCRIBE)

    assert result.kind == Kind.HARD_BOUNCE
    assert result.recipients == ("ada@example.org",)  # Original-Recipient, normalised
    assert result.original_message_id == "<ce.5f3a9c0e1b2d4c6a8e0f1a2b.intro@campaign.example>"
    assert result.evidence.rule == "dsn_permanent_failure"
    assert result.evidence.source.startswith("RFC 3464")
    assert (result.evidence.action, result.evidence.status) == ("failed", "5.1.1")
    assert result.evidence.diagnostic_code == (
        "smtp; 550 5.1.1 <address>: Recipient address rejected: User unknown in virtual "
        "mailbox table"
    )
    assert result.evidence.supporting == ("Auto-Submitted: auto-replied", "Return-Path: <>")


def test_delayed_and_failed_4xx_are_soft_bounces() -> None:
    delayed = classified(sample("standard/dsn_delayed.eml"))
    assert delayed.kind == Kind.SOFT_BOUNCE
    assert (delayed.evidence.action, delayed.evidence.status) == ("delayed", "4.4.7")
    assert delayed.recipients == ("bob@example.org",)
    # from a message/rfc822 returned part
    assert delayed.original_message_id == "<ce.0123456789abcdef01234567.intro@campaign.example>"

    failed_4xx = classified(sample("standard/dsn_failed_4xx.eml"))
    assert failed_4xx.kind == Kind.SOFT_BOUNCE
    assert (failed_4xx.evidence.action, failed_4xx.evidence.status) == ("failed", "4.2.2")
    assert failed_4xx.recipients == ("carol@example.org",)
    assert failed_4xx.original_message_id is None


def test_a_success_notification_is_unknown() -> None:
    result = classified(sample("standard/dsn_delivered.eml"))

    assert result.kind == Kind.UNKNOWN
    assert result.evidence.rule == "dsn_without_failure"
    assert result.original_message_id == "<ce.dddddddddddddddddddddddd.intro@campaign.example>"


def test_hard_wins_over_soft_and_every_failed_recipient_is_reported() -> None:
    result = classified(
        dsn(
            "Final-Recipient: rfc822; soft@example.org\r\nAction: delayed\r\nStatus: 4.4.1",
            "Final-Recipient: rfc822; hard@example.org\r\nAction: failed\r\nStatus: 5.1.1",
            "Final-Recipient: rfc822; hard2@example.org\r\nAction: failed\r\nStatus: 5.2.1",
            "Final-Recipient: rfc822; fine@example.org\r\nAction: delivered\r\nStatus: 2.0.0",
        )
    )

    assert result.kind == Kind.HARD_BOUNCE
    assert result.recipients == ("hard@example.org", "hard2@example.org")
    assert result.evidence.status == "5.1.1"


@pytest.mark.parametrize(
    ("block", "kind", "status"),
    [
        ("Action: failed\r\nStatus: 5.7.1", Kind.HARD_BOUNCE, "5.7.1"),
        ("Action: Failed (permanent)\r\nStatus: 5.1.10 (no such user)", Kind.HARD_BOUNCE, "5.1.10"),
        ("Action: failure\r\nStatus: 553 Exceeded maximum size", Kind.HARD_BOUNCE, "553"),
        ("Action: failed\r\nStatus: 4.0.0", Kind.SOFT_BOUNCE, "4.0.0"),
        ("Action: error\r\nStatus: 5.0.0", Kind.HARD_BOUNCE, "5.0.0"),  # OpenSMTPD
        ("Action: failed", Kind.HARD_BOUNCE, None),
        (
            "Action: failed\r\nDiagnostic-Code: smtp; 452 4.2.2 over quota",
            Kind.SOFT_BOUNCE,
            "4.2.2",
        ),
        (
            "Action: failed\r\nStatus: garbage\r\nDiagnostic-Code: smtp; 421 busy",
            Kind.SOFT_BOUNCE,
            "garbage",
        ),
        ("Status: 5.1.1", Kind.HARD_BOUNCE, "5.1.1"),  # no Action: the class decides
        ("Action: delayed", Kind.SOFT_BOUNCE, None),
        ("Action: relayed\r\nStatus: 2.0.0", Kind.UNKNOWN, "2.0.0"),
        ("Action: expanded\r\nStatus: 2.0.0", Kind.UNKNOWN, "2.0.0"),
    ],
)
def test_action_and_status(block: str, kind: Kind, status: str | None) -> None:
    result = classified(dsn("Final-Recipient: rfc822;x@example.org\r\n" + block))
    assert result.kind == kind
    assert result.evidence.status == status


@pytest.mark.parametrize(
    ("field", "expected"),
    [
        (
            "Original-Recipient: rfc822;Orig@Example.org\r\nFinal-Recipient: rfc822;f@x.org",
            "orig@example.org",
        ),
        ("Final-Recipient: rfc822; <f@example.org>", "f@example.org"),
        ("Final-Recipient: <angle@example.org>", "angle@example.org"),
        ("Final-Recipient: utf-8; zoë@bücher.example", "zoë@bücher.example"),
        ("Final-Recipient: rfc822; not an address", None),
        ("Final-Recipient: rfc822;\x00@\x00", None),
    ],
)
def test_the_failed_recipient(field: str, expected: str | None) -> None:
    result = classified(dsn(field + "\r\nAction: failed\r\nStatus: 5.1.1"))
    assert result.kind == Kind.HARD_BOUNCE
    assert result.recipients == ((expected,) if expected else ())


def test_a_dsn_nested_in_multipart_mixed_is_found() -> None:
    inner = dsn("Final-Recipient: rfc822;x@example.org\r\nAction: failed\r\nStatus: 5.1.1")
    inner_head, _, inner_body = inner.partition(b"\r\n\r\n")
    content_type = [line for line in inner_head.split(b"\r\n") if line.startswith(b"Content-Type")]
    body = b"--w\r\n" + content_type[0] + b"\r\n\r\n" + inner_body + b"\r\n--w--\r\n"
    result = classified(
        message(
            "From: postmaster@mx.example.net",
            "Content-Type: multipart/mixed; boundary=w",
            body=body,
        )
    )
    assert result.kind == Kind.HARD_BOUNCE


def test_a_report_with_thousands_of_recipients_is_bounded() -> None:
    blocks = [
        f"Final-Recipient: rfc822;u{i}@example.org\r\nAction: failed\r\nStatus: 5.1.1"
        for i in range(3_000)
    ]
    result = classified(dsn(*blocks))
    assert result.kind == Kind.HARD_BOUNCE
    assert len(result.recipients) == MAX_REPORT_RECIPIENTS


def test_a_dsn_with_no_recipient_block_goes_to_flufl_bounce() -> None:
    result = classified(dsn())  # a per-message block only
    assert result.kind == Kind.UNKNOWN  # from a mailer daemon with a bounce subject: never a reply
    assert result.evidence.rule == "bounce_without_recipient"


# --- plain-text bounces flufl.bounce does not know: the SMTP reply in the text -----------------


def daemon_text(body: str, subject: str = "Delivery Status Notification (Failure)") -> bytes:
    """A mailer daemon's plain-text bounce (no MIME report) to our mailbox."""
    return message(
        "From: Mail Delivery Subsystem <mailer-daemon@googlemail.com>",
        "To: sales@campaign.example",
        "Return-Path: <>",
        f"Subject: {subject}",
        "Message-ID: <b1@mx.example.net>",
        "Content-Type: text/plain; charset=utf-8",
        body=body,
    )


ORIGINAL = "\n----- Original message -----\n\nMessage-ID: <step-1.x@campaign.example>\n"
ORIGINAL += "From: sales@campaign.example\nTo: ada@example.org\n"


def test_a_plain_text_gmail_bounce_is_a_hard_bounce_of_its_recipient() -> None:
    result = classified(sample("standard/bounce_gmail_plain_text.eml"))

    assert result.kind == Kind.HARD_BOUNCE
    assert result.recipients == ("ada@example.org",)  # not the daemon, not our own mailbox
    assert result.original_message_id == "<step-1.abc@acme.example>"
    assert (result.evidence.rule, result.evidence.status) == ("bounce_text_status", "5.1.1")
    assert "@" not in evidence_text(result)


@pytest.mark.parametrize(
    ("reply", "kind", "status"),
    [
        # Outlook.com / Exchange Online's non-MIME form.
        ("Remote Server returned '550 5.1.10 RESOLVER.ADR.RecipientNotFound'", "hard", "5.1.10"),
        ("host mx.example.org said: 550 5.1.2 bad destination domain", "hard", "5.1.2"),
        ("The response was:\n553 mailbox name not allowed", "hard", "553"),
        ("550 no such user here", "hard", "550"),
        # Not the address's fault: recorded as soft, never a suppression.
        ("The response was:\n552 5.2.2 mailbox full", "soft", "5.2.2"),
        ("The response was:\n550 5.7.1 message refused as spam", "soft", "5.7.1"),
        ("The response was:\n550 5.1.8 bad sender address", "soft", "5.1.8"),
        ("The response was:\n451 4.7.1 greylisted, try again later", "soft", "4.7.1"),
        ("The response was:\n554 transaction failed", "soft", "554"),
    ],
)
def test_a_plain_text_bounce_is_read_by_the_reply_it_quotes(
    reply: str, kind: str, status: str
) -> None:
    body = f"Your message wasn't delivered to ada@example.org.\n\n{reply}\n{ORIGINAL}"

    result = classified(daemon_text(body))

    assert result.kind == (Kind.HARD_BOUNCE if kind == "hard" else Kind.SOFT_BOUNCE)
    assert result.evidence.status == status
    assert result.recipients == ("ada@example.org",)
    assert result.original_message_id == "<step-1.x@campaign.example>"


def test_addresses_of_the_copied_original_are_not_the_bounced_recipients() -> None:
    # The text names nobody above the copy: only the returned Message-ID can match it.
    body = f"Delivery failed.\n\n550 5.1.1 user unknown\n{ORIGINAL}Cc: grace@example.org\n"

    result = classified(daemon_text(body))

    assert (result.kind, result.recipients) == (Kind.HARD_BOUNCE, ())
    assert result.original_message_id == "<step-1.x@campaign.example>"


def test_a_daemon_text_without_a_reply_code_or_anything_to_match_stays_unknown() -> None:
    no_code = classified(daemon_text(f"Something went wrong with ada@example.org.\n{ORIGINAL}"))
    nothing_to_match = classified(daemon_text("Delivery failed.\n\n550 5.1.1 user unknown\n"))

    assert no_code.kind == nothing_to_match.kind == Kind.UNKNOWN


def test_a_person_quoting_a_reply_code_is_still_a_reply() -> None:
    result = classified(
        plain(
            "Subject: Re: Hello",
            body="Our server said: 550 5.1.1 for bob@example.org, odd. Let's talk Friday.",
        )
    )
    assert result.kind == Kind.REPLY


def test_a_dsn_wins_over_the_unsubscribe_address() -> None:
    raw = dsn("Final-Recipient: rfc822;x@example.org\r\nAction: failed\r\nStatus: 5.1.1").replace(
        b"To: bounces+tok@campaign.example", b"To: unsubscribe@campaign.example"
    )
    assert classified(raw, unsubscribe_addresses=UNSUBSCRIBE).kind == Kind.HARD_BOUNCE


# --- RFC 5965 feedback reports -------------------------------------------------------------


def test_an_abuse_report_is_a_complaint() -> None:
    result = classified(sample("standard/arf_abuse.eml"))

    assert result.kind == Kind.COMPLAINT
    assert result.recipients == ("erin@example.org",)
    assert result.original_message_id == "<ce.eeeeeeeeeeeeeeeeeeeeeeee.intro@campaign.example>"
    assert result.original_mail_from == "bounces+k7q2m9x4@campaign.example"
    assert result.evidence.rule == "feedback_report"
    assert result.evidence.feedback_type == "abuse"
    assert result.evidence.source.startswith("RFC 5965")


def test_auth_failure_reports_are_not_complaints() -> None:
    result = classified(sample("standard/arf_auth_failure.eml"))
    assert result.kind == Kind.UNKNOWN
    assert result.evidence.feedback_type == "auth-failure"
    assert "RFC 6591" in result.evidence.source
    assert result.original_message_id == "<ce.ffffffffffffffffffffffff.intro@campaign.example>"


def arf(feedback: str, returned: str) -> bytes:
    body = (
        "--f\r\nContent-Type: text/plain\r\n\r\nA report.\r\n"
        f"--f\r\nContent-Type: message/feedback-report\r\n\r\n{feedback}\r\n"
        f"--f\r\nContent-Type: message/rfc822\r\n\r\n{returned}\r\n--f--\r\n"
    )
    return message(
        "From: fbl@isp.example",
        "To: fbl@campaign.example",
        "Content-Type: multipart/report; report-type=feedback-report; boundary=f",
        body=body,
    )


@pytest.mark.parametrize(
    ("feedback_type", "kind"),
    [
        ("abuse", Kind.COMPLAINT),
        ("Fraud", Kind.COMPLAINT),
        ("other", Kind.COMPLAINT),
        ("not-spam", Kind.UNKNOWN),
        ("virus", Kind.UNKNOWN),
        ("auth-failure", Kind.UNKNOWN),
    ],
)
def test_feedback_types(feedback_type: str, kind: Kind) -> None:
    raw = arf(f"Feedback-Type: {feedback_type}\r\nVersion: 1", "To: x@example.org\r\n\r\nhi")
    assert classified(raw).kind == kind


def test_a_complaint_without_original_rcpt_to_names_the_returned_to() -> None:
    raw = arf(
        "Version: 1\r\nUser-Agent: x",  # no Feedback-Type either: still a complaint
        "To: Returned <Returned@Example.org>\r\nMessage-ID: <sent-1@campaign.example>\r\n\r\nhi",
    )
    result = classified(raw)
    assert result.kind == Kind.COMPLAINT
    assert result.recipients == ("returned@example.org",)
    assert result.original_message_id == "<sent-1@campaign.example>"
    assert result.evidence.feedback_type is None


# --- RFC 2369 mailto unsubscribes -----------------------------------------------------------


def test_a_message_to_the_unsubscribe_mailbox_is_an_unsubscribe() -> None:
    result = classified(
        sample("standard/unsubscribe_mailto.eml"), unsubscribe_addresses=UNSUBSCRIBE
    )

    assert result.kind == Kind.UNSUBSCRIBE
    assert result.unsubscribe_address == "unsubscribe+t0k3n@campaign.example"
    assert result.evidence.rule == "list_unsubscribe_mailto"
    assert "RFC 2369" in result.evidence.source


@pytest.mark.parametrize(
    ("to", "addresses", "kind"),
    [
        ("unsubscribe@campaign.example", UNSUBSCRIBE, Kind.UNSUBSCRIBE),
        ("UNSUBSCRIBE@Campaign.Example", UNSUBSCRIBE, Kind.UNSUBSCRIBE),
        ("x@y.example, unsubscribe+abc@campaign.example", UNSUBSCRIBE, Kind.UNSUBSCRIBE),
        ("unsubscribe@other.example", UNSUBSCRIBE, Kind.REPLY),
        ("unsubscribe-me@campaign.example", UNSUBSCRIBE, Kind.REPLY),
        ("unsubscribe@campaign.example", set(), Kind.REPLY),
        ("leave@campaign.example", {"Leave@Campaign.Example"}, Kind.UNSUBSCRIBE),
    ],
)
def test_unsubscribe_matching(to: str, addresses: set[str], kind: Kind) -> None:
    raw = message("From: ivan@example.org", f"To: {to}", "Subject: please stop")
    assert classified(raw, unsubscribe_addresses=addresses).kind == kind


def test_an_unsubscribe_wins_over_automatic_headers_and_counts_the_envelope() -> None:
    raw = message(
        "From: ivan@example.org", "To: sales@campaign.example", "Auto-Submitted: auto-generated"
    )
    result = classify(
        parse(raw, envelope_recipients=["unsubscribe@campaign.example"]),
        unsubscribe_addresses=UNSUBSCRIBE,
    )
    assert result.kind == Kind.UNSUBSCRIBE
    assert result.evidence.supporting == ("Auto-Submitted: auto-generated",)


# --- RFC 3834 automatic answers ------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "rule"),
    [
        ("Auto-Submitted: auto-replied", "auto_submitted"),
        ("Auto-Submitted: auto-generated", "auto_submitted"),
        ("Auto-Submitted: auto-notified; owner-email=x@example.org", "auto_submitted"),
        ("Auto-Submitted: Auto-Replied (vacation)", "auto_submitted"),
        ("X-Autoreply: yes", "x_autoreply"),
        ("X-Autorespond: Out of office", "x_autorespond"),
        ("Precedence: bulk", "precedence"),
        ("Precedence: JUNK", "precedence"),
        ("Precedence: auto_reply", "precedence"),
        ("Return-Path: <>", "null_return_path"),
    ],
)
def test_each_automatic_header_makes_an_auto_reply(header: str, rule: str) -> None:
    result = classified(plain(header, "Subject: Re: A quick question"))
    assert result.kind == Kind.AUTO_REPLY
    assert result.evidence.rule == rule
    assert result.evidence.header is not None
    assert "@" not in evidence_text(result)  # owner-email is redacted


@pytest.mark.parametrize(
    "header",
    [
        "Auto-Submitted: no",
        "Auto-Submitted: No (a person)",
        "X-Autoreply: no",
        "Precedence: list",
        "Precedence: first-class",
        "Return-Path: <ada@example.org>",
    ],
)
def test_headers_that_do_not_make_mail_automatic(header: str) -> None:
    assert classified(plain(header, "Subject: Re: A quick question")).kind == Kind.REPLY


@pytest.mark.parametrize("prefix", OUT_OF_OFFICE_PREFIXES)
def test_out_of_office_subject_prefixes_decide(prefix: str) -> None:
    result = classified(plain(f"Subject: {prefix.title()}: A quick question"))
    assert result.kind == Kind.AUTO_REPLY
    assert result.evidence.rule == "out_of_office_subject"


@pytest.mark.parametrize(
    "subject",
    [
        "Re: out of office next week?",
        "Re: Automatic reply: A quick question",  # a person answering an auto-reply
        "Re: A quick question (I'm on vacation, but yes)",
        "Automatic replies are annoying",
    ],
)
def test_out_of_office_phrases_alone_do_not_decide(subject: str) -> None:
    assert classified(plain(f"Subject: {subject}")).kind == Kind.REPLY


def test_out_of_office_with_its_return_date() -> None:
    outlook = classified(sample("standard/ooo_outlook.eml"))
    assert outlook.kind == Kind.AUTO_REPLY
    assert outlook.evidence.rule == "auto_submitted"
    assert outlook.evidence.supporting == ("Subject: Automatic reply: A quick question",)
    assert outlook.return_date == date(2025, 12, 15)

    german = classified(sample("standard/ooo_subject_only.eml"))
    assert german.kind == Kind.AUTO_REPLY
    assert german.evidence.header == "Subject: Abwesenheitsnotiz: Eine kurze Frage"
    assert german.return_date == date(2026, 1, 5)


def test_received_at_anchors_a_date_without_a_year() -> None:
    raw = plain("Auto-Submitted: auto-replied", body="I am away until Jan 3.")
    assert classified(raw).return_date is None  # no Date header, no reference
    late = classify(parse(raw), received_at=datetime(2025, 12, 20, tzinfo=UTC))
    assert late.return_date == date(2026, 1, 3)


def test_a_vacation_reply_is_never_a_bounce() -> None:
    # listmonk#1334: vacation replies were counted as bounces.
    raw = plain(
        "Subject: Out of Office: A quick question",
        "Auto-Submitted: auto-replied",
        "Return-Path: <>",
        body="I am out of the office and your message could not be answered until Monday.",
    )
    assert classified(raw).kind == Kind.AUTO_REPLY


def test_a_read_receipt_is_an_auto_reply() -> None:
    result = classified(sample("standard/read_receipt.eml"))
    assert result.kind == Kind.AUTO_REPLY
    assert result.evidence.rule == "read_receipt"


# --- replies -----------------------------------------------------------------------------


def test_replies() -> None:
    gmail = classified(sample("standard/reply_gmail.eml"), unsubscribe_addresses=UNSUBSCRIBE)
    assert gmail.kind == Kind.REPLY
    assert gmail.evidence.rule == "default"
    assert classified(sample("standard/reply_outlook_html.eml")).kind == Kind.REPLY


@pytest.mark.parametrize(
    "subject",
    ["Re: Delivery failure of our order", "AW: Undeliverable mail", "Fwd: Returned mail"],
)
def test_a_person_answering_about_a_delivery_failure_is_a_reply(subject: str) -> None:
    assert classified(plain(f"Subject: {subject}", "Return-Path: <ada@example.org>")).kind == (
        Kind.REPLY
    )


def test_a_person_quoting_a_bounce_is_a_reply() -> None:
    raw = plain(
        "Subject: Re: A quick question",
        body=(
            "Your last mail bounced for my colleague, see below.\n\n"
            "> Undelivered Mail Returned to Sender\n"
            "> The following addresses had permanent fatal errors\n"
            "> <colleague@example.org>\n> 550 5.1.1 user unknown\n"
        ),
    )
    assert classified(raw).kind == Kind.REPLY


# --- non-standard bounces: flufl.bounce's samples ---------------------------------------------

# file → (kind, recipients): what flufl.bounce's own tests expect of these samples, through our
# pipeline. RFC 3464 samples are decided by our DSN reader; the rest by flufl.bounce.
FLUFL_EXPECTED: dict[str, tuple[Kind, tuple[str, ...]]] = {
    "aol_01.txt": (Kind.HARD_BOUNCE, ("screenname@aol.com",)),
    "dsn_01.txt": (Kind.HARD_BOUNCE, ("userx@example.com",)),
    "dsn_02.txt": (Kind.SOFT_BOUNCE, ("zzzzz@example.uk",)),
    "dsn_03.txt": (Kind.HARD_BOUNCE, ("userx@example.be",)),
    "dsn_05.txt": (Kind.SOFT_BOUNCE, ("userx@example.cz",)),
    "dsn_09.txt": (Kind.HARD_BOUNCE, ("userx@example.com",)),
    "dsn_10.txt": (Kind.HARD_BOUNCE, ("anne.person@dom.ain",)),
    "dsn_11.txt": (Kind.HARD_BOUNCE, ("joem@example.com",)),
    "dsn_13.txt": (Kind.HARD_BOUNCE, ("userx@example.com",)),
    "dsn_15.txt": (Kind.HARD_BOUNCE, ("userx@example.com",)),
    "dsn_17.txt": (Kind.SOFT_BOUNCE, ("userx@example.fi",)),
    "dsn_18.txt": (Kind.HARD_BOUNCE, ("email@replaced.net",)),
    "dumbass_01.txt": (Kind.UNKNOWN, ()),
    "exim_01.txt": (Kind.HARD_BOUNCE, ("userx@its.example.nl",)),
    "groupwise_02.txt": (Kind.HARD_BOUNCE, ("userx@example.com",)),
    "groupwise_03.txt": (Kind.REPLY, ()),
    "hotpop_01.txt": (Kind.HARD_BOUNCE, ("userx@example.com",)),
    "llnl_01.txt": (Kind.HARD_BOUNCE, ("user1@example.gov",)),
    "microsoft_01.txt": (Kind.HARD_BOUNCE, ("userx@example.com",)),
    "microsoft_03.txt": (Kind.HARD_BOUNCE, ("userx@example.com",)),
    "netscape_01.txt": (Kind.HARD_BOUNCE, ("aaaaa@corel.com", "bbbbb@corel.com")),
    "postfix_01.txt": (Kind.HARD_BOUNCE, ("xxxxx@local.ie",)),
    "postfix_02.txt": (Kind.HARD_BOUNCE, ("yyyyy@digicool.com",)),
    "qmail_01.txt": (Kind.HARD_BOUNCE, ("userx@example.de",)),
    "qmail_07.txt": (Kind.HARD_BOUNCE, ("user@example.net",)),
    "qmail_08.txt": (Kind.AUTO_REPLY, ()),
    "sendmail_01.txt": (Kind.HARD_BOUNCE, ("zzzzz@nfg.nl", "zzzzz@shaft.coal.nl")),
    "simple_01.txt": (Kind.HARD_BOUNCE, ("bbbsss@example.com",)),
    "simple_03.txt": (Kind.SOFT_BOUNCE, ("userx@example.za",)),
    "simple_13.txt": (Kind.HARD_BOUNCE, ("userx@example.fr",)),
    "simple_17.txt": (Kind.HARD_BOUNCE, ("userx@example.com",)),
    "simple_21.txt": (Kind.SOFT_BOUNCE, ("userx@example.com",)),
    "simple_35.txt": (Kind.SOFT_BOUNCE, ("calvin@example.com",)),
    "simple_38.txt": (Kind.HARD_BOUNCE, ("userx@example.com",)),
    "simple_39.txt": (Kind.HARD_BOUNCE, ("userx@example.ru",)),
    "simple_45.txt": (Kind.HARD_BOUNCE, ("subscriber@earthlink.net",)),
    "sina_01.txt": (Kind.HARD_BOUNCE, ("userx@sina.com", "usery@sina.com")),
    "smtp32_04.txt": (
        Kind.HARD_BOUNCE,
        ("after_another@example.net", "one_bad_address@example.net"),
    ),
    "yahoo_01.txt": (Kind.HARD_BOUNCE, ("userx@example.com",)),
    "yahoo_13.txt": (Kind.HARD_BOUNCE, ("bogus-address@example.net",)),
}


def test_every_flufl_sample_is_listed() -> None:
    assert sorted(p.name for p in FLUFL.glob("*.txt")) == sorted(FLUFL_EXPECTED)


@pytest.mark.parametrize("name", sorted(FLUFL_EXPECTED))
def test_flufl_bounce_samples(name: str) -> None:
    kind, recipients = FLUFL_EXPECTED[name]
    result = classified((FLUFL / name).read_bytes(), unsubscribe_addresses=UNSUBSCRIBE)

    assert result.kind == kind
    assert sorted(result.recipients) == sorted(recipients)
    assert "@" not in evidence_text(result)


def test_flufl_decided_bounces_name_their_source_and_returned_message() -> None:
    exim = classified((FLUFL / "exim_01.txt").read_bytes())
    assert exim.evidence.rule == "flufl_bounce_permanent"
    assert exim.evidence.source == f"flufl.bounce {flufl.bounce.__version__}"
    assert exim.original_message_id == "<19990920022322.A19735@stereo.rotzorg.org>"

    warning = classified((FLUFL / "simple_03.txt").read_bytes())
    assert warning.evidence.rule == "flufl_bounce_temporary"


def test_a_failing_detector_is_recorded_not_raised(monkeypatch: pytest.MonkeyPatch) -> None:
    # flufl.bounce's detectors are heuristics; one that raises on some input must not take the
    # message with it. Simulated: no real input found here makes one raise.
    def broken(_message: object) -> object:
        raise KeyError("content")

    monkeypatch.setattr(flufl.bounce, "all_failures", broken)
    result = classified((FLUFL / "postfix_01.txt").read_bytes())

    # The SMTP reply Postfix quotes still decides it (the text rule behind the detectors).
    assert (result.kind, result.evidence.rule) == (Kind.HARD_BOUNCE, "bounce_text_status")
    assert result.evidence.supporting[0] == "flufl.bounce failed: KeyError"
    assert "content" not in evidence_text(result)


def test_evidence_never_holds_an_address() -> None:
    samples = [*STANDARD.glob("*.eml"), *FLUFL.glob("*.txt")]
    extra = [
        plain("Subject: Automatic reply: from boss@bank.example", "X-Autoreply: yes <a@b.example>"),
        dsn(
            "Final-Recipient: rfc822;x@example.org\r\nAction: failed\r\nStatus: 5.1.1\r\n"
            "Diagnostic-Code: smtp; 550 user x@example.org (x@example.org) unknown"
        ),
    ]
    for raw in [p.read_bytes() for p in samples] + extra:
        result = classified(raw, unsubscribe_addresses=UNSUBSCRIBE)
        assert "@" not in evidence_text(result), result.evidence


# --- return dates ------------------------------------------------------------------------

REFERENCE = date(2025, 12, 5)  # a Friday


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("I will be back on December 15.", date(2025, 12, 15)),
        ("Back on Dec 12", date(2025, 12, 12)),
        ("I'm back in the office on Monday, December 15th, 2025.", date(2025, 12, 15)),
        ("returning on 2026-01-05", date(2026, 1, 5)),
        ("Out of the office until 12 January.", date(2026, 1, 12)),
        ("away until the 12th of January 2026", date(2026, 1, 12)),
        ("I return to the office on Jan. 3", date(2026, 1, 3)),
        ("available again from 8.12.", date(2025, 12, 8)),
        ("back on 12/24", date(2025, 12, 24)),
        ("back on 24/12/2025", date(2025, 12, 24)),
        ("back on 05/06/2026", None),  # May 6 or 5 June: no guess
        ("back on Monday", date(2025, 12, 8)),
        ("back on Friday", date(2025, 12, 12)),  # the next one, not today
        ("back tomorrow", date(2025, 12, 6)),
        ("Ich bin ab dem 7. Januar wieder im Büro.", date(2026, 1, 7)),
        ("bis einschließlich 09.12.2025 abwesend", date(2025, 12, 9)),
        ("Ich bin ab Montag wieder erreichbar.", date(2025, 12, 8)),
        ("wieder da am Mo., 15. Dezember 2025", date(2025, 12, 15)),
        ("until further notice", None),
        ("back on 2031-01-01", None),  # too far ahead to be a return
        ("back on 2024-01-01", None),  # in the past
        ("back on February 30", None),
        ("Thanks for your mail, I'll answer soon.", None),
        ("back so soon", None),  # "so" is a word, not Sonntag
    ],
)
def test_return_dates(text: str, expected: date | None) -> None:
    assert return_date(text, REFERENCE) == expected


def test_return_dates_without_a_reference_need_a_year() -> None:
    assert return_date("back on December 15", None) is None
    assert return_date("back on December 15, 2025", None) == date(2025, 12, 15)
    assert return_date("back on Monday", None) is None
    assert return_date("back on 1999-01-01", None) is None


def test_the_quoted_original_gives_no_return_date() -> None:
    text = "Thanks, I am away.\n\nOn Mon, Dec 1, 2025, Sales wrote:\n> back on Dec 12 we said"
    assert return_date(new_text(text), REFERENCE) is None


# --- excerpts ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Thanks!\n\nOn Mon, Dec 1, 2025 at 9:00 AM Ada <ada@x.example> wrote:\n> Hi", "Thanks!"),
        (
            "Sounds good.\n\nOn Mon, Dec 1, 2025 at 9:00 AM Ada Lovelace <\n"
            "ada@x.example> wrote:\n> Hi",
            "Sounds good.",
        ),
        ("No.\n\n-----Original Message-----\nFrom: Ada\nSent: Monday\n\nHi", "No."),
        (
            "Call me.\n\nBob\n\nFrom: Ada <ada@x.example>\nSent: Monday, December 1\nTo: Bob\n\nHi",
            "Call me.\n\nBob",
        ),
        ("Yes please.\n\n-- \nBob Smith\nVP Sales", "Yes please."),
        ("Yes.\n\nSent from my iPhone\n\n> Hi", "Yes."),
        (
            "Ja, gerne.\n\nAm 01.12.2025 um 09:00 schrieb Ada <ada@x.example>:\n> Hallo",
            "Ja, gerne.",
        ),
        ("Oui.\n\nLe lun. 1 déc. 2025 à 09:00, Ada <ada@x.example> a écrit :\n> Bonjour", "Oui."),
        ("> Would you like a demo?\nYes!\n> Tuesday?\nNo, Wednesday.", "Yes!\nNo, Wednesday."),
        ("Ok\n________________________________\nFrom: Ada\nSent: Monday", "Ok"),
        ("fyi\n\n---------- Forwarded message ---------\nFrom: Ada", "fyi"),
        ("On Mon, Ada wrote:\n> Demo?\n\nYes, Tuesday.", "Yes, Tuesday."),  # all inline
        ("Hi Ada,\n\n\n\n\nplease remove me.\nBob", "Hi Ada,\n\nplease remove me.\nBob"),
        ("", ""),
    ],
)
def test_excerpts(text: str, expected: str) -> None:
    assert excerpt(text) == expected


def test_an_excerpt_is_cut_at_a_word() -> None:
    text = "word " * 500
    cut = excerpt(text)
    assert len(cut) <= EXCERPT_CHARS
    assert cut.endswith("word…")


def test_excerpts_of_hostile_text_are_bounded() -> None:
    for text in [" \n" * 50_000, ">" * 100_000, "-" * 100_000, "On x\n" * 20_000, "a" * 100_000]:
        assert len(excerpt(text)) <= EXCERPT_CHARS


# --- mail cut short: classified or refused, never a crash -------------------------------------


@pytest.mark.parametrize(
    "name",
    sorted(
        str(path.relative_to(STANDARD.parent))
        for path in STANDARD.parent.rglob("*")
        if path.suffix in (".eml", ".txt")
    ),
)
def test_a_sample_cut_anywhere_is_classified_or_refused(name: str) -> None:
    """Mail from the internet arrives truncated (a size limit, a dropped connection) and with
    stray bytes: every sample cut at 12 fixed points, raw, with bytes that decode as nothing
    appended, and with CRLF line ends, parses to a message or is refused with `InboundError`,
    and every parsed one gets a kind. A crash here would be a 500 on the inbound hook and a
    retried IMAP message."""
    raw = sample(name)
    step = max(1, len(raw) // 12)
    for cut in range(1, len(raw), step):
        for variant in (
            raw[:cut],
            raw[:cut] + b"\xff\xfe =?utf-8?q?=0D=0A?= \x00",
            raw[:cut].replace(b"\r\n", b"\n").replace(b"\n", b"\r\n"),
        ):
            try:
                parsed = parse(variant)
            except InboundError:
                continue
            assert classify(parsed, unsubscribe_addresses=UNSUBSCRIBE).kind in set(Kind), (
                name,
                cut,
            )
