"""What an inbound message is — reply, auto-reply, bounce, complaint, unsubscribe — and why.

`classify(message)` returns a `Classification`: the `Kind` (the HTTP API's values), the
`Evidence` that decided it (the rule's name and its source, and the DSN status, diagnostic or
header behind it), the bounced or complained-of recipients and the original Message-ID found in
the returned message, and an out-of-office answer's return date. Pure: no I/O, no clock (the
caller passes `received_at`).

Rules, first match wins (each rule's function cites its source):

1. a delivery status notification (RFC 3464; a `message/delivery-status` part, normally in a
   `multipart/report; report-type=delivery-status`, RFC 6522): `hard_bounce` when a recipient's
   `Action: failed` has `Status: 5.x.x`, `soft_bounce` for `4.x.x` or `Action: delayed`,
   `unknown` when every recipient was delivered, relayed or expanded. It is a bounce even though
   it carries `Auto-Submitted` (RFC 3464 §2 asks DSNs to): bounce wins over auto-reply;
2. a feedback report (RFC 5965 ARF, `message/feedback-report`): `complaint` for
   `Feedback-Type` `abuse`, `fraud`, `other` or none; `unknown` for `not-spam`, `virus` and
   `auth-failure` (RFC 6591: an authentication failure report, not a complaint);
3. a message to one of `unsubscribe_addresses`, our `List-Unsubscribe` `mailto:` (RFC 2369
   §3.2; RFC 8058 is its one-click form): `unsubscribe`;
4. a non-standard bounce (from a mailer daemon or postmaster, or with a null return path, or a
   bounce subject, or any multipart/report): `flufl.bounce` (GNU Mailman's detectors) —
   permanent failures `hard_bounce`, temporary ones only `soft_bounce`; when it finds none and
   the sender or subject says bounce, the SMTP reply the bounce's own text quotes decides, by
   the rules of an answer at send time (`5.1.x` hard, other `5xx`/`4xx` soft: Gmail's and
   Outlook.com's plain-text bounces), and with none `unknown` (never a reply: listmonk#1334's
   lesson the other way round);
5. a read receipt (RFC 8098 MDN, `report-type=disposition-notification`): `auto_reply`;
6. automatic (RFC 3834): `Auto-Submitted` other than `no`, `X-Autoreply`, `X-Autorespond`,
   `Precedence: auto_reply|bulk|junk`, `Return-Path: <>`, or a subject that begins with an
   out-of-office prefix (`OUT_OF_OFFICE_PREFIXES`): `auto_reply`, with the return date when the
   text gives one (`inbound.outofoffice`);
7. anything else: `reply` (whether it comes from a lead is the matcher's business).

Evidence never holds an address: anything shaped like one in a diagnostic or a header is
replaced by `<address>`, so evidence may be stored and shown where addresses may not.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from datetime import date, datetime
from email.message import Message
from email.parser import HeaderParser
from email.policy import compat32
from enum import StrEnum

import flufl.bounce

from campaign_engine.unsubscribe import normalise_email
from inbound import _addresses, _text, outofoffice
from inbound.excerpt import new_text
from inbound.parsing import (
    MAX_FIELD_CHARS,
    InboundMessage,
    header_fields,
    part_text,
    raw_payload,
    walk,
)

# flufl.bounce logs each detector it runs at INFO and a failing detector's traceback at ERROR;
# a traceback may quote the message (addresses, text), which must never reach our logs. Its
# failures are recorded in the evidence instead (`supporting`), without content.
logging.getLogger("flufl.bounce").setLevel(logging.CRITICAL + 1)

FLUFL_BOUNCE = f"flufl.bounce {flufl.bounce.__version__}"
MAX_REPORT_RECIPIENTS = 100
"""Per-recipient blocks of a DSN read, and recipients reported."""
MAX_DIAGNOSTIC_CHARS = 300
MAX_RETURNED_HEADERS_CHARS = 65_536
"""A `text/rfc822-headers` part is read up to here: headers, not the returned body."""

OUT_OF_OFFICE_PREFIXES = (
    "automatic reply",
    "auto reply",
    "auto-reply",
    "autoreply",
    "auto response",
    "auto-response",
    "autoresponse",
    "out of office",
    "out of the office",
    "out of office reply",
    "automatische antwort",
    "abwesenheitsnotiz",
    "automatisch antwoord",
    "réponse automatique",
    "risposta automatica",
    "respuesta automática",
    "resposta automática",
    "autosvar",
    "automaattinen vastaus",
    "automatická odpověď",
    "automatyczna odpowiedź",
)
"""Subject prefixes (followed by `:`) that mail programs put on their automatic answers:
Outlook's "Automatic reply:" in its languages, Lotus Notes' "Abwesenheitsnotiz:", the
"Autosvar:" of Scandinavian clients, the generic forms. Decisive on their own."""
OUT_OF_OFFICE_PHRASES = (
    "out of office",
    "out of the office",
    "on vacation",
    "on holiday",
    "on leave",
    "away from the office",
    "abwesend",
    "urlaub",
    "absence",
    "vacances",
)
"""Phrases anywhere in a subject: supporting evidence only (a person may write them)."""
_PREFIX = re.compile(
    r"^\s*(?:" + "|".join(re.escape(p) for p in OUT_OF_OFFICE_PREFIXES) + r")\s*:", re.IGNORECASE
)
_PHRASE = re.compile(
    r"\b(?:" + "|".join(re.escape(p) for p in OUT_OF_OFFICE_PHRASES) + r")\b", re.IGNORECASE
)
_DAEMON = re.compile(
    r"^(?:mailer-?daemon|mail-?daemon|postmaster|mdaemon|mail[.-]?delivery[.-]?system)(?:@|$)",
    re.IGNORECASE,
)
_BOUNCE_SUBJECT = re.compile(
    r"\b(?:undeliver(?:able|ed)|delivery\s+(?:status\s+notification|failure|failed|has\s+failed"
    r"|problem|notification|report|error|delayed)|returned\s+mail|mail\s+delivery\s+"
    r"(?:failed|failure|problem|subsystem|system)|failure\s+(?:notice|delivery)|failed\s+mail"
    r"|non-?delivery|could\s+not\s+be\s+delivered|not\s+delivered|mail\s+(?:system\s+)?error"
    r"|returned\s+to\s+sender|delayed\s+mail|message\s+delayed|permanent\s+delivery\s+failure"
    r"|rejected\s+mail|nameserver\s+error|unzustellbar|nicht\s+zustellbar|non\s+remis"
    r"|delivery\s+warning|warning:\s+message)\b",
    re.IGNORECASE,
)
# An address, with the angle brackets around it if any, becomes `<address>`.
# A person's answer or forward (English, German, Nordic, Dutch, Italian, French, Spanish
# prefixes): its subject may name a delivery failure without being one.
_ANSWER_PREFIX = re.compile(
    r"^\s*(?:re|aw|fwd?|wg|sv|vs|antw|r|tr|rv|res)\s*(?:\[\d+\])?\s*:", re.IGNORECASE
)
_ADDRESS_LIKE = re.compile(r"<?[^\s<>\"'(),;:\[\]]+@[^\s<>\"'(),;:\[\]]+>?")
_STATUS = re.compile(r"^\s*([245])\.(\d{1,3})\.(\d{1,3})")
_STATUS_IN_TEXT = re.compile(r"\b([245])\.(\d{1,3})\.(\d{1,3})\b")
_REPLY_CODE = re.compile(r"\b([45])\d\d\b")
_RETURNED_HEADER_TYPES = frozenset(
    {"text/rfc822-headers", "message/rfc822-headers", "message/global-headers"}
)
_RETURNED_MESSAGE_TYPES = frozenset({"message/rfc822", "message/global"})
_MESSAGE_ID_LINE = re.compile(r"(?im)^[ \t>]*message-id:[ \t]*(<[^<>\s]{1,250}>)")
_DSN_FIELDS = frozenset(
    {"action", "status", "diagnostic-code", "original-recipient", "final-recipient"}
)
_ARF_FIELDS = frozenset({"feedback-type", "original-rcpt-to", "original-mail-from"})
_RETURNED_FIELDS = frozenset({"message-id", "to"})
_COMPLAINT_TYPES = frozenset({"abuse", "fraud", "other", ""})


class Kind(StrEnum):
    """What a message is; the values are the HTTP API's `classification`."""

    REPLY = "reply"
    AUTO_REPLY = "auto_reply"
    HARD_BOUNCE = "hard_bounce"
    SOFT_BOUNCE = "soft_bounce"
    COMPLAINT = "complaint"
    UNSUBSCRIBE = "unsubscribe"
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class Evidence:
    """What decided a classification: kept with a suppression so a person can see why (and lift
    it when it was wrong). No field holds an address (see the module docstring)."""

    rule: str
    """The rule's stable name, e.g. `dsn_permanent_failure`, `auto_submitted`."""
    source: str
    """The standard or library the rule follows, e.g. `RFC 3464 §2.3.3, §2.3.4; RFC 3463`."""
    header: str | None = None
    """The header that decided, as `Name: value` (value cut at 200 characters)."""
    action: str | None = None
    """A DSN's `Action` for the deciding recipient (`failed`, `delayed`, …)."""
    status: str | None = None
    """A DSN's `Status` (RFC 3463 enhanced code, e.g. `5.1.1`), or one found in the diagnostic,
    else the first word of a non-standard Status (`553`)."""
    diagnostic_code: str | None = None
    """A DSN's `Diagnostic-Code`, e.g. `smtp; 550 5.1.1 <address>: user unknown`, at most
    300 characters."""
    feedback_type: str | None = None
    """An ARF report's `Feedback-Type` (RFC 5965 §7.3), lower case."""
    supporting: tuple[str, ...] = ()
    """Other signals seen that agree or were considered (`Precedence: bulk`, `subject phrase:
    out of office`, `flufl.bounce failed: KeyError`)."""


