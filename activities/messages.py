"""Outgoing messages, with every header built from text and never parsed out of it.

The `email` package's default policy parses a string assigned to a header; on the Python 3.11
patch level we run, it decodes RFC 2047 encoded words found in that string while doing so, so a
lead named `=?utf-8?q?Ada=0D=0AReply-To:_x@evil.test?=` became a `Reply-To` header line. Here each
header value is encoded by us from its parts (RFC 5322 §2.2 header fields, RFC 2047 encoded words,
RFC 6532 UTF-8 headers) into a `BuiltHeader`, which the `email` package stores and writes out as
it is (`EmailPolicy.header_store_parse` and `fold` pass objects with a `name` through).

What a mail reader decodes from the sent bytes is exactly the text given here, after the
single-line rule of `single_line`: the subject a reviewer approves is the subject that arrives.
"""

from __future__ import annotations

import base64
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from email.header import Header
from email.message import EmailMessage
from email.policy import SMTP, SMTPUTF8, Policy
from email.utils import formatdate
from typing import Any

import dkim

from campaign_engine.addresses import MAX_ENCODED_DISPLAY_NAME_OCTETS, MailAddress, Mailbox

MAX_LINE_OCTETS = 78
"""RFC 5322 §2.1.1: lines SHOULD be at most 78 characters (and MUST be at most 998)."""
# A word that cannot be folded still leaves its line under RFC 5322's hard limit of 998.
_MAX_WORD_OCTETS = 900
# Printable ASCII but `=?`: text a reader shows as is. Anything else goes out as encoded words.
_PLAIN = re.compile(r"^[\x20-\x7e]*$")
# RFC 5322 §3.2.3 atext (plus the spaces between atoms): a display name that needs no quoting.
_ATOMS = re.compile(r"^[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~ ]*$")
_SURROGATE = re.compile(r"[\ud800-\udfff]")
# 7-bit messages carry non-ASCII bodies as quoted-printable or base64, so no server needs
# 8BITMIME; SMTPUTF8 (RFC 6531) implies 8BITMIME, so UTF-8 messages may use 8bit.
_ASCII_POLICY: Policy = SMTP.clone(cte_type="7bit")
_UTF8_POLICY: Policy = SMTPUTF8


class CompositionError(ValueError):
    """The message cannot be built from this data; retrying cannot change that."""


def single_line(text: str) -> str:
    """The one-line form of header text (the subject, a display name).

    Every run of Unicode whitespace (spaces, tabs, CR, LF, U+0085, U+2028, ...) becomes one space
    and the ends are trimmed; other control characters (Unicode `Cc`, e.g. NUL) are dropped;
    unpaired surrogates become U+FFFD. Idempotent. The drafting activity applies it, so the
    reviewer sees exactly the subject that is sent.
    """
    text = _SURROGATE.sub("\ufffd", text)
    text = "".join(c for c in text if c.isspace() or unicodedata.category(c) != "Cc")
    return " ".join(text.split())


REPLY_PREFIX = "Re: "
"""What a reply's subject starts with (RFC 5322 §3.6.5: the Latin "in re")."""
# A subject that already reads as a reply: `Re:`, `RE :`, `re:` (mail readers compare without
# case; RFC 5322 §3.6.5 asks for one `Re: ` only, never `Re: Re: `).
_ALREADY_A_REPLY = re.compile(r"re\s*:", re.IGNORECASE)


def reply_subject(subject: str) -> str:
    """The subject of a reply to a message whose subject was `subject` (RFC 5322 §3.6.5):
    `Re: ` and that subject, in its one-line form (`single_line`); a subject that already
    starts with `Re:` (any case, spaces before the colon) is kept as it is, so a thread never
    reads `Re: Re: …`. Idempotent, and what `unstructured` sends for it is itself.
    """
    text = single_line(subject)
    if _ALREADY_A_REPLY.match(text):
        return text
    return single_line(REPLY_PREFIX + text)


def body_text(text: str) -> str:
    """The body as it can be sent: unpaired surrogates (which UTF-8 cannot carry) become U+FFFD.
    Idempotent; the drafting activity applies it, so the reviewer sees the body that is sent."""
    return _SURROGATE.sub("\ufffd", text)


