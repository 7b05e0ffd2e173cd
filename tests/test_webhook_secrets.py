"""Webhook secrets at rest (issue 24, finding 7): sealed with the payload key ring on SQLite and
PostgreSQL; secrets stored in clear before are sealed by migration 0006 and readable meanwhile."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from alembic import command
from alembic.config import Config
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from campaign_engine.codec import PayloadKeyRing, new_key
from campaign_engine.ids import new_object_id
from campaign_engine.store import MIGRATIONS, Store
from campaign_engine.webhook_secrets import SealedSecretError, WebhookSecrets

SECRET = "a-clear-secret-written-before-sealing"
OLD_KEY, NEW_KEY = new_key("k-old"), new_key("k-new")


def legacy_definition() -> dict[str, Any]:
    """A campaign as the code before sealing stored it: the webhook secret in clear."""
    return {
        "name": "Stored before 0006",
        "steps": [{"id": "intro", "subject": "Hi", "body": "Hello"}],
        "webhook": {"url": "https://hooks.example.com/c", "secret": SECRET},
    }


async def raw_definition(url: str, account_group_id: str, campaign_id: str) -> str:
    """The stored definition as the database holds it, as text (what a reader of the file or
    a database dump sees)."""
    engine = create_async_engine(url)
    try:
        async with engine.connect() as connection:
            cast = "definition::text" if connection.dialect.name == "postgresql" else "definition"
            value = await connection.scalar(
                text(
                    f"SELECT {cast} FROM campaigns WHERE account_group_id = :g AND campaign_id = :c"
                ),
                {"g": account_group_id, "c": campaign_id},
            )
            return str(value)
    finally:
        await engine.dispose()


async def downgrade_to(url: str, revision: str) -> None:
    def downgrade(connection: Connection) -> None:
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        config.attributes["connection"] = connection
        command.downgrade(config, revision)

    engine = create_async_engine(url)
    try:
        async with engine.begin() as connection:
            await connection.run_sync(downgrade)
    finally:
        await engine.dispose()


async def test_migration_0006_seals_clear_secrets(database_url: str) -> None:
    group, campaign = new_object_id(), new_object_id()
    store = await Store.open(database_url)
    await store.put_campaign(group, campaign, legacy_definition())
    await store.close()
    await downgrade_to(database_url, "0005")
    assert SECRET in await raw_definition(database_url, group, campaign)

    secrets = WebhookSecrets(PayloadKeyRing((OLD_KEY,)))
    store = await Store.open(database_url, webhook_secrets=secrets)
    try:
        record = await store.get_campaign(group, campaign)
    finally:
        await store.close()

    assert record is not None
    webhook = record.definition["webhook"]
    assert set(webhook) == {"url", "sealedSecret"}
    assert webhook["sealedSecret"].startswith("v1:k-old:")
    assert secrets.secret_of(webhook, account_group_id=group, campaign_id=campaign) == SECRET
    assert SECRET not in await raw_definition(database_url, group, campaign)
    # The rest of the definition is as it was.
    assert record.definition["steps"] == legacy_definition()["steps"]


async def test_clear_secrets_stay_readable_until_a_process_with_the_ring_seals_them(
    database_url: str,
) -> None:
    # The database was migrated by a process without the ring (a CLI command): 0006 could not
    # seal; the secret stays readable, and the next API or worker start seals it.
    group, campaign = new_object_id(), new_object_id()
    store = await Store.open(database_url)
    await store.put_campaign(group, campaign, legacy_definition())
    record = await store.get_campaign(group, campaign)
    await store.close()
    secrets = WebhookSecrets(PayloadKeyRing((OLD_KEY,)))
    assert record is not None
    assert (
        secrets.secret_of(
            record.definition["webhook"], account_group_id=group, campaign_id=campaign
        )
        == SECRET
    )

    store = await Store.open(database_url, webhook_secrets=secrets)
    await store.close()

    assert SECRET not in await raw_definition(database_url, group, campaign)
    store = await Store.open(database_url, webhook_secrets=secrets)  # idempotent
    try:
        sealed = await store.get_campaign(group, campaign)
    finally:
        await store.close()
    assert sealed is not None
    assert (
        secrets.secret_of(
            sealed.definition["webhook"], account_group_id=group, campaign_id=campaign
        )
        == SECRET
    )


def test_rotation_keeps_sealed_secrets_readable_and_a_missing_key_is_named() -> None:
    ids = {"account_group_id": "a" * 24, "campaign_id": "b" * 24}
    sealed = WebhookSecrets(PayloadKeyRing((OLD_KEY,))).seal(SECRET, **ids)

    rotated = WebhookSecrets(PayloadKeyRing((NEW_KEY, OLD_KEY)))
    assert rotated.open(sealed, **ids) == SECRET
    assert rotated.seal(SECRET, **ids).startswith("v1:k-new:")
    with pytest.raises(SealedSecretError, match="k-old"):
        WebhookSecrets(PayloadKeyRing((NEW_KEY,))).open(sealed, **ids)


def test_a_sealed_secret_is_bound_to_its_campaign_and_to_its_bytes() -> None:
    secrets = WebhookSecrets(PayloadKeyRing((OLD_KEY,)))
    ids = {"account_group_id": "a" * 24, "campaign_id": "b" * 24}
    sealed = secrets.seal(SECRET, **ids)
    prefix, _, data = sealed.rpartition(":")
    flipped = f"{prefix}:{'A' if data[0] != 'A' else 'B'}{data[1:]}"

    assert SECRET not in sealed
    assert secrets.seal(SECRET, **ids) != sealed  # a fresh nonce each time
    for group, campaign in (("c" * 24, "b" * 24), ("a" * 24, "c" * 24)):
        with pytest.raises(SealedSecretError):
            secrets.open(sealed, account_group_id=group, campaign_id=campaign)
    for broken in (flipped, "v2:k-old:xyz", "v1:k-old:", "not sealed at all"):
        with pytest.raises(SealedSecretError):
            secrets.open(broken, **ids)


def test_the_sealing_key_is_not_the_payload_key() -> None:
    # A sealed secret is under a key derived for this purpose: the payload key itself opens
    # nothing of it.
    ids = {"account_group_id": "a" * 24, "campaign_id": "b" * 24}
    sealed = WebhookSecrets(PayloadKeyRing((OLD_KEY,))).seal(SECRET, **ids)
    data = base64.urlsafe_b64decode(sealed.rpartition(":")[2] + "==")
    for aad in (None, b""):
        with pytest.raises(InvalidTag):
            AESGCM(OLD_KEY.secret).decrypt(data[:12], data[12:], aad)


async def test_a_start_on_a_rotated_ring_reseals_so_the_old_key_can_retire(
    database_url: str,
) -> None:
    group, campaign = new_object_id(), new_object_id()
    ids = {"account_group_id": group, "campaign_id": campaign}
    old_ring = WebhookSecrets(PayloadKeyRing((OLD_KEY,)))
    store = await Store.open(database_url, webhook_secrets=old_ring)
    await store.put_campaign(
        group,
        campaign,
        {
            **legacy_definition(),
            "webhook": old_ring.sealed_webhook(legacy_definition()["webhook"], **ids),
        },
    )
    await store.close()

    store = await Store.open(
        database_url, webhook_secrets=WebhookSecrets(PayloadKeyRing((NEW_KEY, OLD_KEY)))
    )
    try:
        record = await store.get_campaign(group, campaign)
    finally:
        await store.close()

    assert record is not None
    sealed = record.definition["webhook"]["sealedSecret"]
    assert sealed.startswith("v1:k-new:")
    assert WebhookSecrets(PayloadKeyRing((NEW_KEY,))).open(sealed, **ids) == SECRET