@dataclass(frozen=True, slots=True)
class Classification:
    """The result of `classify`."""

    kind: Kind
    evidence: Evidence
    recipients: tuple[str, ...] = ()
    """Bounces and complaints: the original recipients that failed or complained, normalised as
    `InboundMessage` addresses, at most `MAX_REPORT_RECIPIENTS`. Empty otherwise."""
    original_message_id: str | None = None
    """Bounces and complaints: the Message-ID of the message we sent, from the returned
    message or headers part (or a `Message-ID:` line in a non-MIME bounce's text)."""
    original_mail_from: str | None = None
    """Complaints: the report's `Original-Mail-From` (our VERP envelope sender, when we sent
    with one)."""
    unsubscribe_address: str | None = None
    """Unsubscribes: the recipient that matched, with its `+tag` if it had one."""
    return_date: date | None = None
    """Auto-replies: the return date the text gives (`inbound.outofoffice`), else None."""


def classify(
    message: InboundMessage,
    *,
    unsubscribe_addresses: Collection[str] = frozenset(),
    received_at: datetime | None = None,
) -> Classification:
    """Classify a parsed message (rules in the module docstring). Never raises on content.

    `unsubscribe_addresses` are the `mailto:` addresses our `List-Unsubscribe` headers name; a
    recipient matches one exactly or once its `+tag` is removed (RFC 5233 subaddress), so a
    per-message `unsubscribe+TOKEN@…` matches `unsubscribe@…`. `received_at` is when the message
    arrived; it anchors return dates without a year (else the message's Date is used).
    """
    result = _report(message)
    if result is not None:
        return result
    result = _unsubscribe(message, unsubscribe_addresses)
    if result is not None:
        return result
    result = _non_standard_bounce(message)
    if result is not None:
        return result
    result = _read_receipt(message)
    if result is not None:
        return result
    result = _automatic(message, received_at)
    if result is not None:
        return result
    return Classification(
        Kind.REPLY, Evidence(rule="default", source="issue 19: anything else is a reply")
    )


