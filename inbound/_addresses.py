"""Addresses and Message-IDs out of hostile header values, in one linear scan each.

Private to `inbound/`. The standard library's `email.utils.getaddresses` recurses on group syntax
and nested comments (`g:g:g:…` or `((((…` raise `RecursionError` at ~1,000 levels, measured on
3.11.7), so address lists are read here instead: enough of RFC 5322 §3.4 to find each
`addr-spec`, never a full grammar. Display names, quoted strings and comments are skipped;
an `angle-addr` wins over bare text; an element that yields no `local@domain` is dropped.
"""

from __future__ import annotations

import re
from collections import deque

from campaign_engine.unsubscribe import normalise_email

MAX_ADDRESS_CHARS = 254
"""RFC 5321 §4.5.3.1.3: a path is at most 256 octets with its angle brackets."""

_ADDR_SPEC = re.compile(
    r"[^@\s<>()\[\],;:\"\\\x00-\x1f\x7f]{1,64}@[^@\s<>()\[\],;:\"\\\x00-\x1f\x7f]{1,252}"
)
_SOURCE_ROUTE = re.compile(r"^(?:@[^,:]*,)*@[^:]*:")  # RFC 5322 §4.4 obs-route, e.g. <@a,@b:x@y>


def address_list(value: str, *, limit: int) -> tuple[list[str], bool]:
    """The addresses in an address-list header value, normalised (lower case, NFC, Unicode
    domain: `campaign_engine.unsubscribe.normalise_email`), in order, without duplicates,
    at most `limit`. Returns (addresses, null_path_seen): the second is True when an element
    was the null path `<>` (RFC 5321 §4.5.5)."""
    found: list[str] = []
    null_seen = False
    bare: list[str] = []
    angle: str | None = None
    position = 0
    length = len(value)

    def finish() -> None:
        nonlocal angle, null_seen
        candidate = angle if angle is not None else "".join(bare).strip()
        if angle is not None and angle == "":
            null_seen = True
        bare.clear()
        angle = None
        if candidate and len(found) < limit:
            address = _address(candidate)
            if address is not None and address not in found:
                found.append(address)

    while position < length:
        character = value[position]
        if character == '"':
            position = _skip_quoted(value, position + 1)
            continue
        if character == "(":
            position = _skip_comment(value, position + 1)
            continue
        if character == "<":
            end = value.find(">", position + 1)
            if end < 0:
                end = length
            angle = _SOURCE_ROUTE.sub("", value[position + 1 : end].strip()).strip()
            position = end + 1
            continue
        if character in ",;":
            finish()
            if len(found) >= limit:
                break
        elif character == ":":
            bare.clear()  # what came before was a group's display name (RFC 5322 §3.4)
        else:
            bare.append(character)
        position += 1
    finish()
    return found, null_seen


def _skip_quoted(value: str, position: int) -> int:
    """The index after the closing quote of a quoted string that opened before `position`."""
    length = len(value)
    while position < length:
        character = value[position]
        if character == "\\":
            position += 2
            continue
        if character == '"':
            return position + 1
        position += 1
    return length


def _skip_comment(value: str, position: int) -> int:
    """The index after a comment that opened before `position`; nesting is counted, not
    recursed into, so any depth costs the same."""
    depth = 1
    length = len(value)
    while position < length:
        character = value[position]
        if character == "\\":
            position += 2
            continue
        if character == "(":
            depth += 1
        elif character == ")":
            depth -= 1
            if depth == 0:
                return position + 1
        position += 1
    return length


def _address(candidate: str) -> str | None:
    text = "".join(candidate.split())  # folding white space inside an address is obsolete syntax
    if len(text) > MAX_ADDRESS_CHARS or not _ADDR_SPEC.fullmatch(text):
        return None
    return normalise_email(text)


def first_address(value: str) -> tuple[str | None, int, bool]:
    """The first address of a mailbox-list value (From, Sender, Return-Path), how many the
    value holds (at most 10 are counted), and whether it was the null path `<>`."""
    addresses, null_seen = address_list(value, limit=10)
    return (addresses[0] if addresses else None), len(addresses), null_seen


MAX_MESSAGE_ID_CHARS = 250
"""Longer ids are dropped: RFC 5322 lines are at most 998 characters and ours are ~60."""
# Printable, no white space or angle brackets; control characters (NUL…) are never part of one.
_MESSAGE_ID = re.compile(rf"<\s*([^<>\s\x00-\x1f\x7f]{{1,{MAX_MESSAGE_ID_CHARS}}})\s*>")
_BARE_MESSAGE_ID = re.compile(rf"[^<>\s\x00-\x1f\x7f]{{1,{MAX_MESSAGE_ID_CHARS}}}")


def message_ids(value: str, *, head: int, tail: int) -> tuple[list[str], int]:
    """The `<id>`s of a msg-id list (References, In-Reply-To) normalised to `<left@right>`, the
    first `head` and last `tail` of them (RFC 5322 §3.6.4 asks trimmers to keep the first, the
    thread's root, and the last, the parents), without duplicates; and how many there were.
    Ids without `@` are skipped (every id we send has one; `<>` and phrases are noise)."""
    first: list[str] = []
    last: deque[str] = deque(maxlen=tail)
    count = 0
    for match in _MESSAGE_ID.finditer(value):
        identifier = match.group(1)
        if "@" not in identifier:
            continue
        count += 1
        normalised = f"<{identifier}>"
        if len(first) < head:
            first.append(normalised)
        else:
            last.append(normalised)
    return list(dict.fromkeys([*first, *last])), count


def single_message_id(value: str) -> str | None:
    """A Message-ID header's `<id>`; a bare `id@host` without brackets (seen from broken
    clients) is accepted and bracketed."""
    ids, _ = message_ids(value, head=1, tail=0)
    if ids:
        return ids[0]
    for token in value.split():
        if "@" in token and _BARE_MESSAGE_ID.fullmatch(token):
            return f"<{token}>"
    return None
