"""Raw RFC 5322 bytes to an `InboundMessage`, or a `MessageRefused` naming why not.

`parse(raw)` is total over bytes: it returns a message or raises `MessageRefused` (the only
exception it raises on content; a non-bytes argument is a `TypeError`, a caller's bug). Every
input is mail from the internet, so every size is bounded (the constants below) and every step
is linear in the input, with two quadratic spots of the standard library fenced off before it
runs (see `MAX_PARAM_FIELD_BYTES`).

Why `email.policy.compat32` and not `policy.default` (measured here, Python 3.11.7, 2 cores):
compat32 keeps header values as the raw strings they were, and this module decodes the dozen
it needs itself, on bounded slices. `policy.default` builds a parsed header object on every
access and is 10 to 20 times slower on hostile headers: a Subject of 10,000 encoded words 5.1 s
(compat32's `decode_header` 0.4 s, ours below 1 ms after the 16 KB cut); a To of 10,000
addresses 4.2 s; a multipart with 100,000 parts took 35.8 s to parse against 1.3 s. Neither
policy survives deep nesting or nested comments in addresses (`RecursionError`): the nesting is
bounded here before parsing and addresses are read by `inbound._addresses`, not by
`email.utils.getaddresses`.

Refusals (`RefusalReason`), each with a detail for people that quotes no content:

- `empty`: no bytes, or only white space;
- `too_large`: more than `MAX_MESSAGE_BYTES`;
- `not_a_message`: the first line is not a header field (`Name: value`, the name made of
  letters, digits, `-`, `_`, `.`; an mbox `From ` line and a UTF-8 byte order mark before it
  are skipped);
- `headers_too_large`: the header section is longer than `MAX_HEADER_BYTES`;
- `header_too_long`: a `Content-Type`, `Content-Disposition`, `Original-Recipient` or
  `Final-Recipient` field (any part, any depth) is longer than `MAX_PARAM_FIELD_BYTES`;
- `too_many_parts`: more than `MAX_MIME_CONTAINERS` multipart/message containers are declared,
  a message with one has more than `MAX_DELIMITER_LINES` lines starting with `--`, or the
  parsed tree has more than `MAX_MIME_PARTS` parts;
- `too_deep`: parts nested deeper than `MAX_MIME_DEPTH`;
- `unparsable`: the standard library's parser failed in a way not foreseen above (a bug for us
  to fence off; the detail names the exception type only).

Tolerated, and recorded in `InboundMessage.defects` instead: malformed MIME (missing or wrong
boundaries, bad base64), missing or duplicated headers (the first one is used), unknown or
unsafe charsets (decoded as UTF-8 with replacement characters), NUL and other control bytes
(removed from every extracted string), raw UTF-8 in headers (RFC 6532), too many References
(trimmed), over-long Subject and body (cut).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import Message
from email.parser import BytesParser
from email.policy import compat32
from email.utils import collapse_rfc2231_value, parsedate_to_datetime
from enum import StrEnum

from inbound import _addresses, _text

MAX_MESSAGE_BYTES = 25_000_000
"""25 MB: what mailbox providers accept (Gmail and Microsoft 365 both cap a message at 25 MB of
encoded size); issue 19's upper bound. The HTTP source answers 413 above it."""
MAX_HEADER_BYTES = 1_048_576
"""1 MiB of header section: ten times Postfix's `header_size_limit` (100 KB), enough for 10,000
References (~500 KB); above it the message is refused."""
MAX_PARAM_FIELD_BYTES = 4_096
"""Longest `Content-Type`/`Content-Disposition`/`Original-Recipient`/`Final-Recipient` field.
The standard library parses their parameters in quadratic time (`email.message._parseparam`: a
300 KB value of quoted semicolons took 27 s to parse); at 4 KB the worst measured is ~5 ms. RFC
2231 continuations keep honest fields far shorter."""
MAX_MIME_CONTAINERS = 200
"""Declared multipart/* and message/* parts, counted in the raw bytes before parsing: the
parser recurses once per level, so nesting must be bounded before it runs."""
MAX_DELIMITER_LINES = 10_000
"""Lines starting with `--` (possible boundary delimiters) in a message that declares a
multipart: counted in the raw bytes before parsing, since the parser spends ~15 µs per part
(100,000 empty parts, 3.6 MB, took 1.5 s to parse before `MAX_MIME_PARTS` could refuse them)."""
MAX_MIME_DEPTH = 32
"""Deepest nesting of parts (the root is depth 0). Real mail rarely passes 6."""
MAX_MIME_PARTS = 1_000
"""Parts in the parsed tree; past it the walks that classification does would be unbounded."""
MAX_REFERENCES = 64
"""References kept: the first `REFERENCES_HEAD` (the thread's root) and the last ones (the
nearest parents), as RFC 5322 §3.6.4 asks of anyone trimming the field."""
REFERENCES_HEAD = 8
MAX_IN_REPLY_TO = 8
"""In-Reply-To may name several parents (RFC 5322 §3.6.4); more than a few is noise."""
MAX_RECIPIENTS = 100
"""Recipient addresses kept, over all the fields read (see `InboundMessage.recipients`)."""
MAX_SUBJECT_CHARS = 500
"""Decoded Subject, cut at this many characters."""
MAX_FIELD_CHARS = 200
"""Short fields kept as text (Auto-Submitted, Precedence, …), cut at this many characters."""
MAX_TEXT_CHARS = 100_000
"""The text body, cut at this many characters: an excerpt and a return date come from its
start."""
MAX_HEADER_VALUE_CHARS = 16_384
"""Any one header value is cut here before it is decoded (encoded-word bombs stop here)."""
MAX_PART_SOURCE_CHARS = 1_000_000
"""The encoded text part is cut here before transfer and charset decoding (1 MB of base64 is
750 KB of text, of HTML several times `MAX_TEXT_CHARS` of text)."""
MAX_DEFECTS = 32