# --- reports: RFC 3464 DSN, RFC 5965 ARF, RFC 8098 MDN ---------------------------------------


def _report(message: InboundMessage) -> Classification | None:
    """Machine-readable reports, found by their part types (RFC 6522 `multipart/report` wraps
    them; a few MTAs nest it in a multipart/mixed, so the message's own parts are searched)."""
    status_parts: list[Message] = []
    feedback_parts: list[Message] = []
    for part, _depth, attached in walk(message.mime):
        if attached:
            continue
        content_type = part.get_content_type()
        if content_type in ("message/delivery-status", "message/global-delivery-status"):
            status_parts.append(part)
        elif content_type == "message/feedback-report":
            feedback_parts.append(part)
    if feedback_parts or message.report_type == "feedback-report":
        return _feedback_report(message, feedback_parts)
    if status_parts:
        return _delivery_status(message, status_parts)
    return None


def _read_receipt(message: InboundMessage) -> Classification | None:
    """RFC 8098: a message disposition notification (`report-type=disposition-notification`) is
    sent by a program, never by the person: an automatic answer. Checked after the
    bounce detectors, since some servers reject mail with an MDN (`Automatically rejected
    mail`, flufl.bounce's simple_38 sample)."""
    if message.report_type != "disposition-notification":
        return None
    return Classification(
        Kind.AUTO_REPLY,
        Evidence(
            rule="read_receipt",
            source="RFC 8098 (message disposition notification); RFC 3834 §5",
            header="Content-Type: multipart/report; report-type=disposition-notification",
        ),
    )


