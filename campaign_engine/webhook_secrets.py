"""Webhook signing secrets at rest: sealed with the payload key ring, never stored in clear.

A campaign's webhook secret signs its notices (`campaign_engine.webhook_signatures`); whoever
reads it can forge them. It used to sit in clear in the campaign's stored definition (SQLite file
and PostgreSQL alike). Now the definition's `webhook` holds `sealedSecret` instead of `secret`:

    v1:<key id>:<base64url(nonce (12 bytes) || AES-256-GCM ciphertext and tag)>

under a key derived from the payload ring's key `<key id>` (HKDF-SHA256, info
`campaign-engine/webhook-secret/v1`: never the payload key itself, so a sealed secret can not
be passed off as a payload or the reverse), with the campaign's account group and id as
associated data: a sealed secret copied into another campaign's row does not open.

The ring's first key seals; every key of the ring opens, so `keys rotate-payload-key` keeps
existing secrets readable (the next PUT of a campaign re-seals it under the new key). A sealed
secret under a key id the ring no longer holds raises `SealedSecretError`.

Definitions written before this have `secret` in clear: they stay readable (`secret_of`), and
migration 0006 or, when it ran without a key ring, the first `Store.open` given one
(`seal_stored`) seals them in place.
"""

from __future__ import annotations

import base64
import binascii
import os
from collections.abc import Callable, Mapping
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from sqlalchemy import JSON, String, Text, cast, column, select, table, update
from sqlalchemy.engine import Connection

from campaign_engine.codec import PayloadKeyRing, keys_from_settings, load_key_ring
from campaign_engine.settings import Settings

VERSION = "v1"
SEALED_FIELD = "sealedSecret"
"""The key of a definition's `webhook` object holding the sealed secret."""
CLEAR_FIELD = "secret"
"""The key that held the secret in clear before sealing (readable, sealed by `seal_stored`)."""
_INFO = b"campaign-engine/webhook-secret/v1"
_NONCE_BYTES = 12

_campaigns = table(
    "campaigns",
    column("account_group_id", String),
    column("campaign_id", String),
    column("definition", JSON),
)


class SealedSecretError(ValueError):
    """A sealed secret does not open: its key id is not in the ring, it belongs to another
    campaign, or it was altered. The message names the key id, never the secret."""


