"""HTTP conditional requests on an instance's approval gate: `ETag` out, `If-Match` in.

The entity tag of an instance is its open gate's id (`gateId`), sent strong: `ETag: "<gateId>"`
(RFC 9110 §8.8.3). `If-Match` (RFC 9110 §13.1.1) is `*` or a list of entity tags; comparison is
strong (§8.8.3.2), so a weak tag (`W/"…"`) never matches. A header that does not parse names no
tag: it never matches (the approval is refused `GATE_CHANGED`), and is never an error of ours.
"""

from __future__ import annotations

import re

ANY = "*"
_ENTITY_TAG = re.compile(r'\s*(W/)?"([\x21\x23-\x7e\x80-\xff]*)"\s*(?:,|$)')


def etag_of(gate_id: str) -> str:
    """The strong entity tag of a gate: its id in double quotes (RFC 9110 §8.8.3)."""
    return f'"{gate_id}"'


def parse_if_match(values: list[str]) -> list[str] | None:
    """The gate ids `If-Match` header fields name, for the approve signal.

    `values`: every `If-Match` field of the request (a list of fields is one comma-separated
    list, RFC 9110 §5.3). Returns None without the header (unconditional), `["*"]` for `*`, the
    strong tags' contents otherwise — weak tags are dropped, since §13.1.1 compares strongly —
    and `[]` for a header that does not parse as `"*" / #entity-tag` (which then never matches).
    """
    if not values:
        return None
    header = ", ".join(values).strip()
    if header == ANY:
        return [ANY]
    tags: list[str] = []
    position = 0
    while position < len(header):
        match = _ENTITY_TAG.match(header, position)
        if match is None or match.end() == position:
            return []
        if match.group(1) is None:
            tags.append(match.group(2))
        position = match.end()
    return tags
