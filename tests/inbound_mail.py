"""Builders and sample paths shared by the inbound tests (`tests/test_inbound_*.py`)."""

from __future__ import annotations

from pathlib import Path

SAMPLES = Path(__file__).parent / "inbound_samples"
STANDARD = SAMPLES / "standard"
FLUFL = SAMPLES / "flufl_bounce"


def sample(name: str) -> bytes:
    """The bytes of `tests/inbound_samples/<name>` (e.g. `standard/dsn_hard.eml`)."""
    return (SAMPLES / name).read_bytes()


def message(*headers: str, body: str | bytes = "Hello", crlf: bool = True) -> bytes:
    """A message from header lines (`"Name: value"`, already folded) and a body."""
    newline = "\r\n" if crlf else "\n"
    head = newline.join(headers) + newline + newline
    data = body.encode() if isinstance(body, str) else body
    return head.encode("utf-8", "surrogateescape") + data


BASE = ("From: Ada <ada@example.org>", "To: sales@campaign.example", "Message-ID: <m1@example.org>")


def plain(*extra: str, body: str | bytes = "Hello") -> bytes:
    """A person's plain message with `BASE` headers and `extra` ones."""
    return message(*BASE, *extra, body=body)


def dsn(*blocks: str, returned: str = "", headers: tuple[str, ...] = ()) -> bytes:
    """An RFC 3464 report: one delivery-status part with a per-message block and `blocks`
    (each a per-recipient block's lines joined by CRLF), and a text/rfc822-headers part."""
    status = "Reporting-MTA: dns; mx.example.net\r\n\r\n" + "\r\n\r\n".join(blocks)
    parts = [
        "Content-Type: text/plain\r\n\r\nDelivery failed.\r\n",
        f"Content-Type: message/delivery-status\r\n\r\n{status}\r\n",
    ]
    if returned:
        parts.append(f"Content-Type: text/rfc822-headers\r\n\r\n{returned}\r\n")
    body = "".join(f"--RPT\r\n{part}" for part in parts) + "--RPT--\r\n"
    return message(
        "From: Mail Delivery System <MAILER-DAEMON@mx.example.net>",
        "To: bounces+tok@campaign.example",
        "Subject: Undelivered Mail Returned to Sender",
        *headers,
        "MIME-Version: 1.0",
        'Content-Type: multipart/report; report-type=delivery-status; boundary="RPT"',
        body=body,
    )