_HEADERS_READ = frozenset(
    {
        "message-id",
        "in-reply-to",
        "references",
        "from",
        "sender",
        "to",
        "cc",
        "delivered-to",
        "x-original-to",
        "envelope-to",
        "x-envelope-to",
        "subject",
        "date",
        "auto-submitted",
        "x-autoreply",
        "x-autorespond",
        "precedence",
        "return-path",
    }
)
# Fields that must appear at most once (RFC 5322 §3.6, table): a second one is recorded.
_SINGLE_FIELDS = ("message-id", "in-reply-to", "references", "from", "subject", "date", "to")
# Where recipients are read, in this order: the MDA's record of the envelope first.
_RECIPIENT_FIELDS = ("delivered-to", "x-original-to", "envelope-to", "x-envelope-to", "to", "cc")


class RefusalReason(StrEnum):
    """Why `parse` refused the bytes; the values are stable (an API may return them)."""

    EMPTY = "empty"
    TOO_LARGE = "too_large"
    NOT_A_MESSAGE = "not_a_message"
    HEADERS_TOO_LARGE = "headers_too_large"
    HEADER_TOO_LONG = "header_too_long"
    TOO_MANY_PARTS = "too_many_parts"
    TOO_DEEP = "too_deep"
    UNPARSABLE = "unparsable"


class InboundError(Exception):
    """The root of every error `inbound/` raises on content."""