@dataclass(frozen=True, slots=True)
class _Recipient:
    address: str | None
    action: str
    status: str | None
    diagnostic: str | None
    outcome: str  # "permanent", "temporary", "success", "unknown"


def _delivery_status(message: InboundMessage, parts: list[Message]) -> Classification | None:
    """RFC 3464 §2.3: one block per recipient. §2.3.3 `Action` (`failed`, `delayed`,
    `delivered`, `relayed`, `expanded`), §2.3.4 `Status`, whose first digit is RFC 3463's class:
    5 permanent failure (hard), 4 persistent transient failure (soft). `Action: error`
    (OpenSMTPD) and `failure` are read as failed, as flufl.bounce does. A failed action without
    a usable Status takes the class of an enhanced or basic code in the `Diagnostic-Code`
    (RFC 3464 §2.3.6), else is permanent: `failed` means the MTA gave up."""
    recipients: list[_Recipient] = []
    for part in parts:
        for block in _status_blocks(part):
            recipient = _recipient(block)
            if recipient is not None:
                recipients.append(recipient)
            if len(recipients) >= MAX_REPORT_RECIPIENTS:
                break
    if not recipients:
        return None  # a report with no recipient block: leave it to flufl.bounce's detectors
    returned = _returned(message)
    for outcome, kind, rule, meaning in (
        ("permanent", Kind.HARD_BOUNCE, "dsn_permanent_failure", "class 5: permanent failure"),
        ("temporary", Kind.SOFT_BOUNCE, "dsn_temporary_failure", "class 4: transient failure"),
    ):
        chosen = [r for r in recipients if r.outcome == outcome]
        if not chosen:
            continue
        first = chosen[0]
        return Classification(
            kind,
            Evidence(
                rule=rule,
                source=f"RFC 3464 §2.3.3 (Action), §2.3.4 (Status); RFC 3463 {meaning}",
                action=first.action,
                status=first.status,
                diagnostic_code=first.diagnostic,
                supporting=_automatic_signals(message),
            ),
            recipients=_unique(r.address for r in chosen),
            original_message_id=returned.message_id,
        )
    return Classification(
        Kind.UNKNOWN,
        Evidence(
            rule="dsn_without_failure",
            source="RFC 3464 §2.3.3: delivered, relayed or expanded is not a failure",
            action=recipients[0].action,
            status=recipients[0].status,
        ),
        original_message_id=returned.message_id,
    )


def _status_blocks(part: Message) -> list[Message]:
    """The header blocks of a delivery-status part: compat32 parses them into a list of
    messages; a part it kept as text (an encoded or mislabelled one) is split here."""
    payload = raw_payload(part)
    if isinstance(payload, list):
        return [
            block for block in payload[: MAX_REPORT_RECIPIENTS + 1] if isinstance(block, Message)
        ]
    text = part_text(part, [])[:MAX_RETURNED_HEADERS_CHARS]
    chunks = re.split(r"\n[ \t]*\n", _text.clean_text(text))
    return [HeaderParser(policy=compat32).parsestr(c) for c in chunks[: MAX_REPORT_RECIPIENTS + 1]]


def _recipient(block: Message) -> _Recipient | None:
    fields = header_fields(block, _DSN_FIELDS)

    def value(name: str) -> str | None:
        values = fields.get(name)
        return " ".join(_text.unfold(values[0]).split()) if values else None

    action_text = value("action")
    status_text = value("status")
    if action_text is None and status_text is None:
        return None  # the per-message block (Reporting-MTA, Arrival-Date…)
    action = (action_text or "").split("(")[0].strip().lower()[:40]
    status_match = _STATUS.match(status_text or "")
    status = ".".join(status_match.groups()) if status_match else None
    diagnostic_text = value("diagnostic-code")
    diagnostic = _redact(diagnostic_text[:MAX_DIAGNOSTIC_CHARS]) if diagnostic_text else None
    # Without an enhanced code in Status (seen: `Status: 553 Exceeded maximum…`), the class comes
    # from an enhanced code in the diagnostic, else from a basic reply code in either.
    if status is None and diagnostic_text:
        found = _STATUS_IN_TEXT.search(diagnostic_text)
        if found:
            status = ".".join(found.groups())
    klass = status[0] if status else None
    if klass is None:
        code = _REPLY_CODE.search(f"{status_text or ''} {diagnostic_text or ''}")
        klass = code.group(1) if code else None
    if action.startswith(("fail", "error")):
        outcome = "temporary" if klass == "4" else "permanent"
    elif action.startswith("delayed"):
        outcome = "temporary"
    elif action.startswith(("delivered", "relayed", "expanded")):
        outcome = "success"
    elif klass == "5":
        outcome = "permanent"
    elif klass == "4":
        outcome = "temporary"
    else:
        outcome = "unknown"
    address = _dsn_address(value("original-recipient")) or _dsn_address(value("final-recipient"))
    if status is None and status_text:
        status = status_text.split()[0][:40]  # not an enhanced code, but what the MTA said
    return _Recipient(address, action or "(none)", status, diagnostic, outcome)