class BuiltHeader(str):
    """A header encoded here. `str()` is the decoded text; `fold()` returns the wire lines.

    The `email` package keeps an object that has a `name` as it is (no parsing) and writes it
    with its `fold(policy=...)`, per the `email.policy.EmailPolicy` documentation.
    """

    name: str
    lines: tuple[str, ...]

    def __new__(cls, name: str, decoded: str, lines: list[str]) -> BuiltHeader:
        """Header `name` reading `decoded`; `lines` are its wire lines after `Name: `, without
        the folding space and the line ends (as `fold` writes them)."""
        header = super().__new__(cls, decoded)
        header.name = name
        header.lines = tuple(lines)
        return header

    def fold(self, *, policy: Policy) -> str:
        """`Name: first line` and its continuation lines, each ended by the policy's linesep."""
        return f"{self.name}: " + "".join(line + policy.linesep for line in self._joined())

    def _joined(self) -> list[str]:
        # Continuation lines start with a space (RFC 5322 §2.2.3 folding white space).
        return [self.lines[0], *(f" {line}" for line in self.lines[1:])]


def unstructured(name: str, text: str) -> BuiltHeader:
    """An unstructured header (RFC 5322 §3.2.5, e.g. Subject) that decodes to `single_line(text)`.

    Printable ASCII without `=?` goes out as it is, folded at spaces; anything else, and words too
    long to fold, as UTF-8 encoded words (RFC 2047 §2, at most 75 characters each), so `=?` in the
    data is itself encoded and decodes back to the literal text.
    """
    text = single_line(text)
    budget = MAX_LINE_OCTETS - len(name) - 2
    if _is_plain(text) and all(len(word) <= budget for word in text.split(" ")):
        return BuiltHeader(name, text, _fold_words(text.split(" "), first=budget))
    return BuiltHeader(name, text, _encoded_words(name, text))


def address_header(name: str, address: MailAddress) -> BuiltHeader:
    """A header of one bare address (`To`): the addr-spec with the domain's A-labels.

    A non-ASCII local part is written as UTF-8 (RFC 6532 §3.2): the message must then be sent
    with SMTPUTF8 and written with a UTF-8 policy (`OutgoingMessage` does both).
    """
    return BuiltHeader(name, address.wire, [address.wire])


def mailbox_header(name: str, mailbox: Mailbox) -> BuiltHeader:
    """A header of one `name-addr` (RFC 5322 §3.4, e.g. From) that decodes to that display name.

    The display name (after `single_line`) is written as atoms when it is only atext and spaces,
    as a quoted-string when it is other printable ASCII (both folded at spaces), and otherwise
    (non-ASCII, `=?`) as one encoded word, which RFC 2047 §5(3) allows in a phrase. One, because
    readers disagree about the space between two encoded words in a phrase (RFC 2047 §6.2 drops
    it; Python's `email` keeps it): so such a name is limited to
    `MAX_ENCODED_DISPLAY_NAME_OCTETS`, and a longer one raises `CompositionError` (the sender
    setting is refused at start for it).
    """
    display = single_line(mailbox.display_name)
    addr = f"<{mailbox.address.wire}>"
    first = MAX_LINE_OCTETS - len(name) - 2
    if not display:
        return BuiltHeader(name, mailbox.address.wire, [mailbox.address.wire])
    decoded = f"{display} {addr}"
    if _is_plain(display):
        words = (display if _ATOMS.match(display) else _quoted(display)).split(" ")
        if any(len(word) > _MAX_WORD_OCTETS for word in words):
            raise CompositionError(f"{name}: a display name word is too long for a header line")
        return BuiltHeader(name, decoded, _fold_words([*words, addr], first=first))
    encoded = display.encode("utf-8")
    if len(encoded) > MAX_ENCODED_DISPLAY_NAME_OCTETS:
        raise CompositionError(
            f"{name}: a display name that is not plain ASCII may be at most "
            f"{MAX_ENCODED_DISPLAY_NAME_OCTETS} bytes in UTF-8 (one RFC 2047 encoded word)"
        )
    word = f"=?utf-8?b?{base64.b64encode(encoded).decode('ascii')}?="
    return BuiltHeader(name, decoded, _fold_words([word, addr], first=first))


# RFC 5322 §3.6.4 msg-id as we accept it: `<dot-atom-text@dot-atom-text>` (atext, §3.2.3), no
# comments, folding or obsolete forms; every Message-ID we make (`campaign_engine.ids`) is one.
_ATEXT = r"[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~]+"
_MSG_ID = re.compile(rf"<{_ATEXT}(?:\.{_ATEXT})*@{_ATEXT}(?:\.{_ATEXT})*>")


def message_ids_header(name: str, message_ids: Sequence[str]) -> BuiltHeader:
    """A header of msg-ids (RFC 5322 §3.6.4: `In-Reply-To`, `References`), separated by single
    spaces and folded between them, one per line when they do not fit together.

    Each must be a whole `<dot-atom-text@dot-atom-text>` of at most 900 characters; anything
    else (CR, LF, spaces, a second `<`, text around the brackets) raises `CompositionError`,
    so no data can add a header line or change what the header names.
    """
    if not message_ids:
        raise CompositionError(f"{name}: at least one Message-ID is needed")
    for message_id in message_ids:
        if not _MSG_ID.fullmatch(message_id) or len(message_id) > _MAX_WORD_OCTETS:
            raise CompositionError(f"{name}: {message_id!r} is not a Message-ID (RFC 5322 §3.6.4)")
    return BuiltHeader(
        name,
        " ".join(message_ids),
        _fold_words(list(message_ids), first=MAX_LINE_OCTETS - len(name) - 2),
    )