class MessageRefused(InboundError):
    """The bytes are not a message we read. `reason` is the `RefusalReason`; `detail` is for
    people and quotes no content of the message (sizes and limits only)."""

    def __init__(self, reason: RefusalReason, detail: str) -> None:
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class InboundMessage:
    """What `parse` read from one message; every string bounded and free of control characters.

    Addresses are normalised as suppressions compare them
    (`campaign_engine.unsubscribe.normalise_email`: NFC local part, Unicode domain, lower case),
    so a VERP token in a local part (`bounces+TOKEN@…`) must be case-insensitive.
    Message-IDs keep their case and read `<left@right>`.
    """

    size: int
    """Bytes given to `parse`."""
    message_id: str | None
    in_reply_to: tuple[str, ...]
    """At most `MAX_IN_REPLY_TO` ids."""
    references: tuple[str, ...]
    """At most `MAX_REFERENCES` ids: the first `REFERENCES_HEAD` and the last ones."""
    references_count: int
    """How many ids the References field held before trimming."""
    from_address: str | None
    """The first address of `From` (the first `From` field when there are several)."""
    recipients: tuple[str, ...]
    """Envelope recipients given to `parse`, then Delivered-To, X-Original-To, Envelope-To,
    X-Envelope-To, To and Cc, in that order, without duplicates, at most `MAX_RECIPIENTS`."""
    subject: str
    """Decoded (RFC 2047 encoded words, raw UTF-8), unfolded, at most `MAX_SUBJECT_CHARS`."""
    date: datetime | None
    """The Date field, timezone-aware (a zone-less date is taken as UTC); None if unreadable."""
    auto_submitted: str | None
    """The Auto-Submitted field's text (RFC 3834 §5), at most `MAX_FIELD_CHARS`."""
    x_autoreply: str | None
    x_autorespond: str | None
    precedence: str | None
    return_path: str | None
    """None: no Return-Path; "" the null path `<>` (RFC 5321 §4.5.5); else the address."""
    content_type: str
    """The top-level media type, lower case, e.g. `multipart/report`."""
    report_type: str | None
    """`report-type` of a top-level multipart/report (RFC 6522), lower case."""
    text: str
    """The body as text: the first text/plain part that is neither an attachment nor inside an
    attached message, else the first such text/html turned into text; LF line breaks, at most
    `MAX_TEXT_CHARS`."""
    defects: tuple[str, ...]
    """What was wrong but tolerated: the parser's defect class names and ours
    (`duplicate:<field>`, `unknown_charset`, `control_characters`, `references_trimmed`,
    `subject_cut`, `text_cut`, `several_from`), at most `MAX_DEFECTS`, in order."""
    mime: Message = field(repr=False, compare=False)
    """The parsed tree (compat32), for `inbound.classification`; not for storing."""


def parse(raw: bytes, *, envelope_recipients: Iterable[str] = ()) -> InboundMessage:
    """Read one RFC 5322 message (bytes as received; CRLF or LF line breaks).

    `envelope_recipients` are RCPT TO addresses a source knows (an inbound webhook's envelope);
    they come first in `recipients`. Raises `MessageRefused` (see the module docstring) and
    nothing else on any content; `TypeError` when `raw` is not bytes.
    """
    if not isinstance(raw, bytes | bytearray | memoryview):
        raise TypeError(f"parse() takes bytes, not {type(raw).__name__}")
    data = bytes(raw)
    size = len(data)
    if size > MAX_MESSAGE_BYTES:
        raise MessageRefused(
            RefusalReason.TOO_LARGE, f"{size} bytes, more than {MAX_MESSAGE_BYTES}"
        )
    if not data.strip():
        raise MessageRefused(RefusalReason.EMPTY, "no bytes" if not data else "only white space")
    data = _strip_preamble(data)
    _check_header_section(data)
    _check_param_fields(data)
    try:
        mime = BytesParser(policy=compat32).parsebytes(data)
    except RecursionError:
        raise MessageRefused(RefusalReason.TOO_DEEP, "nested too deep to parse") from None
    except Exception as error:  # the stdlib parser is not meant to raise: say so, and stay total
        raise MessageRefused(
            RefusalReason.UNPARSABLE, f"the parser failed ({type(error).__name__})"
        ) from None
    _check_tree(mime)
    defects = _Defects()
    for part, _depth, _attached in walk(mime):
        for defect in part.defects:
            defects.add(type(defect).__name__)
    return _read(mime, size, envelope_recipients, defects)


# A header field's first line: RFC 5322 §3.6.8 field-name (printable ASCII but colon), then
# a colon; white space before the colon is obsolete syntax (§4.5) the parser still accepts.
_FIELD_START = re.compile(rb"[\x21-\x39\x3b-\x7e]{1,998}[ \t]*:")
# The first line is held to the names mail software writes (letters, digits, `-`, `_`, `.`):
# RFC 5322 would take `{"from"` as a field name, and a JSON body is not a message.
_FIRST_FIELD = re.compile(rb"[A-Za-z0-9][A-Za-z0-9_.-]{0,76}[ \t]*:")
_HEADER_SECTION = re.compile(
    rb"(?:[\x21-\x39\x3b-\x7e]+[ \t]*:[^\r\n]*(?:\r\n|\r|\n)|[ \t][^\r\n]*(?:\r\n|\r|\n))*"
)