def _dsn_address(value: str | None) -> str | None:
    """`rfc822;addr` or `utf-8;addr` (RFC 3464 §2.3.1, §2.3.2, RFC 6533); a bare or bracketed
    address without a type is accepted too (seen in the wild)."""
    if not value:
        return None
    _, _, address = value.rpartition(";")
    found, _ = _addresses.address_list(address.strip(), limit=1)
    return found[0] if found else None


def _feedback_report(message: InboundMessage, parts: list[Message]) -> Classification:
    """RFC 5965 §3: the second part's fields (§3.1 `Feedback-Type`, §3.2 `Original-Rcpt-To`,
    `Original-Mail-From`), the third part the reported message or its headers. Feedback types
    (§7.3 registry): abuse, fraud, other complain of our mail; not-spam undoes a complaint;
    virus says nothing of us; auth-failure is an RFC 6591 authentication failure report."""
    fields: dict[str, list[str]] = {}
    for part in parts:
        for name, values in _report_fields(part, _ARF_FIELDS).items():
            fields.setdefault(name, []).extend(values)
    feedback_type = " ".join(fields.get("feedback-type", [""])[0].split()).lower()[:40]
    returned = _returned(message)
    recipients: list[str] = []
    for value in fields.get("original-rcpt-to", [])[:MAX_REPORT_RECIPIENTS]:
        found, _ = _addresses.address_list(value, limit=1)
        recipients.extend(found)
    source = f"RFC 5965 §3, §7.3 (Feedback-Type {feedback_type or 'absent'})"
    mail_from_values = fields.get("original-mail-from")
    mail_from = None
    if mail_from_values:
        mail_from, _, _ = _addresses.first_address(mail_from_values[0])
    if feedback_type not in _COMPLAINT_TYPES:
        return Classification(
            Kind.UNKNOWN,
            Evidence(
                rule="feedback_report_not_a_complaint",
                source=source + ("; RFC 6591" if feedback_type == "auth-failure" else ""),
                feedback_type=feedback_type,
            ),
            original_message_id=returned.message_id,
        )
    return Classification(
        Kind.COMPLAINT,
        Evidence(rule="feedback_report", source=source, feedback_type=feedback_type or None),
        recipients=_unique(recipients or returned.to),
        original_message_id=returned.message_id,
        original_mail_from=mail_from,
    )


def _report_fields(part: Message, names: frozenset[str]) -> dict[str, list[str]]:
    """A report part's fields: compat32 parses `message/*` parts into a sub-message whose
    headers are the fields; a part kept as text is parsed here."""
    payload = raw_payload(part)
    if isinstance(payload, list):
        blocks = [b for b in payload[:4] if isinstance(b, Message)]
    else:
        text = _text.clean_text(part_text(part, [])[:MAX_RETURNED_HEADERS_CHARS])
        blocks = [HeaderParser(policy=compat32).parsestr(text)]
    fields: dict[str, list[str]] = {}
    for block in blocks:
        for name, values in header_fields(block, names).items():
            fields.setdefault(name, []).extend(values)
    return fields


@dataclass(frozen=True, slots=True)
class _Returned:
    message_id: str | None
    to: list[str]


def _returned(message: InboundMessage) -> _Returned:
    """The Message-ID and To of the message we sent, from the report's returned part:
    `message/rfc822` (RFC 3464 §2, RFC 5965 §2) or `text/rfc822-headers` (RFC 6522 §4), or their
    internationalised forms (RFC 6533). Without one, a `Message-ID:` line quoted in the text of
    a non-MIME bounce."""
    for part, _depth, attached in walk(message.mime):
        content_type = part.get_content_type()
        fields: dict[str, list[str]] | None = None
        if content_type in _RETURNED_MESSAGE_TYPES and not attached:
            payload = raw_payload(part)
            if isinstance(payload, list) and payload and isinstance(payload[0], Message):
                fields = header_fields(payload[0], _RETURNED_FIELDS)
        elif content_type in _RETURNED_HEADER_TYPES and not attached:
            text = part_text(part, [])[:MAX_RETURNED_HEADERS_CHARS]
            headers = HeaderParser(policy=compat32).parsestr(_text.clean_text(text))
            fields = header_fields(headers, _RETURNED_FIELDS)
        if fields is None:
            continue
        message_id = _addresses.single_message_id(fields.get("message-id", [""])[0])
        to, _ = _addresses.address_list(fields.get("to", [""])[0], limit=MAX_REPORT_RECIPIENTS)
        if message_id is not None or to:
            return _Returned(message_id, to)
    found = _MESSAGE_ID_LINE.search(_bounce_text(message))
    return _Returned(found.group(1) if found else None, [])