DKIM_SIGNED_HEADERS: tuple[str, ...] = (
    "from",
    "to",
    "subject",
    "date",
    "message-id",
    "in-reply-to",
    "references",
    "list-unsubscribe",
    "list-unsubscribe-post",
    "list-id",
    "mime-version",
    "content-type",
    "content-transfer-encoding",
)
"""The `h=` of our DKIM signatures (RFC 6376 §5.4): what RFC 8058 §4 requires signed
(List-Unsubscribe, List-Unsubscribe-Post) and everything a reader is shown, decodes or threads
by (In-Reply-To and References, RFC 6376 §5.4.1). A name listed but absent from a message is
signed as absent, so nobody on the way can add it."""


class DkimSigner:
    """Signs composed messages with DKIM (RFC 6376) through `dkimpy`: rsa-sha256,
    relaxed/relaxed canonicalisation, `h=` `DKIM_SIGNED_HEADERS`.

    `private_key` is a PEM RSA key (PKCS#1 or PKCS#8); it stays in this object (the worker's
    memory), never in a workflow's history. `selector` and `domain` are ASCII (`d=`, `s=`).
    """

    def __init__(self, *, selector: str, domain: str, private_key: bytes) -> None:
        self.selector = selector
        self.domain = domain
        self._private_key = private_key

    def sign(self, data: bytes) -> bytes:
        """`data` with a `DKIM-Signature:` header line in front; raises `CompositionError` when
        dkimpy cannot sign it (e.g. a key that is not RSA)."""
        try:
            signature: bytes = dkim.sign(
                data,
                self.selector.encode("ascii"),
                self.domain.encode("ascii"),
                self._private_key,
                include_headers=[name.encode("ascii") for name in DKIM_SIGNED_HEADERS],
                canonicalize=(b"relaxed", b"relaxed"),
                linesep=b"\r\n",
            )
        except (dkim.DKIMException, ValueError) as error:
            raise CompositionError(f"cannot sign the message with DKIM: {error}") from error
        return signature + data


@dataclass(frozen=True)
class OutgoingMessage:
    """A composed message and its SMTP envelope (RFC 5321 §3.3), both from validated parts."""

    message: EmailMessage
    """The message as built (without the DKIM signature, which exists only in `data`)."""
    data: bytes
    """The exact bytes handed over, CRLF line ends, DKIM-signed when a signer was given:
    never re-encoded or re-folded after signing."""
    envelope_from: str
    """MAIL FROM: the sender's addr-spec, ASCII (the sender setting is refused otherwise)."""
    recipient: str
    """RCPT TO: the lead's addr-spec with A-labels; UTF-8 only when `smtputf8`."""
    smtputf8: bool
    """The recipient's local part is not ASCII: SMTP must offer SMTPUTF8 (RFC 6531)."""

    def as_bytes(self) -> bytes:
        """The message as it is handed over (SMTP DATA, the outbox file), CRLF line ends."""
        return self.data


def list_unsubscribe_header(uris: Sequence[str]) -> BuiltHeader:
    """`List-Unsubscribe` (RFC 2369 §3.2): each URI in angle brackets, comma-separated, the
    https one first (RFC 8058 §3.1 needs one https URI; the POST goes there). The URIs are
    printable ASCII without spaces, `<`, `>` or `,` (a URI we built; `CompositionError` else)."""
    for uri in uris:
        if not re.fullmatch(r"[\x21-\x7e]+", uri) or any(c in uri for c in "<>,"):
            raise CompositionError("List-Unsubscribe: a URI must be printable ASCII")
    words = [f"<{uri}>," for uri in uris[:-1]] + [f"<{uris[-1]}>"]
    return BuiltHeader(
        "List-Unsubscribe", ", ".join(f"<{u}>" for u in uris), _fold_words(words, first=0)
    )


def list_id_header(label: str, namespace: str) -> BuiltHeader:
    """`List-Id: <label.namespace>` (RFC 2919 §2): `label` and `namespace` dot-atoms of ASCII
    letters, digits and hyphens; at most 255 characters inside the brackets."""
    list_id = f"{label}.{namespace}"
    if not re.fullmatch(r"[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*", list_id) or len(list_id) > 255:
        raise CompositionError(f"List-Id: {list_id!r} is not a dot-atom of at most 255 characters")
    return BuiltHeader("List-Id", f"<{list_id}>", [f"<{list_id}>"])


