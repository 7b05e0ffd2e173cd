"""The store on both engines: SQLite by default, PostgreSQL in production; the same answers."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.engine import Connection

from campaign_engine import deliveries, mailboxes
from campaign_engine.campaign_stats import campaign_stats
from campaign_engine.deliveries import Delivery
from campaign_engine.ids import new_object_id
from campaign_engine.inbound_messages import InboundMessageRow
from campaign_engine.keys import KeyRing, Permission
from campaign_engine.settings import SecretUrl, Settings
from campaign_engine.store import MIGRATIONS, Base, Store, Suppression, utcnow
from tests import services


def head_revision() -> str | None:
    """The newest migration, as Alembic reads it from the migrations folder."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return ScriptDirectory.from_config(config).get_current_head()


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[Store]:
    opened = await Store.open(database_url)
    yield opened
    await opened.close()


def is_aware_utc(value: datetime | None) -> bool:
    return value is not None and value.utcoffset() == timedelta(0)


async def test_issue_key_verifies_with_groups_and_permissions(store: Store) -> None:
    keyring = KeyRing(store, b"pepper")
    groups = [new_object_id(), new_object_id()]
    issued = await keyring.issue("crm", groups, [Permission.CAMPAIGNS_READ])

    principal = await keyring.verify(issued.key)
    row = await store.get_api_key(issued.id)

    assert principal is not None
    assert principal.account_groups == set(groups)
    assert principal.permissions == {Permission.CAMPAIGNS_READ}
    assert row is not None and row.account_groups == sorted(groups)
    assert is_aware_utc(row.created_at) and row.created_at == issued.created_at
    assert await keyring.verify(issued.key + "x") is None


async def test_revoke_key_rejects_it_and_keeps_first_time(store: Store) -> None:
    keyring = KeyRing(store, b"pepper")
    issued = await keyring.issue("crm", [new_object_id()], list(Permission))

    assert await store.revoke_api_key(issued.id)
    first = await store.get_api_key(issued.id)
    assert await store.revoke_api_key(issued.id)
    second = await store.get_api_key(issued.id)

    assert await keyring.verify(issued.key) is None
    assert first is not None and second is not None
    assert is_aware_utc(first.revoked_at) and second.revoked_at == first.revoked_at
    assert not await store.revoke_api_key("000000000000")


async def test_touch_key_records_last_use(store: Store) -> None:
    issued = await KeyRing(store, b"pepper").issue("crm", [new_object_id()], list(Permission))
    # Given in another zone: the store hands it back as the same instant, in UTC.
    when = datetime(2026, 11, 29, 9, 30, 15, 123456, tzinfo=UTC).astimezone(
        datetime.now().astimezone().tzinfo
    )

    await store.touch_api_key(issued.id, when)
    row = await store.get_api_key(issued.id)

    assert row is not None and row.last_used_at == when
    assert row.last_used_at.tzinfo == UTC


async def test_list_keys_returns_aware_datetimes(store: Store) -> None:
    issued = await KeyRing(store, b"pepper").issue("crm", [new_object_id()], list(Permission))

    listed = {key.key_id: key for key in await store.list_api_keys()}

    assert is_aware_utc(listed[issued.id].created_at)


async def test_put_campaign_creates_then_replaces(store: Store) -> None:
    group, campaign = new_object_id(), new_object_id()
    first = {"name": "Première", "steps": [{"id": "intro", "body": "Grüße {{ lead.firstName }}"}]}
    second = {**first, "name": "Second", "tags": {"nested": [1, 2.5, None, True]}}

    created, was_created = await store.put_campaign(group, campaign, first)
    replaced, was_created_again = await store.put_campaign(group, campaign, second)
    read = await store.get_campaign(group, campaign)

    assert was_created and not was_created_again
    assert created.definition == first
    assert read is not None and read.definition == second
    assert read.created_at == created.created_at
    assert read.updated_at == replaced.updated_at >= created.updated_at
    assert is_aware_utc(read.created_at) and is_aware_utc(read.updated_at)


async def test_get_campaign_unknown_is_none(store: Store) -> None:
    assert await store.get_campaign(new_object_id(), new_object_id()) is None


async def test_put_campaign_racing_first_puts_create_once(store: Store) -> None:
    group, campaign = new_object_id(), new_object_id()

    results = await asyncio.gather(
        *(store.put_campaign(group, campaign, {"version": n}) for n in range(8))
    )

    assert sorted(created for _, created in results) == [False] * 7 + [True]
    read = await store.get_campaign(group, campaign)
    assert read is not None and read.definition["version"] in range(8)


async def test_open_again_keeps_data_and_schema(database_url: str, store: Store) -> None:
    group, campaign = new_object_id(), new_object_id()
    await store.put_campaign(group, campaign, {"name": "kept"})

    reopened = await Store.open(database_url)
    try:
        read = await reopened.get_campaign(group, campaign)
        async with reopened.engine.connect() as connection:
            versions = await connection.execute(text("SELECT version_num FROM alembic_version"))
            version_rows = versions.scalars().all()
    finally:
        await reopened.close()

    assert read is not None and read.definition == {"name": "kept"}
    assert version_rows == [head_revision()]