def _bounce_text(message: InboundMessage) -> str:
    """The text of every leaf part the message itself holds (a non-MIME bounce appends the
    original's headers to its text), bounded."""
    chunks: list[str] = []
    size = 0
    for part, _depth, _attached in walk(message.mime):
        if part.is_multipart() or part.get_content_maintype() != "text":
            continue
        chunk = part_text(part, [])[:MAX_RETURNED_HEADERS_CHARS]
        chunks.append(chunk)
        size += len(chunk)
        if size >= 4 * MAX_RETURNED_HEADERS_CHARS:
            break
    return _text.clean_text("\n".join(chunks))


# --- unsubscribe: RFC 2369 List-Unsubscribe mailto ------------------------------------------


def _unsubscribe(message: InboundMessage, addresses: Collection[str]) -> Classification | None:
    """RFC 2369 §3.2: `List-Unsubscribe: <mailto:…>` names a mailbox; a message to it asks to
    unsubscribe (RFC 8058 §3.1 describes the one-click POST beside it). Sub-addresses (RFC 5233
    `local+tag@domain`) match their base address, so a per-message token may ride in the tag."""
    if not addresses:
        return None
    wanted = {normalise_email(a) for a in addresses}
    for recipient in message.recipients:
        local, at, domain = recipient.rpartition("@")
        base = f"{local.split('+', 1)[0]}@{domain}" if at else recipient
        if recipient in wanted or base in wanted:
            return Classification(
                Kind.UNSUBSCRIBE,
                Evidence(
                    rule="list_unsubscribe_mailto",
                    source="RFC 2369 §3.2 (List-Unsubscribe mailto); RFC 8058; RFC 5233",
                    supporting=_automatic_signals(message),
                ),
                unsubscribe_address=recipient,
            )
    return None


# --- non-standard bounces: flufl.bounce -----------------------------------------------------


def _looks_like_bounce(message: InboundMessage) -> tuple[bool, bool]:
    """(worth scanning, strongly a bounce). Scanned: mail from a mailer daemon or postmaster
    (RFC 5321 §4.5.5 null sender, RFC 5321 §4.5.1 postmaster), a null or daemon return path,
    a subject bounce software writes (not after `Re:`, `AW:`, `Fwd:`…: a person's answer), a
    multipart/report. Strong: the sender or the subject, which no person writes to us by
    chance."""
    daemon = bool(message.from_address and _DAEMON.match(message.from_address))
    daemon_path = message.return_path == "" or bool(
        message.return_path and _DAEMON.match(message.return_path)
    )
    subject = bool(_BOUNCE_SUBJECT.search(message.subject)) and not _ANSWER_PREFIX.match(
        message.subject
    )
    report = message.content_type == "multipart/report"
    return daemon or daemon_path or subject or report, daemon or subject


def _non_standard_bounce(message: InboundMessage) -> Classification | None:
    """flufl.bounce's detectors (GNU Mailman's, Apache-2.0), run in order from the DSN reader to
    provider formats (Exim, Postfix, qmail, Exchange, Yahoo, …) and generic text patterns; the
    first that finds anything decides. Permanent failures are hard bounces; temporary only,
    soft. Run only on mail that looks like a bounce (`_looks_like_bounce`): its text patterns
    would read a person's reply that quotes a bounce as one."""
    scanned, strong = _looks_like_bounce(message)
    if not scanned:
        return None
    supporting: list[str] = []
    try:
        temporary, permanent = flufl.bounce.all_failures(message.mime)
    except Exception as error:  # its detectors are heuristics over hostile text; stay total
        temporary, permanent = frozenset(), frozenset()
        supporting.append(f"flufl.bounce failed: {type(error).__name__}")
    supporting.extend(_automatic_signals(message))
    for found, kind, rule in (
        (permanent, Kind.HARD_BOUNCE, "flufl_bounce_permanent"),
        (temporary, Kind.SOFT_BOUNCE, "flufl_bounce_temporary"),
    ):
        recipients = _flufl_addresses(found)
        if recipients:
            return Classification(
                kind,
                Evidence(rule=rule, source=FLUFL_BOUNCE, supporting=tuple(supporting)),
                recipients=recipients,
                original_message_id=_returned(message).message_id,
            )
    if strong:
        from_text = _status_in_bounce_text(message, supporting)
        if from_text is not None:
            return from_text
        return Classification(
            Kind.UNKNOWN,
            Evidence(
                rule="bounce_without_recipient",
                source=f"{FLUFL_BOUNCE} found no failed recipient in a mailer daemon's message",
                supporting=tuple(supporting),
            ),
            original_message_id=_returned(message).message_id,
        )
    return None


