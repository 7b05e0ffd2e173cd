"""E-mail addresses and header text as data: validated once, never parsed out of a header again.

Two kinds of input become mail: a lead's address and names (at enrolment) and the operator's
`CAMPAIGN_ENGINE_SENDER` (at start). Both are checked here with `email-validator`'s rules, so what
reaches the delivery activity is already known to be an address, and the activity builds headers
from these parts (see `activities/messages.py`) instead of parsing strings.

Rules, for callers that must document them:

- a lead's address (`parse_address`): RFC 5322 §3.4.1 `dot-atom` local part (ASCII or, per RFC 6531,
  UTF-8), a domain that is a valid internationalised host name (RFC 5890 IDNA 2008 / UTS #46) and
  globally deliverable (has a dot, not a special-use name such as `.test` or `localhost`); no
  quoted local parts, no IP literals, no display name; no control characters or line breaks; and
  no `=?` (RFC 2047 encoded-word syntax, which mail software decodes where it should not).
- the sender (`parse_mailbox`): `Display Name <local@domain>` or a bare address; the local part
  must be ASCII (so no message needs SMTPUTF8 because of its sender), the domain may be a dotless
  or special-use name (`localhost`, `mail.test`): it names the operator's own host. A display
  name with characters other than atext and spaces must be double-quoted, and one with non-ASCII
  characters may be at most `MAX_ENCODED_DISPLAY_NAME_OCTETS` bytes of UTF-8.
- names (`text_problem`): any Unicode text without control characters (Unicode category `Cc`,
  which includes CR, LF, TAB, NUL and U+0085), line or paragraph separators (U+2028, U+2029) or
  unpaired surrogates.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from email_validator import SPECIAL_USE_DOMAIN_NAMES, EmailNotValidError, validate_email
from email_validator.syntax import split_email

# A stand-in domain used to check everything but a sender's special-use domain (see below).
_NEUTRAL_DOMAIN = "example.com"
# A special-use host name is plain LDH labels (RFC 1123 §2.1), e.g. `localhost`, `mail.test`.
_LDH_HOST = re.compile(
    r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$"
)
_REFUSED_CATEGORIES = {"Cc", "Cs", "Zl", "Zp"}

MAX_ENCODED_DISPLAY_NAME_OCTETS = 45
"""A display name that is not printable ASCII goes out as one base64 encoded word (RFC 2047:
at most 75 characters, so 45 bytes of UTF-8); see `activities.messages.mailbox_header`."""


class InvalidAddress(ValueError):
    """The text is not an address we can send to; the message says why, for a person."""


@dataclass(frozen=True)
class MailAddress:
    """A validated address. `local_part` is NFC-normalised; the domain comes in both forms."""

    local_part: str
    domain: str
    """The domain as people read it (IDNA U-labels, lower case), e.g. `bücher.example`."""
    ascii_domain: str
    """The domain as it goes on the wire (IDNA A-labels, RFC 5890), e.g. `xn--bcher-kva.example`."""

    @property
    def normalized(self) -> str:
        """`local@domain` with the readable domain: what is stored and shown to templates."""
        return f"{self.local_part}@{self.domain}"

    @property
    def wire(self) -> str:
        """`local@ascii-domain`: what goes into SMTP commands and headers."""
        return f"{self.local_part}@{self.ascii_domain}"

    @property
    def needs_smtputf8(self) -> bool:
        """A non-ASCII local part can only travel with SMTPUTF8 (RFC 6531) and UTF-8 headers
        (RFC 6532); a non-ASCII domain never needs it, since its A-labels are ASCII."""
        return not self.local_part.isascii()


@dataclass(frozen=True)
class Mailbox:
    """An address with the display name shown beside it (RFC 5322 §3.4 `name-addr`)."""

    display_name: str
    address: MailAddress


def text_problem(text: str) -> str | None:
    """Why `text` may not become part of a header (a name, an address), or None when it may.

    Refused: control characters (Unicode `Cc`: CR, LF, TAB, NUL, DEL, U+0085, ...), U+2028 and
    U+2029, unpaired surrogates. Everything else is text, and is encoded as text.
    """
    for character in text:
        if unicodedata.category(character) in _REFUSED_CATEGORIES:
            return (
                f"must not contain control characters or line breaks (found U+{ord(character):04X})"
            )
    return None


def parse_address(text: str) -> MailAddress:
    """A lead's address, checked with email-validator's rules (see the module docstring).

    Raises `InvalidAddress` saying what is wrong.
    """
    _refuse_structure(text)
    try:
        checked = validate_email(
            text,
            check_deliverability=False,
            allow_smtputf8=True,
            allow_quoted_local=False,
            allow_domain_literal=False,
            allow_display_name=False,
        )
    except EmailNotValidError as error:
        raise InvalidAddress(str(error)) from error
    return MailAddress(checked.local_part, checked.domain, checked.ascii_domain)


def parse_mailbox(text: str) -> Mailbox:
    """The sender setting: `Name <local@domain>` or `local@domain` (see the module docstring).

    Raises `InvalidAddress` saying what is wrong.
    """
    if "=?" in text:
        raise InvalidAddress(
            "must not contain '=?': write the display name as plain text, it is encoded when "
            "sent (RFC 2047)"
        )
    _refuse_structure(text)
    text = text.strip()
    try:
        _, _, _, _, domain = split_email(text)
    except EmailNotValidError as error:
        raise InvalidAddress(str(error)) from error
    # email-validator refuses special-use names (RFC 6761) outright, since a stranger's address
    # there cannot be real; the sender is the operator's own, and `localhost` is our default.
    # So such a domain is checked as a host name here and the rest with email-validator.
    host = domain.lower()
    special_use = any(
        host == name or host.endswith(f".{name}") for name in SPECIAL_USE_DOMAIN_NAMES
    )
    if special_use:
        if not _LDH_HOST.match(host):
            raise InvalidAddress(f"{domain!r} is not a valid host name")
        head, _, tail = text.rpartition("@")
        text = f"{head}@{_NEUTRAL_DOMAIN}{'>' if tail.endswith('>') else ''}"
    try:
        checked = validate_email(
            text,
            check_deliverability=False,
            allow_smtputf8=False,
            allow_quoted_local=False,
            allow_domain_literal=False,
            allow_display_name=True,
            globally_deliverable=False,
        )
    except EmailNotValidError as error:
        raise InvalidAddress(str(error)) from error
    display_name = checked.display_name or ""
    if not display_name.isascii() and len(display_name.encode()) > MAX_ENCODED_DISPLAY_NAME_OCTETS:
        raise InvalidAddress(
            "a display name with non-ASCII characters may be at most "
            f"{MAX_ENCODED_DISPLAY_NAME_OCTETS} bytes in UTF-8 (one RFC 2047 encoded word)"
        )
    address = (
        MailAddress(checked.local_part, host, host)
        if special_use
        else MailAddress(checked.local_part, checked.domain, checked.ascii_domain)
    )
    return Mailbox(display_name, address)


def _refuse_structure(text: str) -> None:
    problem = text_problem(text)
    if problem:
        raise InvalidAddress(problem)
    if "=?" in text:
        # RFC 2047 §5 forbids encoded words in an addr-spec, yet readers decode them there.
        raise InvalidAddress("must not contain '=?' (RFC 2047 encoded-word syntax)")
