"""VERP: a per-message envelope sender, so that a bounce names the message it is about.

Variable envelope return paths (D. J. Bernstein, 1997; what Postfix's `-V`, listmonk and most
bulk senders do): each message goes out with `MAIL FROM:<bounces+TOKEN@BOUNCE_DOMAIN>`. Bounces
are sent to the envelope sender (RFC 5321 §4.5.5), so a DSN that returns nothing of the
original (many do not) still arrives at an address that names our message. The TOKEN is 16
characters of base32 (RFC 4648 §6, lower case, unpadded: local parts may be case-folded on the
way back) of 80 bits of HMAC-SHA256 under the unsubscribe key over the Message-ID: nobody
without the key can make one that matches a message, and the delivery ledger maps it back
(`deliveries.bounce_token`). A `+` separates it from the local part (RFC 5233 subaddress).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re

TOKEN_BYTES = 10
"""80 bits: a forged token matches one of a million messages with odds of 2^-60."""
TOKEN_CHARS = 16
_DOMAIN = b"campaign-engine verp token v1\x00"
_TOKEN = re.compile(r"^[a-z2-7]{16}$")


def bounce_token(key: bytes, message_id: str) -> str:
    """The message's token: 16 characters of `[a-z2-7]`."""
    digest = hmac.new(key, _DOMAIN + message_id.encode(), hashlib.sha256).digest()
    return base64.b32encode(digest[:TOKEN_BYTES]).decode("ascii").lower()


def return_path(local_part: str, domain: str, token: str) -> str:
    """The envelope sender `local_part+token@domain` (ASCII both)."""
    return f"{local_part}+{token}@{domain}"


def token_of(address: str, *, local_part: str, domain: str) -> str | None:
    """The token of an address written by `return_path` with this local part and domain (case
    blind), else None. Only the form is checked here; the ledger lookup is what proves it."""
    local, at, address_domain = address.strip().strip("<>").rpartition("@")
    if not at or address_domain.lower().rstrip(".") != domain.lower().rstrip("."):
        return None
    base, plus, token = local.partition("+")
    if not plus or base.lower() != local_part.lower():
        return None
    token = token.lower()
    return token if _TOKEN.match(token) else None
