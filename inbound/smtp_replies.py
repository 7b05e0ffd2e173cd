"""The SMTP server's own answer at send time, read as a bounce (listmonk#2623: a synchronous
`550 5.1.1` is as much a hard bounce as the DSN that would have followed it).

Rules (RFC 5321 §4.2 reply codes, RFC 3463 enhanced status codes):

- a 5xx answer to `RCPT TO` whose enhanced status is `5.1.x` — the address is wrong (`5.1.1`
  bad mailbox, `5.1.2` bad domain, `5.1.3` bad syntax, `5.1.6` moved, `5.1.10` null MX, RFC
  7505) — is a **hard bounce**; but not `5.1.7`/`5.1.8`, which are about *our* sender address;
- a 5xx answer to `RCPT TO` without an enhanced status, with the reply code `550` (mailbox
  unavailable), `551` (user not local) or `553` (mailbox name not allowed), is a hard bounce;
- anything else (`5.7.x` policy and spam blocks, `5.2.2` mailbox full, 5xx to `DATA`, 4xx) is
  not the address's fault and is left to the delivery's own failure handling.

Diagnostic text keeps no address: each one is replaced with `<address>`.
"""

from __future__ import annotations

import re

from inbound.classification import Classification, Evidence, Kind

_ENHANCED = re.compile(r"^\s*([245])\.(\d{1,3})\.(\d{1,3})\b")
_ADDRESS = re.compile(r"<?[^\s<>\"'(),;:\[\]]+@[^\s<>\"'(),;:\[\]]+>?")
_SENDER_STATUSES = frozenset({"5.1.7", "5.1.8"})
_HARD_CODES = frozenset({550, 551, 553})
MAX_DIAGNOSTIC_CHARS = 300


def redacted(text: str) -> str:
    """`text` with every address replaced by `<address>`, on one line, at most 300 characters."""
    return " ".join(_ADDRESS.sub("<address>", text).split())[:MAX_DIAGNOSTIC_CHARS]


def rcpt_refusal(code: int, text: str) -> Classification | None:
    """A hard bounce `Classification` when the answer `code text` to `RCPT TO` says the
    recipient's address is wrong for good (module docstring), else None."""
    if not 500 <= code <= 599:
        return None
    enhanced = _ENHANCED.match(text)
    status = ".".join(enhanced.groups()) if enhanced else None
    if status is not None:
        if not status.startswith("5.1.") or status in _SENDER_STATUSES:
            return None
    elif code not in _HARD_CODES:
        return None
    return Classification(
        Kind.HARD_BOUNCE,
        Evidence(
            rule="smtp_recipient_refused",
            source="RFC 5321 §4.2.2; RFC 3463 §3.2 (X.1.x addressing status); listmonk#2623",
            action="failed",
            status=status or str(code),
            diagnostic_code=redacted(f"smtp; {code} {text}"),
        ),
    )