def _strip_preamble(data: bytes) -> bytes:
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    if data.startswith(b"From "):  # an mbox separator line (RFC 4155), not a header
        end = data.find(b"\n")
        data = b"" if end < 0 else data[end + 1 :]
    if not _FIRST_FIELD.match(data):
        raise MessageRefused(
            RefusalReason.NOT_A_MESSAGE, "the first line is not a header field (Name: value)"
        )
    return data


def _check_header_section(data: bytes) -> None:
    # The match stops at the blank line, at a line that is not a header field (the parser makes
    # that line the body's first, with a defect), or at a field line with no line break before
    # the limit: only the last case is over the limit.
    section = _HEADER_SECTION.match(data, 0, MAX_HEADER_BYTES + 1)
    end = section.end() if section is not None else 0
    if len(data) > MAX_HEADER_BYTES and (
        data[end : end + 1] in (b" ", b"\t") or _FIELD_START.match(data, end)
    ):
        raise MessageRefused(
            RefusalReason.HEADERS_TOO_LARGE, f"the header section passes {MAX_HEADER_BYTES} bytes"
        )


_PARAM_FIELD = re.compile(
    rb"(?<![^\r\n])(content-type|content-disposition|original-recipient|final-recipient)[ \t]*:",
    re.IGNORECASE,
)
_CONTAINER_TYPE = re.compile(rb"[ \t\r\n]*(multipart|message)/", re.IGNORECASE)


def _check_param_fields(data: bytes) -> None:
    """Bound what the parser will parse parameters of, anywhere in the message (a nested part's
    headers too): each field's length (continuation lines included), and how many parts declare
    a container type. A textual scan, so it may also count such lines in a text body: it over-
    counts, never under-counts. Linear: each field is scanned once, up to its end or the limit."""
    containers = 0
    length = len(data)
    for match in _PARAM_FIELD.finditer(data):
        start = match.end()
        stop = min(length, start + MAX_PARAM_FIELD_BYTES + 1)
        end: int | None = start
        while end is not None:
            line_end = _line_end(data, end, stop)
            if line_end is None or line_end >= length or data[line_end] not in b" \t":
                end = line_end
                break
            end = line_end
        if end is None or end - start > MAX_PARAM_FIELD_BYTES:
            name = match.group(1).decode("ascii").title()
            raise MessageRefused(
                RefusalReason.HEADER_TOO_LONG,
                f"a {name} field is longer than {MAX_PARAM_FIELD_BYTES} bytes",
            )
        if match.group(1).lower() == b"content-type" and _CONTAINER_TYPE.match(data, start, end):
            containers += 1
            if containers > MAX_MIME_CONTAINERS:
                raise MessageRefused(
                    RefusalReason.TOO_MANY_PARTS,
                    f"more than {MAX_MIME_CONTAINERS} multipart or message parts",
                )
    if containers and data.count(b"\n--") + data.count(b"\r--") > MAX_DELIMITER_LINES:
        raise MessageRefused(
            RefusalReason.TOO_MANY_PARTS,
            f"more than {MAX_DELIMITER_LINES} lines that may be MIME boundaries",
        )


def _line_end(data: bytes, position: int, stop: int) -> int | None:
    """The index just past the line break (CR, LF or CRLF: the parser accepts all three) at or
    after `position`, looking no further than `stop`; `len(data)` at the end of the data; None
    when the line goes on past `stop`."""
    newline = data.find(b"\n", position, stop)
    carriage = data.find(b"\r", position, stop if newline < 0 else newline)
    if carriage >= 0:
        return carriage + (2 if data[carriage + 1 : carriage + 2] == b"\n" else 1)
    if newline >= 0:
        return newline + 1
    return len(data) if stop >= len(data) else None


def walk(root: Message, *, max_depth: int = MAX_MIME_DEPTH) -> Iterator[tuple[Message, int, bool]]:
    """Every part of a parsed message in document order, iteratively (no recursion), as
    (part, depth, attached): depth 0 is the root; `attached` is True inside a message/* part
    (a forwarded or returned message, not the message's own content). Parts deeper than
    `max_depth` are not visited. message/delivery-status header blocks are not parts."""
    stack: list[tuple[Message, int, bool]] = [(root, 0, False)]
    while stack:
        part, depth, attached = stack.pop()
        yield part, depth, attached
        if depth >= max_depth or not part.is_multipart():
            continue
        maintype = part.get_content_maintype()
        subtype = part.get_content_subtype()
        if maintype == "message" and subtype == "delivery-status":
            continue
        children = raw_payload(part)
        if not isinstance(children, list):
            continue
        inside = attached or maintype == "message"
        stack.extend(
            (child, depth + 1, inside) for child in reversed(children) if isinstance(child, Message)
        )


