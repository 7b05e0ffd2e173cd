"""Mailboxes belong to account groups: one tenant never sends as another's mailbox, nor spends
its daily cap (issue 24, finding 2), neither through the API nor by a workflow input that never
went through it (finding 1's delivery check)."""

from __future__ import annotations

import asyncio
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import Client
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode
from temporalio.testing import ActivityEnvironment
from temporalio.worker import Worker

from activities.campaign import CampaignActivities
from activities.mailers import OutboxMailer
from activities.outbox import FileOutbox
from api.instances import WorkflowInstances
from campaign_engine.deliveries import DeliveryLedger
from campaign_engine.ids import InstanceRef, message_id_for, new_object_id
from campaign_engine.mailboxes import MailboxReservations
from campaign_engine.settings import MailboxLimits, Settings
from campaign_engine.store import Store
from tests.helpers import Api, Campaign, lead
from tests.helpers.campaigns import enrol, outbox_files, wait_for_status
from tests.helpers.workflows import assert_failed_with, handle_of
from workflows.types import (
    ActivityErrorType,
    CampaignSnapshot,
    CampaignStep,
    DeliveryRequest,
    DraftedContent,
    Lead,
    StopReason,
)

GROUP_A = "a0" * 12
GROUP_B = "b0" * 12
MAILBOX = "sales@acme.example"
OWNED = {
    "mailboxes": {
        MAILBOX: MailboxLimits(account_groups=[GROUP_A], daily_cap=1, time_zone="UTC"),
        "shared@acme.example": MailboxLimits(account_groups="*"),
    }
}
ONE_STEP: dict[str, Any] = {
    "name": "One step",
    "steps": [{"id": "intro", "subject": "Hi", "body": "Hello", "requiresApproval": False}],
}


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    """A's mailbox, capped at one message a day; a mailbox every group shares."""
    return OWNED


async def campaign_in(api: Api, group: str) -> Campaign:
    """A campaign id in `group`, with a key of that group (nothing PUT yet)."""
    return Campaign(group, new_object_id(), await api.issue_key([group]))


def with_from(sender: str | None) -> dict[str, Any]:
    return ONE_STEP if sender is None else {**ONE_STEP, "from": sender}


async def test_a_put_naming_another_groups_mailbox_is_400_on_from(api: Api) -> None:
    theirs = await campaign_in(api, GROUP_B)

    refused = await api.http.put(theirs.url, json=with_from(MAILBOX), headers=theirs.auth)
    nobodys = await api.http.put(
        theirs.url, json=with_from("ceo@bank.example"), headers=theirs.auth
    )

    assert refused.status_code == 400, refused.text
    assert refused.json()["error"]["details"] == "from"
    # Nothing half-applied: the campaign does not exist.
    assert (await api.http.get(theirs.url, headers=theirs.auth)).status_code == 404
    # Another group's mailbox reads exactly like an address nobody configured: no owner leaks.
    assert nobodys.status_code == 400
    assert refused.json()["error"]["message"].replace(MAILBOX, "X") == nobodys.json()["error"][
        "message"
    ].replace("ceo@bank.example", "X")


async def test_owner_shared_mailbox_and_shared_sender_stay_usable(api: Api) -> None:
    ours, theirs = await campaign_in(api, GROUP_A), await campaign_in(api, GROUP_B)

    owner = await api.http.put(ours.url, json=with_from(f"Sales <{MAILBOX}>"), headers=ours.auth)
    shared = await api.http.put(
        theirs.url, json=with_from("shared@acme.example"), headers=theirs.auth
    )
    default = await api.http.put(theirs.url, json=with_from(None), headers=theirs.auth)

    assert (owner.status_code, shared.status_code) == (201, 201), (owner.text, shared.text)
    assert default.status_code == 200, default.text


@pytest.mark.parametrize(
    "settings_overrides",
    [{"mailboxes": {"campaigns@localhost": MailboxLimits(account_groups=[GROUP_A])}}],
)
async def test_a_reserved_shared_sender_is_refused_to_other_groups(api: Api) -> None:
    ours, theirs = await campaign_in(api, GROUP_A), await campaign_in(api, GROUP_B)

    allowed = await api.http.put(ours.url, json=with_from(None), headers=ours.auth)
    refused = await api.http.put(theirs.url, json=with_from(None), headers=theirs.auth)

    assert allowed.status_code == 201, allowed.text
    assert refused.status_code == 400, refused.text
    assert refused.json()["error"]["details"] == "from"