# Where a non-MIME bounce's own text ends and the copy of the original begins (Gmail, Outlook,
# Exim, Postfix, qmail and Yahoo write one of these): addresses below it are the original's.
_ORIGINAL_MARKER = re.compile(
    r"^[-\s]*(?:original\s+message|original\s+headers|below\s+this\s+line\s+is\s+a\s+copy"
    r"|this\s+is\s+a\s+copy\s+of\s+the\s+message|message\s+headers\s+follow"
    r"|original\s+message\s+headers)",
    re.IGNORECASE | re.MULTILINE,
)
# An SMTP reply at a line's start or after `said:`, `was:`, `returned` or `:`, quoted or not:
# its code and, when there is one, its enhanced status (RFC 5321 §4.2, RFC 3463).
_TEXT_REPLY = re.compile(
    r"(?:^|said:|was:|returned|:)\s*['\"(]?([45]\d\d)(?:[\s-]+([45])\.(\d{1,3})\.(\d{1,3}))?\b",
    re.IGNORECASE | re.MULTILINE,
)
_TEXT_HARD_CODES = frozenset({"550", "551", "553"})
_SENDER_STATUSES = frozenset({"5.1.7", "5.1.8"})


def _status_in_bounce_text(message: InboundMessage, supporting: list[str]) -> Classification | None:
    """A mailer daemon's plain-text bounce that flufl.bounce's detectors do not know (Gmail's
    "Address not found … 550 5.1.1", Outlook.com's, Yahoo's): the SMTP reply the text quotes
    decides, with `inbound.smtp_replies`' rules for an answer at send time — `5.1.x` (not
    `5.1.7`/`5.1.8`, which are about our sender), or `550`/`551`/`553` without an enhanced
    status, is a hard bounce; any other `5xx` (a policy block, a full mailbox) or `4xx` a soft
    one, never a suppression. Recipients are the addresses the bounce's own text names (above
    the copy of the original), less the daemon's and the message's own addressees; with none
    and no returned Message-ID nothing can be matched, and None is returned."""
    text = _bounce_text(message)
    marker = _ORIGINAL_MARKER.search(text)
    own_text = text[: marker.start()] if marker else text
    reply = _TEXT_REPLY.search(own_text)
    if reply is None:
        return None
    code, *enhanced = reply.groups()
    status = ".".join(enhanced) if enhanced[0] else None
    if status is not None and status[0] != code[0]:
        status = None  # `550 4.4.7` contradicts itself: the reply code decides
    if status is not None:
        hard = status.startswith("5.1.") and status not in _SENDER_STATUSES
    else:
        hard = code in _TEXT_HARD_CODES
    ours = {
        address.lower()
        for address in (message.from_address, message.return_path, *message.recipients)
        if address
    }
    candidates = [
        found.strip("<>").rstrip(".,;:!?'\")]").lower()
        for found in _ADDRESS_LIKE.findall(own_text[: reply.start()])
    ]
    recipients = _unique(
        address
        for candidate in candidates
        for address in _addresses.address_list(candidate, limit=1)[0]
        if address.lower() not in ours
    )[:MAX_REPORT_RECIPIENTS]
    original = _returned(message).message_id
    if not recipients and original is None:
        return None
    line_end = own_text.find("\n", reply.start(1))
    diagnostic = own_text[reply.start(1) : line_end if line_end > 0 else None]
    return Classification(
        Kind.HARD_BOUNCE if hard else Kind.SOFT_BOUNCE,
        Evidence(
            rule="bounce_text_status",
            source="RFC 5321 §4.2 reply code and RFC 3463 status in a mailer daemon's text "
            "(the rules of an answer at send time: inbound.smtp_replies)",
            action="failed" if code[0] == "5" else "delayed",
            status=status or code,
            diagnostic_code=_redact(" ".join(diagnostic.split()))[:300],
            supporting=tuple(supporting),
        ),
        recipients=recipients,
        original_message_id=original,
    )