def _check_tree(root: Message) -> None:
    for parts, (_part, depth, _attached) in enumerate(
        walk(root, max_depth=MAX_MIME_DEPTH + 1), start=1
    ):
        if depth > MAX_MIME_DEPTH:
            raise MessageRefused(
                RefusalReason.TOO_DEEP, f"parts nested more than {MAX_MIME_DEPTH} deep"
            )
        if parts > MAX_MIME_PARTS:
            raise MessageRefused(RefusalReason.TOO_MANY_PARTS, f"more than {MAX_MIME_PARTS} parts")


class _Defects:
    """An ordered, bounded set of defect names."""

    def __init__(self) -> None:
        self._names: dict[str, None] = {}

    def add(self, name: str) -> None:
        if len(self._names) < MAX_DEFECTS:
            self._names.setdefault(name, None)

    def as_tuple(self) -> tuple[str, ...]:
        return tuple(self._names)


# References are read whole (the header section bounds them): their last ids matter most.
_UNCUT_FIELDS = frozenset({"references"})


def header_fields(message: Message, names: frozenset[str]) -> dict[str, list[str]]:
    """The raw values of the named fields (lower-case names), in order, each back to text
    (`_text.header_str`) and cut at `MAX_HEADER_VALUE_CHARS` (References excepted); one pass
    over the headers."""
    fields: dict[str, list[str]] = {}
    for name, value in message.raw_items():
        key = name.strip().lower()
        if key in names:
            text = _text.header_str(value)
            if key not in _UNCUT_FIELDS:
                text = text[:MAX_HEADER_VALUE_CHARS]
            fields.setdefault(key, []).append(text)
    return fields


def field_text(value: str | None, limit: int, defects: _Defects | None = None) -> str | None:
    """A short unstructured field as one line of text: unfolded, encoded words decoded,
    control characters gone, white space collapsed, cut at `limit` characters."""
    if value is None:
        return None
    if defects is not None and _text.has_control(value):
        defects.add("control_characters")
    unfolded = _text.unfold(value)
    decoded, unknown = _text.decode_words(unfolded)
    if unknown and defects is not None:
        defects.add("unknown_charset")
    text = " ".join(_text.unfold(decoded).split())
    if len(text) > limit:
        if defects is not None:
            defects.add("subject_cut" if limit == MAX_SUBJECT_CHARS else "field_cut")
        text = text[:limit]
    return text