async def test_a_forged_input_sending_as_another_groups_mailbox_sends_nothing_and_spends_no_cap(
    api: Api, worker: Worker, temporal: Client, settings: Settings
) -> None:
    # The reproduction: B's instance names A's mailbox. The API refuses that PUT (above); here
    # the input is started on Temporal directly, as anyone who reaches Temporal could.
    theirs = await campaign_in(api, GROUP_B)
    forged = CampaignSnapshot(
        name="forged",
        steps=[CampaignStep(id="intro", subject="Hi", body="Hello", requires_approval=False)],
        mailbox=f"Security Team <{MAILBOX}>",
    )
    enrolled = lead()
    started = await WorkflowInstances(temporal, settings.task_queue, 5).enrol(
        GROUP_B, theirs.campaign_id, Lead(id=enrolled["id"], email=enrolled["email"]), forged
    )
    handle = handle_of(temporal, theirs, started.workflow_instance_id)

    await assert_failed_with(handle, StopReason.DELIVERY_FAILED)

    history = await handle.fetch_history()
    [failed] = [
        event.activity_task_failed_event_attributes.failure
        for event in history.events
        if event.HasField("activity_task_failed_event_attributes")
    ]
    assert failed.application_failure_info.type == ActivityErrorType.SENDER_NOT_ALLOWED.value
    assert failed.application_failure_info.non_retryable
    assert outbox_files(settings) == []
    today = datetime.now(UTC).date()
    assert await MailboxReservations(api.store).count_on(MAILBOX, today) == 0

    # A's own message of the day still goes out today, from A's mailbox: its cap is untouched.
    ours = await campaign_in(api, GROUP_A)
    put = await api.http.put(ours.url, json=with_from(MAILBOX), headers=ours.auth)
    assert put.status_code == 201, put.text
    instance_id = await enrol(api, ours)
    await wait_for_status(api, ours, instance_id, workflowStatus="completed")
    [sent] = outbox_files(settings)
    assert f"From: {MAILBOX}" in sent.read_text()
    assert await MailboxReservations(api.store).count_on(MAILBOX, today) == 1


async def test_the_shared_sender_is_every_groups_unless_listed(settings: Settings) -> None:
    groups = settings.sending_groups()

    assert groups["campaigns@localhost"] is None
    assert groups[MAILBOX] == frozenset({GROUP_A})
    assert groups["shared@acme.example"] is None
    listed = settings.model_copy(
        update={"mailboxes": {"campaigns@localhost": MailboxLimits(account_groups=[GROUP_B])}}
    )
    assert listed.sending_groups()["campaigns@localhost"] == frozenset({GROUP_B})


@pytest.mark.parametrize(
    "entry",
    [
        '{"sales@acme.example": {"daily_cap": 5}}',
        '{"sales@acme.example": {"account_groups": []}}',
        '{"sales@acme.example": {"account_groups": ["not-a-group"]}}',
        '{"sales@acme.example": {"account_groups": "all"}}',
    ],
)
async def test_a_mailbox_without_its_groups_is_refused_at_start(entry: str, tmp_path: Path) -> None:
    process = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).with_name("campaign-engine")),
        "worker",
        env={"CAMPAIGN_ENGINE_MAILBOXES": entry, "CAMPAIGN_ENGINE_STATE_DIR": str(tmp_path)},
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await process.communicate()

    assert process.returncode == 2, err
    assert b"CAMPAIGN_ENGINE_MAILBOXES: " in err and b"account_groups" in err, err
    assert b"Traceback" not in err


@pytest.mark.parametrize(
    ("mailbox", "group"),
    [
        ("Security Team <security@bigbank.example>", GROUP_A),  # no mailbox of ours at all
        (f"Sales <{MAILBOX}>", GROUP_B),  # A's mailbox, B's instance
        (f"Sales <{MAILBOX.upper()}>", GROUP_B),  # the same, in other case
    ],
)
async def test_the_delivery_activity_refuses_a_sender_its_group_may_not_use(
    mailbox: str, group: str, settings: Settings, store: Store, tmp_path: Path
) -> None:
    activities = CampaignActivities(
        store=store,
        mailer=OutboxMailer(FileOutbox(tmp_path / "outbox")),
        sender=settings.sender,
        unsubscribe_key=b"test unsubscribe key",
        unsubscribe_base_url="https://unsubscribe.example.com",
        mailboxes=settings.mailbox_policies(),
        sending_groups=settings.sending_groups(),
    )
    request = DeliveryRequest(
        workflow_id=f"campaign:{group}:{'2' * 24}:{'3' * 24}",
        lead=Lead(id="a" * 24, email="ada@example.com"),
        content=DraftedContent(step_id="intro", subject="Hi", body="Hello"),
        mailbox=mailbox,
    )

    with pytest.raises(ApplicationError) as refused:
        await ActivityEnvironment().run(activities.deliver_message, request)

    assert refused.value.type == ActivityErrorType.SENDER_NOT_ALLOWED.value
    assert refused.value.non_retryable
    assert not (tmp_path / "outbox").exists() or not any((tmp_path / "outbox").iterdir())
    message_id = message_id_for(request.workflow_id, "intro")
    assert await DeliveryLedger(store).state(message_id) is None
    assert await MailboxReservations(store).get(message_id) is None


async def test_enrolling_in_a_stored_campaign_whose_mailbox_is_not_the_groups_is_400(
    api: Api, temporal: Client, settings: Settings
) -> None:
    # Stored before mailboxes had groups (or the mailbox changed hands since): no instance starts.
    theirs = await campaign_in(api, GROUP_B)
    await api.store.put_campaign(GROUP_B, theirs.campaign_id, with_from(MAILBOX))

    enrolled = lead()
    response = await api.http.post(
        f"{theirs.url}/workflow-instances", json={"lead": enrolled}, headers=theirs.auth
    )

    assert response.status_code == 400, response.text
    assert response.json()["error"]["details"] == "from"
    ref = InstanceRef.of_lead(GROUP_B, theirs.campaign_id, enrolled["id"])
    with pytest.raises(RPCError) as missing:
        await handle_of(temporal, theirs, ref.workflow_instance_id).describe()
    assert missing.value.status == RPCStatusCode.NOT_FOUND