def _flufl_addresses(found: frozenset[bytes]) -> tuple[str, ...]:
    addresses: list[str] = []
    for raw in sorted(found)[:MAX_REPORT_RECIPIENTS]:
        text = raw.decode("utf-8", "replace")
        parsed, _ = _addresses.address_list(text, limit=1)
        addresses.extend(parsed)
    return _unique(addresses)


# --- automatic answers: RFC 3834 -----------------------------------------------------------


def _automatic(message: InboundMessage, received_at: datetime | None) -> Classification | None:
    """RFC 3834 §5: `Auto-Submitted` other than `no` marks a message sent by a program.
    De-facto headers that vacation programs set: `X-Autoreply`, `X-Autorespond` (any value but
    `no`). RFC 3834 §2 names `Precedence: bulk`, `junk` (and `list`) as signs of automatic mail
    (RFC 2076 §3.9 describes the field); `auto_reply` is the value some responders write.
    RFC 3834 §3 (and RFC 5321 §4.5.5 for notifications) send responses with a null return
    path: `Return-Path: <>` on a message that is not a DSN. Last, an out-of-office subject
    prefix (`OUT_OF_OFFICE_PREFIXES`). The first of these decides; the others and subject
    phrases (`OUT_OF_OFFICE_PHRASES`) are kept as supporting evidence."""
    signals = _automatic_signals(message)
    if not signals:
        return None
    decided, *others = signals
    rule, source = _AUTOMATIC_RULES[decided.split(":", 1)[0]]
    reference = received_at or message.date
    return Classification(
        Kind.AUTO_REPLY,
        Evidence(rule=rule, source=source, header=decided, supporting=tuple(others)),
        return_date=outofoffice.return_date(
            new_text(message.text) or message.text, reference.date() if reference else None
        ),
    )


_AUTOMATIC_RULES = {
    "Auto-Submitted": ("auto_submitted", "RFC 3834 §5"),
    "X-Autoreply": ("x_autoreply", "de-facto vacation responder header"),
    "X-Autorespond": ("x_autorespond", "de-facto vacation responder header"),
    "Precedence": ("precedence", "RFC 3834 §2; RFC 2076 §3.9"),
    "Return-Path": ("null_return_path", "RFC 3834 §3; RFC 5321 §4.5.5"),
    "Subject": ("out_of_office_subject", "mail programs' out-of-office subject prefixes"),
}


def _automatic_signals(message: InboundMessage) -> tuple[str, ...]:
    """Every RFC 3834-style signal the message carries, decisive ones first, as short
    `Name: value` strings (no addresses)."""
    signals: list[str] = []
    auto_submitted = _token(message.auto_submitted)
    if auto_submitted and auto_submitted != "no":
        signals.append(f"Auto-Submitted: {_evidence_value(message.auto_submitted)}")
    for name, value in (
        ("X-Autoreply", message.x_autoreply),
        ("X-Autorespond", message.x_autorespond),
    ):
        if value is not None and _token(value) != "no":
            signals.append(f"{name}: {_evidence_value(value)}")
    if _token(message.precedence) in ("auto_reply", "bulk", "junk"):
        signals.append(f"Precedence: {_evidence_value(message.precedence)}")
    if message.return_path == "":
        signals.append("Return-Path: <>")
    if _PREFIX.match(message.subject):
        signals.append(f"Subject: {_evidence_value(message.subject)}")
    elif phrase := _PHRASE.search(message.subject):
        signals.append(f"subject phrase: {phrase.group(0).lower()}")
    if signals and signals[0].startswith("subject phrase"):
        return ()  # a phrase alone decides nothing
    return tuple(signals)


def _token(value: str | None) -> str:
    """The first word of a field, lower case, without comments or parameters
    (`auto-replied (vacation); owner-email=…` → `auto-replied`)."""
    if not value:
        return ""
    return re.split(r"[\s;(]", value.strip(), maxsplit=1)[0].lower()


def _evidence_value(value: str | None) -> str:
    return _redact((value or "")[:MAX_FIELD_CHARS])


def _redact(text: str) -> str:
    return _ADDRESS_LIKE.sub("<address>", text)


def _unique(addresses: Iterable[str | None]) -> tuple[str, ...]:
    seen: dict[str, None] = {}
    for address in addresses:
        if address and address not in seen and len(seen) < MAX_REPORT_RECIPIENTS:
            seen[address] = None
    return tuple(seen)