def _read(mime: Message, size: int, envelope: Iterable[str], defects: _Defects) -> InboundMessage:
    fields = header_fields(mime, _HEADERS_READ)
    for name in _SINGLE_FIELDS:
        if len(fields.get(name, ())) > 1:
            defects.add(f"duplicate:{name}")

    def first(name: str) -> str | None:
        values = fields.get(name)
        return values[0] if values else None

    message_id = _addresses.single_message_id(first("message-id") or "")
    in_reply_to, _ = _addresses.message_ids(
        first("in-reply-to") or "", head=MAX_IN_REPLY_TO, tail=0
    )
    references, references_count = _addresses.message_ids(
        first("references") or "",
        head=REFERENCES_HEAD,
        tail=MAX_REFERENCES - REFERENCES_HEAD,
    )
    if references_count > len(references):
        defects.add("references_trimmed")

    from_address, from_count, _ = _addresses.first_address(first("from") or "")
    if from_count > 1:
        defects.add("several_from")

    recipients: list[str] = []
    for address in envelope:
        found, _ = _addresses.address_list(address, limit=1)
        recipients.extend(a for a in found if a not in recipients)
    for name in _RECIPIENT_FIELDS:
        for value in fields.get(name, ()):
            if len(recipients) >= MAX_RECIPIENTS:
                break
            found, _ = _addresses.address_list(value, limit=MAX_RECIPIENTS)
            recipients.extend(a for a in found if a not in recipients)
    recipients = recipients[:MAX_RECIPIENTS]

    return_path: str | None = None
    raw_return_path = first("return-path")
    if raw_return_path is not None:
        path_address, _, null = _addresses.first_address(raw_return_path)
        return_path = "" if null and path_address is None else path_address

    text, text_defects = text_body(mime)
    for defect in text_defects:
        defects.add(defect)

    content_type = mime.get_content_type()
    report_type = None
    if content_type == "multipart/report":
        report_type = param_text(mime, "report-type")

    return InboundMessage(
        size=size,
        message_id=message_id,
        in_reply_to=tuple(in_reply_to),
        references=tuple(references),
        references_count=references_count,
        from_address=from_address,
        recipients=tuple(recipients),
        subject=field_text(first("subject"), MAX_SUBJECT_CHARS, defects) or "",
        date=_date(first("date")),
        auto_submitted=field_text(first("auto-submitted"), MAX_FIELD_CHARS, defects),
        x_autoreply=field_text(first("x-autoreply"), MAX_FIELD_CHARS, defects),
        x_autorespond=field_text(first("x-autorespond"), MAX_FIELD_CHARS, defects),
        precedence=field_text(first("precedence"), MAX_FIELD_CHARS, defects),
        return_path=return_path,
        content_type=content_type,
        report_type=report_type,
        text=text,
        defects=defects.as_tuple(),
        mime=mime,
    )


def _date(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        parsed = parsedate_to_datetime(_text.unfold(value)[:MAX_FIELD_CHARS])
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def text_body(mime: Message) -> tuple[str, list[str]]:
    """The message's own text (see `InboundMessage.text`) and the defects met reading it."""
    plain: Message | None = None
    markup: Message | None = None
    for part, _depth, attached in walk(mime):
        if attached or part.is_multipart():
            continue
        disposition = _text.header_str(part.get("content-disposition", "")).strip().lower()
        if disposition.startswith("attachment"):
            continue
        content_type = part.get_content_type()
        if content_type == "text/plain" and plain is None:
            plain = part
            break
        if content_type == "text/html" and markup is None:
            markup = part
    chosen = plain or markup
    if chosen is None:
        return "", []
    defects: list[str] = []
    text = part_text(chosen, defects)
    if chosen is markup:
        text = _text.html_to_text(text)
    text = _text.clean_text(text)
    if len(text) > MAX_TEXT_CHARS:
        defects.append("text_cut")
        text = text[:MAX_TEXT_CHARS]
    return text, defects


def param_text(part: Message, name: str) -> str | None:
    """A Content-Type parameter as lower-case text (RFC 2231 values collapsed), or None.
    `Message.get_content_charset` and `collapse_rfc2231_value` raise on some hostile values
    (a NUL in an RFC 2231 charset is a `ValueError`), hence this."""
    try:
        value = part.get_param(name)
        if value is None:
            return None
        text = collapse_rfc2231_value(value)
    except Exception:  # hostile parameter syntax: no value, rather than no message
        return None
    return _text.header_str(text).strip().strip("\"'").lower()[:MAX_FIELD_CHARS] or None


def raw_payload(part: Message) -> object:
    """The payload as the parser stored it: a list of parts, or the text (str, bytes as
    surrogate escapes). `get_payload()` decodes 8-bit text with the declared charset itself,
    raising on some (punycode, idna) and reading others twice: never called on parts here."""
    return getattr(part, "_payload", None)


def part_text(part: Message, defects: list[str]) -> str:
    """A leaf part's payload as text: cut at `MAX_PART_SOURCE_CHARS`, transfer-decoded,
    charset-decoded (unknown or unsafe charsets as UTF-8, with a defect recorded)."""
    payload = raw_payload(part)
    if not isinstance(payload, str):
        return ""
    encoding = part.get("content-transfer-encoding")
    decoded = _text.decode_transfer(
        payload[:MAX_PART_SOURCE_CHARS], _text.header_str(encoding) if encoding else None
    )
    text, unknown = _text.decode_bytes(decoded, param_text(part, "charset"))
    if unknown:
        defects.append("unknown_charset")
    if "\x00" in text:
        defects.append("control_characters")
    return text