@pytest.mark.parametrize("engine", ["sqlite", "postgresql"])
async def test_open_from_processes_at_once_migrates_once(engine: str, tmp_path: Path) -> None:
    """Replicas starting together on an empty database: every one comes up, one schema."""
    database: contextlib.AbstractAsyncContextManager[str]
    if engine == "postgresql":
        await services.check_postgres()
        database = services.fresh_database()
    else:
        database = contextlib.nullcontext(f"sqlite+aiosqlite:///{tmp_path / 'shared.db'}")
    async with database as url:
        settings = Settings(state_dir=tmp_path / "var", database_url=SecretUrl(url))

        async def keys_list(n: int) -> int:
            log = tmp_path / f"cli-{n}.log"
            async with services.cli_process(settings, "keys", "list", log=log) as process:
                code = await process.wait()
            assert code == 0, services.output_of(log)
            return code

        await asyncio.gather(*(keys_list(n) for n in range(4)))
        store = await Store.open(url)
        try:
            async with store.engine.connect() as connection:
                versions = await connection.execute(text("SELECT version_num FROM alembic_version"))
                assert versions.scalars().all() == [head_revision()]
            assert await store.list_api_keys() == []
        finally:
            await store.close()


async def test_migrations_match_the_models(store: Store) -> None:
    """Every table, column and index the models declare is what the migrations create: a model
    changed without its migration (or the reverse) fails here, on both engines."""

    def differences(connection: Connection) -> list[Any]:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return list(compare_metadata(context, Base.metadata))

    assert {"deliveries", "mailboxes", "mailbox_reservations"} <= set(Base.metadata.tables), (
        deliveries,
        mailboxes,
    )
    async with store.engine.connect() as connection:
        assert await connection.run_sync(differences) == []


# --- campaign pause --------------------------------------------------------------------------


async def test_pause_is_idempotent_and_resume_clears_it(store: Store) -> None:
    group, campaign = new_object_id(), new_object_id()
    await store.put_campaign(group, campaign, {"name": "paused"})
    when = datetime(2026, 12, 2, 10, 0, tzinfo=UTC)

    assert not await store.campaign_paused(group, campaign)
    paused = await store.set_campaign_paused(group, campaign, paused_by="key-1", at=when)
    again = await store.set_campaign_paused(group, campaign, paused_by="key-2")

    assert paused is not None and (paused.paused_at, paused.paused_by) == (when, "key-1")
    assert paused.paused
    assert again == paused  # the first pause's time and who are kept
    assert await store.campaign_paused(group, campaign)
    read = await store.get_campaign(group, campaign)
    assert read is not None and (read.paused_at, read.paused_by) == (when, "key-1")
    assert is_aware_utc(read.paused_at)

    resumed = await store.set_campaign_paused(group, campaign, paused_by=None)
    assert resumed is not None and (resumed.paused_at, resumed.paused_by) == (None, None)
    assert not await store.campaign_paused(group, campaign)
    assert await store.set_campaign_paused(group, campaign, paused_by=None) == resumed

    before = datetime.now(UTC)
    now = await store.set_campaign_paused(group, campaign, paused_by="key-3")
    assert now is not None and now.paused_by == "key-3"
    assert now.paused_at is not None and is_aware_utc(now.paused_at)
    assert before <= now.paused_at <= datetime.now(UTC)


async def test_pause_of_unknown_campaign(store: Store) -> None:
    group, campaign = new_object_id(), new_object_id()

    assert await store.set_campaign_paused(group, campaign, paused_by="key-1") is None
    assert await store.set_campaign_paused(group, campaign, paused_by=None) is None
    assert not await store.campaign_paused(group, campaign)
    assert await store.get_campaign(group, campaign) is None


async def test_pause_time_given_in_another_zone_reads_back_utc(store: Store) -> None:
    group, campaign = new_object_id(), new_object_id()
    await store.put_campaign(group, campaign, {"name": "zones"})
    when = datetime(2026, 12, 2, 10, 0, tzinfo=UTC).astimezone(timezone(timedelta(hours=-5)))

    paused = await store.set_campaign_paused(group, campaign, paused_by="key-1", at=when)

    assert paused is not None and paused.paused_at == when and is_aware_utc(paused.paused_at)
    with pytest.raises(ValueError, match="naive"):
        await store.set_campaign_paused(
            group, campaign, paused_by="key-1", at=datetime(2026, 12, 2, 10)
        )


async def test_put_campaign_keeps_the_pause(store: Store) -> None:
    group, campaign = new_object_id(), new_object_id()
    created, _ = await store.put_campaign(group, campaign, {"name": "v1"})
    assert (created.paused_at, created.paused_by) == (None, None) and not created.paused
    paused = await store.set_campaign_paused(group, campaign, paused_by="operator")

    replaced, was_created = await store.put_campaign(group, campaign, {"name": "v2"})

    assert paused is not None and not was_created
    assert replaced.definition == {"name": "v2"}
    assert (replaced.paused_at, replaced.paused_by) == (paused.paused_at, "operator")
    assert await store.campaign_paused(group, campaign)
    read = await store.get_campaign(group, campaign)
    assert read is not None and read.paused_at == paused.paused_at