def compose(
    *,
    message_id: str,
    sender: Mailbox,
    recipient: MailAddress,
    subject: str,
    body: str,
    date: str | None = None,
    list_unsubscribe: Sequence[str] = (),
    list_id: BuiltHeader | None = None,
    dkim_signer: DkimSigner | None = None,
    references: Sequence[str] = (),
) -> OutgoingMessage:
    """A plain-text message: Message-ID, Date, From, To, Subject, In-Reply-To and References
    (when `references` holds Message-IDs), List-Id, List-Unsubscribe and List-Unsubscribe-Post
    (when `list_unsubscribe` holds URIs), then MIME headers and body; signed with DKIM by
    `dkim_signer` when given, as the last step (RFC 6376 §5).

    `references`: for a reply, the Message-IDs of the thread it answers, oldest first. They go
    out as `References` in that order and the last as `In-Reply-To` (RFC 5322 §3.6.4: a reply's
    References are its parent's References followed by the parent's Message-ID); each must be
    a msg-id (`message_ids_header`). The subject is sent as given: a reply's `Re: ` is the
    draft's (`reply_subject`), so the reviewer approved it.

    `list_unsubscribe`: the https URI of one-click unsubscribe first (it gets
    `List-Unsubscribe-Post: List-Unsubscribe=One-Click`, RFC 8058 §3.1), then a `mailto:` one.
    Raises `CompositionError` when the data cannot make a message (e.g. a body the charset
    cannot carry); that is deterministic, never worth a retry.
    """
    policy = _UTF8_POLICY if recipient.needs_smtputf8 else _ASCII_POLICY
    message = EmailMessage(policy=policy)
    try:
        headers: list[tuple[str, Any]] = [
            ("Message-ID", _ascii("Message-ID", message_id)),
            ("Date", _ascii("Date", date or formatdate(localtime=False))),
            ("From", mailbox_header("From", sender)),
            ("To", address_header("To", recipient)),
            ("Subject", unstructured("Subject", subject)),
        ]
        if references:
            headers.append(("In-Reply-To", message_ids_header("In-Reply-To", references[-1:])))
            headers.append(("References", message_ids_header("References", references)))
        if list_id is not None:
            headers.append(("List-Id", list_id))
        if list_unsubscribe:
            headers.append(("List-Unsubscribe", list_unsubscribe_header(list_unsubscribe)))
            if list_unsubscribe[0].startswith("https://") or list_unsubscribe[0].startswith(
                "http://"
            ):
                headers.append(
                    (
                        "List-Unsubscribe-Post",
                        _ascii("List-Unsubscribe-Post", "List-Unsubscribe=One-Click"),
                    )
                )
        for name, value in headers:
            message[name] = value
        message.set_content(body_text(body))
        # Rendered once, here: an encoding problem is a composition error, not a send error,
        # and these bytes (signed) are exactly what is handed over.
        data = message.as_bytes()
        if dkim_signer is not None:
            data = dkim_signer.sign(data)
        outgoing = OutgoingMessage(
            message=message,
            data=data,
            envelope_from=sender.address.wire,
            recipient=recipient.wire,
            smtputf8=recipient.needs_smtputf8,
        )
    except (ValueError, UnicodeError, LookupError) as error:
        raise CompositionError(f"cannot compose the message: {error}") from error
    return outgoing


def _ascii(name: str, value: str) -> BuiltHeader:
    if not _is_plain(value) or len(name) + 2 + len(value) > 998:
        raise CompositionError(f"{name} is not a short printable ASCII value")
    return BuiltHeader(name, value, [value])


def _is_plain(text: str) -> bool:
    return bool(_PLAIN.match(text)) and "=?" not in text


def _quoted(text: str) -> str:
    # RFC 5322 §3.2.4 quoted-string: backslash escapes the quote and the backslash.
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _fold_words(words: list[str], *, first: int) -> list[str]:
    """Words joined by single spaces, broken before a space where a line would grow too long."""
    lines: list[str] = []
    current = ""
    for word in words:
        limit = first if not lines else MAX_LINE_OCTETS - 1
        if current and len(current) + 1 + len(word) > limit:
            lines.append(current)
            current = word
        else:
            current = f"{current} {word}" if current else word
    lines.append(current)
    return lines


def _encoded_words(name: str, text: str) -> list[str]:
    """`text` as UTF-8 encoded words (RFC 2047), one line each as the email package folds them."""
    if not text:
        return [""]
    encoded = Header(text, "utf-8", maxlinelen=MAX_LINE_OCTETS, header_name=name).encode(
        linesep="\n"
    )
    return [line.strip(" \t") for line in encoded.split("\n")]
