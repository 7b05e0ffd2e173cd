"""One-click unsubscribe tokens (RFC 8058) and the keyed hash that suppressions store.

A token is the credential of `POST /u/{token}`: whoever holds it may unsubscribe that lead from
that account group, and nobody else can make one. It reads, base64url without padding (RFC 4648
§5), the 36 bytes of the account group, campaign and lead ids, 16 bytes of the lead's keyed
e-mail hash, the step id, then 16 bytes (128 bits) of HMAC-SHA256 under the unsubscribe key over
(account group, lead, campaign, Message-ID, e-mail hash). The Message-ID is derived from the ids
and the step (`ids.message_id_for`), so the token names the very message it was sent in. Tokens
never expire (RFC 8058 §3.1 asks that the URI keep working; a lead may click a year later).

The key lives in the settings or in a file under the state dir (`keys.load_secret`), never in a
workflow's history: tokens are minted by the delivery activity, not by the workflow.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from dataclasses import dataclass
from pathlib import Path

from campaign_engine.addresses import InvalidAddress, parse_address
from campaign_engine.ids import (
    is_object_id,
    message_id_for,
    workflow_id_for,
    workflow_instance_id_for,
)
from campaign_engine.keys import load_secret
from campaign_engine.settings import Settings

UNSUBSCRIBE_KEY_FILE = "unsubscribe-key"
MAC_BYTES = 16
"""128 bits of HMAC-SHA256: a forged token is a 2^-128 guess."""
EMAIL_HASH_BYTES = 16
_IDS_BYTES = 36
_MAX_STEP_ID_BYTES = 64
MAX_TOKEN_CHARS = -(-(_IDS_BYTES + EMAIL_HASH_BYTES + _MAX_STEP_ID_BYTES + MAC_BYTES) * 4 // 3)
"""The longest token (a 64-character step id): 176 characters."""
_TOKEN_DOMAIN = b"campaign-engine unsubscribe token v1\x00"
_EMAIL_DOMAIN = b"campaign-engine suppressed e-mail v1\x00"


def load_unsubscribe_key(settings: Settings) -> bytes:
    """`CAMPAIGN_ENGINE_UNSUBSCRIBE_KEY`, else `state_dir/unsubscribe-key` (made once, 0600).

    API and worker must share it: set the setting when they do not share a state dir.
    """
    configured = settings.unsubscribe_key.get_secret_value() if settings.unsubscribe_key else None
    return load_secret(configured, Path(settings.state_dir) / UNSUBSCRIBE_KEY_FILE)


def normalise_email(email: str) -> str:
    """The form an address is compared in: NFC local part and Unicode domain (as enrolment
    stores it), then lower case as a whole, since providers treat local parts case-blind.
    Text that is not an address (an old instance's data) is lower-cased and stripped only."""
    try:
        return parse_address(email).normalized.lower()
    except InvalidAddress:
        return email.strip().lower()


def email_hash(key: bytes, email: str) -> str:
    """The keyed hash a suppression stores instead of the address: 32 hex characters of
    HMAC-SHA256 under the unsubscribe key over the normalised address. Without the key a
    leaked table confirms no guessed address."""
    return _email_digest(key, email).hex()


_DOMAIN_DOMAIN = b"campaign-engine e-mail domain v1\x00"


def email_domain(email: str) -> str:
    """The domain of an address as `normalise_email` writes it (Unicode, lower case); `""` for
    text with no `@`."""
    return normalise_email(email).rpartition("@")[2]


def domain_hash(key: bytes, email: str) -> str:
    """The keyed hash of an address's domain (`email_domain`), 32 hex characters of HMAC-SHA256
    under the unsubscribe key: what `stopOnReply: domain` finds a lead's colleagues by without
    storing their company in clear."""
    digest = hmac.new(key, _DOMAIN_DOMAIN + email_domain(email).encode(), hashlib.sha256)
    return digest.digest()[:EMAIL_HASH_BYTES].hex()


def _email_digest(key: bytes, email: str) -> bytes:
    digest = hmac.new(key, _EMAIL_DOMAIN + normalise_email(email).encode(), hashlib.sha256)
    return digest.digest()[:EMAIL_HASH_BYTES]


@dataclass(frozen=True)
class UnsubscribeToken:
    """What a verified token names: the message it came in, the lead, and the lead's e-mail
    hash (`email_hash`)."""

    account_group_id: str
    campaign_id: str
    lead_id: str
    step_id: str
    email_hash: str

    @property
    def message_id(self) -> str:
        """The Message-ID of the message that carried the token."""
        instance_id = workflow_instance_id_for(
            self.account_group_id, self.campaign_id, self.lead_id
        )
        workflow_id = workflow_id_for(self.account_group_id, self.campaign_id, instance_id)
        return message_id_for(workflow_id, self.step_id)


def _mac(key: bytes, token: UnsubscribeToken) -> bytes:
    signed = "\x00".join(
        (token.account_group_id, token.lead_id, token.campaign_id, token.message_id)
    ).encode()
    digest = hmac.new(key, _TOKEN_DOMAIN + signed + bytes.fromhex(token.email_hash), hashlib.sha256)
    return digest.digest()[:MAC_BYTES]


def mint(
    key: bytes, *, account_group_id: str, campaign_id: str, lead_id: str, step_id: str, email: str
) -> str:
    """The token of one message (ids 24 lowercase hex; step id ASCII, at most 64 characters).

    Raises `ValueError` for ids that are not such.
    """
    for value in (account_group_id, campaign_id, lead_id):
        if not is_object_id(value):
            raise ValueError(f"not a 24-character lowercase hex id: {value!r}")
    step = step_id.encode("ascii")
    if not 0 < len(step) <= _MAX_STEP_ID_BYTES:
        raise ValueError("a step id is 1 to 64 ASCII characters")
    token = UnsubscribeToken(
        account_group_id, campaign_id, lead_id, step_id, _email_digest(key, email).hex()
    )
    raw = (
        bytes.fromhex(account_group_id + campaign_id + lead_id)
        + bytes.fromhex(token.email_hash)
        + step
        + _mac(key, token)
    )
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def verify(key: bytes, text: str) -> UnsubscribeToken | None:
    """The token's contents when its HMAC checks (constant-time compare), else None — for a
    forged, truncated, padded or otherwise altered token alike, so a caller can say nothing
    more than "not found"."""
    if not 0 < len(text) <= MAX_TOKEN_CHARS or not text.isascii() or "=" in text:
        return None
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        return None
    # Only the canonical encoding: no second spelling of one token.
    if base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii") != text:
        return None
    head = _IDS_BYTES + EMAIL_HASH_BYTES
    if len(raw) < head + 1 + MAC_BYTES:
        return None
    ids = raw[:_IDS_BYTES].hex()
    try:
        step_id = raw[head:-MAC_BYTES].decode("ascii")
    except UnicodeDecodeError:
        return None
    token = UnsubscribeToken(ids[:24], ids[24:48], ids[48:], step_id, raw[_IDS_BYTES:head].hex())
    if not hmac.compare_digest(_mac(key, token), raw[-MAC_BYTES:]):
        return None
    return token