class WebhookSecrets:
    """Seals and opens webhook secrets under `ring` (see the module docstring).

    `reload` (for a file-managed ring) is asked for a fresh ring when a sealed secret names a
    key id this one lacks, as `EncryptionCodec` does.
    """

    def __init__(
        self, ring: PayloadKeyRing, *, reload: Callable[[], PayloadKeyRing] | None = None
    ) -> None:
        self._ring = ring
        self._reload = reload
        self._ciphers: dict[str, AESGCM] = {}

    @classmethod
    def for_settings(cls, settings: Settings) -> WebhookSecrets:
        """Under the payload key ring of `settings` (`codec.load_key_ring`); raises
        `KeyRingError` for a malformed ring."""
        reload = None if keys_from_settings(settings) else (lambda: load_key_ring(settings))
        return cls(load_key_ring(settings), reload=reload)

    def seal(self, secret: str, *, account_group_id: str, campaign_id: str) -> str:
        """`secret` sealed under the ring's first key for this campaign."""
        key_id = self._ring.primary.id
        nonce = os.urandom(_NONCE_BYTES)
        sealed = self._cipher(key_id).encrypt(
            nonce, secret.encode(), _associated_data(account_group_id, campaign_id)
        )
        encoded = base64.urlsafe_b64encode(nonce + sealed).decode().rstrip("=")
        return f"{VERSION}:{key_id}:{encoded}"

    def open(self, sealed: str, *, account_group_id: str, campaign_id: str) -> str:
        """The secret `seal` sealed for this campaign; raises `SealedSecretError`."""
        version, _, rest = sealed.partition(":")
        key_id, _, encoded = rest.partition(":")
        if version != VERSION or not key_id or not encoded:
            raise SealedSecretError("a sealed webhook secret of an unknown form")
        try:
            data = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
        except (binascii.Error, ValueError):
            raise SealedSecretError(f"sealed webhook secret under {key_id!r}: not base64") from None
        try:
            plain = self._cipher(key_id).decrypt(
                data[:_NONCE_BYTES],
                data[_NONCE_BYTES:],
                _associated_data(account_group_id, campaign_id),
            )
        except InvalidTag:
            raise SealedSecretError(
                f"sealed webhook secret under key id {key_id!r} failed authentication: another "
                "campaign's, altered, or that id's key material is not the one that sealed it"
            ) from None
        return plain.decode()

    def secret_of(
        self, webhook: Mapping[str, Any], *, account_group_id: str, campaign_id: str
    ) -> str | None:
        """The signing secret of a stored definition's `webhook` object: opened from
        `sealedSecret`, else the clear `secret` of a definition stored before sealing, else
        None. Raises `SealedSecretError` for a sealed one that does not open."""
        sealed = webhook.get(SEALED_FIELD)
        if isinstance(sealed, str) and sealed:
            return self.open(sealed, account_group_id=account_group_id, campaign_id=campaign_id)
        clear = webhook.get(CLEAR_FIELD)
        return clear if isinstance(clear, str) and clear else None

    def sealed_webhook(
        self, webhook: Mapping[str, Any], *, account_group_id: str, campaign_id: str
    ) -> dict[str, Any]:
        """A definition's `webhook` object with its clear `secret` replaced by `sealedSecret`
        (unchanged when it has no clear secret)."""
        sealed = dict(webhook)
        secret = sealed.pop(CLEAR_FIELD, None)
        if isinstance(secret, str) and secret:
            sealed[SEALED_FIELD] = self.seal(
                secret, account_group_id=account_group_id, campaign_id=campaign_id
            )
        return sealed

    def seal_stored(self, connection: Connection) -> int:
        """Seals, in place, every stored campaign whose webhook secret is still in clear, and
        re-seals under the ring's first key those sealed under an older one (so an old key can
        be retired once every API and worker has started on the new ring); returns how many rows
        changed. Idempotent; run inside the caller's transaction (migration 0006 and
        `Store.open`, under the migration lock). One pass over the rows whose definition text
        mentions a secret at all. A sealed secret that does not open here is left as it is
        (its key may still come: `SealedSecretError` at send time names it)."""
        text_of = cast(_campaigns.c.definition, Text)
        rows = connection.execute(
            select(
                _campaigns.c.account_group_id, _campaigns.c.campaign_id, _campaigns.c.definition
            ).where(text_of.like('%"secret"%') | text_of.like(f'%"{SEALED_FIELD}"%'))
        ).all()
        current = f"{VERSION}:{self._ring.primary.id}:"
        sealed = 0
        for account_group_id, campaign_id, definition in rows:
            webhook = (definition or {}).get("webhook")
            if not isinstance(webhook, dict):
                continue
            ids = {"account_group_id": account_group_id, "campaign_id": campaign_id}
            old = webhook.get(SEALED_FIELD)
            if isinstance(old, str) and old and not old.startswith(current):
                try:
                    secret = self.open(old, **ids)
                except SealedSecretError:
                    continue
                new_webhook = {**webhook, SEALED_FIELD: self.seal(secret, **ids)}
            elif webhook.get(CLEAR_FIELD):
                new_webhook = self.sealed_webhook(webhook, **ids)
            else:
                continue
            connection.execute(
                update(_campaigns)
                .where(
                    _campaigns.c.account_group_id == account_group_id,
                    _campaigns.c.campaign_id == campaign_id,
                )
                .values(definition={**definition, "webhook": new_webhook})
            )
            sealed += 1
        return sealed

    def _cipher(self, key_id: str) -> AESGCM:
        cipher = self._ciphers.get(key_id)
        if cipher is not None:
            return cipher
        key = self._ring.get(key_id)
        if key is None and self._reload is not None:
            ring = self._reload()
            self._ring = PayloadKeyRing(
                (self._ring.primary, *(k for k in ring.keys if k.id != self._ring.primary.id))
            )
            key = self._ring.get(key_id)
        if key is None:
            raise SealedSecretError(
                f"webhook secret sealed under key id {key_id!r}, which this process's payload "
                f"key ring ({', '.join(self._ring.ids)}) does not hold"
            )
        derived = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_INFO).derive(
            key.secret
        )
        cipher = AESGCM(derived)
        self._ciphers[key_id] = cipher
        return cipher


def _associated_data(account_group_id: str, campaign_id: str) -> bytes:
    return b"\x00".join((_INFO, account_group_id.encode(), campaign_id.encode()))