async def test_hand_over_refusal_reads_suppression_then_pause_in_one_statement(
    store: Store,
) -> None:
    account_group_id, campaign_id = new_object_id(), new_object_id()
    lead_id, other_lead = new_object_id(), new_object_id()
    await store.put_campaign(account_group_id, campaign_id, {"name": "C"})

    assert await store.hand_over_refusal(account_group_id, campaign_id, lead_id, "h1") is None
    await store.set_campaign_paused(account_group_id, campaign_id, paused_by="k")
    assert await store.hand_over_refusal(account_group_id, campaign_id, lead_id, "h1") == "paused"
    await store.add_suppression(
        Suppression(
            account_group_id=account_group_id,
            lead_id=other_lead,
            email_hash="h1",
            source="api",
            decided_by="k",
            note="",
            created_at=utcnow(),
        )
    )
    # The same address under another lead id is suppressed too; suppression wins over a pause.
    refusal = await store.hand_over_refusal(account_group_id, campaign_id, lead_id, "h1")
    assert refusal == "suppressed"
    assert await store.hand_over_refusal(account_group_id, campaign_id, lead_id, None) == "paused"
    assert await store.hand_over_refusal(new_object_id(), campaign_id, lead_id, "h1") is None


async def test_the_delivery_ledger_moves_through_its_states_on_both_databases(
    store: Store,
) -> None:
    ledger = deliveries.DeliveryLedger(store)
    claim, state = deliveries.Claim, deliveries.DeliveryState
    first, second, third = (f"<{new_object_id()}@test>" for _ in range(3))

    assert await ledger.claim(first, "wf", "intro") == claim.CLAIMED
    assert await ledger.claim(first, "wf", "intro") == claim.CLAIMED  # a retry before sending
    assert await ledger.hand_over(first) is True
    assert await ledger.hand_over(first) is False  # a stale attempt must not send
    await ledger.mark_sent(first)
    assert await ledger.claim(first, "wf", "intro") == claim.ALREADY_SENT
    assert await ledger.state(first) == state.SENT

    await ledger.claim(second, "wf", "intro")
    await ledger.hand_over(second)
    # The attempt died mid-hand-over: the next one must not send again.
    assert await ledger.claim(second, "wf", "intro") == claim.IN_DOUBT
    assert await ledger.state(second) == state.IN_DOUBT
    await ledger.release(second)
    assert await ledger.state(second) == state.IN_DOUBT  # in doubt is never released

    await ledger.claim(third, "wf", "intro")
    await ledger.release(third)
    assert await ledger.state(third) is None
    assert await ledger.claim(third, "wf", "intro") == claim.CLAIMED


async def test_campaign_stats_count_a_refusal_at_send_once_beside_deliveries(
    store: Store,
) -> None:
    """A lead refused at send time (`smtp` row) counts as refused and bounced, never as sent;
    one delivered to at step 1 and refused at step 2 is attempted once in the total."""
    group, campaign = new_object_id(), new_object_id()
    now = utcnow()
    delivered, refused_later, refused_first = (new_object_id() for _ in range(3))

    def workflow_id(instance: str) -> str:
        return f"campaign:{group}:{campaign}:{instance}"

    def refusal(instance: str, step: str) -> InboundMessageRow:
        return InboundMessageRow(
            scope=f"account-group:{group}",
            inbound_message_id=new_object_id(),
            source="smtp",
            classification="hard_bounce",
            evidence={"rule": "smtp_recipient_refused"},
            action="suppressed",
            account_group_id=group,
            campaign_id=campaign,
            workflow_instance_id=instance,
            lead_id=new_object_id(),
            step_id=step,
            matched_by="recipient_address",
            email_hash=None,
            received_at=now,
            created_at=now,
        )

    async with store.session() as session:
        for instance in (delivered, refused_later):
            session.add(
                Delivery(
                    message_id=f"<{instance}@example.com>",
                    workflow_id=workflow_id(instance),
                    step_id="intro",
                    state="sent",
                    created_at=now,
                    updated_at=now,
                    account_group_id=group,
                    campaign_id=campaign,
                )
            )
        session.add(refusal(refused_later, "follow-up"))
        session.add(refusal(refused_first, "intro"))

    stats = await campaign_stats(store, group, campaign)

    assert (stats.total.sent, stats.total.refused) == (2, 1)
    assert stats.total.outcomes == {"hard_bounce": 2}
    assert stats.total.rate("hard_bounce") == round(2 / 3, 4)
    intro, follow_up = stats.steps["intro"], stats.steps["follow-up"]
    assert (intro.sent, intro.refused, intro.rate("hard_bounce")) == (2, 1, round(1 / 3, 4))
    assert (follow_up.sent, follow_up.refused, follow_up.rate("hard_bounce")) == (0, 1, 1.0)
