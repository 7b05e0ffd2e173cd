"""Delivery over real SMTP: once per (instance, step), permanent failures end the instance."""

from __future__ import annotations

import os
import signal
from typing import Any

import pytest
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.worker import Worker

from campaign_engine.deliveries import DeliveryLedger, DeliveryState
from campaign_engine.settings import Settings
from campaign_engine.store import Store
from devsupport.servers import SmtpSink
from tests.helpers import (
    Api,
    Campaign,
    approve_ok,
    assert_eventually,
    assert_failed_with,
    current_details,
    enrol_to_gate,
    handle_of,
    message_id_of,
    wait_for_status,
    worker_process,
)
from workflows.campaign import CampaignWorkflow
from workflows.types import DeliveryOutcome, StopReason


@pytest.fixture
def settings_overrides(smtp: SmtpSink, request: pytest.FixtureRequest) -> dict[str, Any]:
    """SMTP delivery to the test's server, plus the test's own (`indirect` parametrization)."""
    extra: dict[str, Any] = getattr(request, "param", {})
    return {
        "delivery": "smtp",
        "smtp_port": smtp.port,
        "sender": "Sales <sales@acme.test>",
        **extra,
    }


async def test_smtp_delivery_sends_once_with_its_message_id(
    smtp: SmtpSink, api: Api, campaign: Campaign, worker: Worker
) -> None:
    instance_id = await enrol_to_gate(api, campaign)

    await approve_ok(api, campaign, instance_id)
    await wait_for_status(
        api, campaign, instance_id, workflowStatus="pending", hasPendingApproval=False
    )

    [message] = smtp.received()
    assert message["Message-ID"] == message_id_of(campaign, instance_id, "intro")
    assert message["From"] == "Sales <sales@acme.test>"
    assert message["To"] == "ada@example.com"
    assert message["Subject"] == "Hello Ada"


async def test_smtp_permanent_refusal_fails_instance(
    smtp: SmtpSink, api: Api, campaign: Campaign, worker: Worker, temporal: Client, store: Store
) -> None:
    # A policy refusal is not the address's fault (RFC 3463 X.7.x): no bounce, a failure.
    smtp.reject_recipient_with = "550 5.7.1 refused by policy"
    instance_id = await enrol_to_gate(api, campaign)

    await approve_ok(api, campaign, instance_id)
    status = await wait_for_status(api, campaign, instance_id, workflowStatus="failed")

    assert status["workflowStopReason"] == "DELIVERY_FAILED"
    handle = handle_of(temporal, campaign, instance_id)
    assert (await handle.describe()).status == WorkflowExecutionStatus.FAILED
    cause = await assert_failed_with(handle, StopReason.DELIVERY_FAILED)
    assert "550" in cause.message
    assert smtp.received() == []
    assert await DeliveryLedger(store).state(message_id_of(campaign, instance_id, "intro")) is None


async def test_smtp_transient_failures_retry_then_deliver_once(
    smtp: SmtpSink, api: Api, campaign: Campaign, worker: Worker
) -> None:
    smtp.transient_failures = 2
    instance_id = await enrol_to_gate(api, campaign)

    await approve_ok(api, campaign, instance_id)
    await wait_for_status(
        api, campaign, instance_id, workflowStatus="pending", hasPendingApproval=False
    )

    assert smtp.data_attempts == 3
    assert len(smtp.received()) == 1


@pytest.mark.parametrize(
    ("killed_at", "ledger_after", "outcome"),
    [
        # Dies at RCPT: the server holds nothing, so the next attempt must send.
        ("rcpt", DeliveryState.SENT, DeliveryOutcome.SENT),
        # The server has the whole message; the worker dies before it hears "250": never again,
        # and the instance says so.
        ("data", DeliveryState.IN_DOUBT, DeliveryOutcome.IN_DOUBT),
    ],
)
async def test_worker_killed_mid_send_never_sends_twice(
    killed_at: str,
    ledger_after: DeliveryState,
    outcome: DeliveryOutcome,
    smtp: SmtpSink,
    api: Api,
    campaign: Campaign,
    settings: Settings,
    store: Store,
    temporal: Client,
) -> None:
    async with worker_process(settings) as first:
        instance_id = await enrol_to_gate(api, campaign)
        setattr(smtp, f"on_{killed_at}", lambda: os.kill(first.pid, signal.SIGKILL))
        await approve_ok(api, campaign, instance_id)
        await first.wait()
    setattr(smtp, f"on_{killed_at}", None)

    handle = handle_of(temporal, campaign, instance_id)
    async with worker_process(settings):
        status = await wait_for_status(
            api, campaign, instance_id, workflowStatus="pending", hasPendingApproval=False
        )
        [delivery] = (await handle.query(CampaignWorkflow.lead_status)).deliveries
        details = await current_details(handle)

    assert status["latestStep"] == "intro"
    assert len(smtp.received()) == 1
    ledger = DeliveryLedger(store)
    assert await ledger.state(message_id_of(campaign, instance_id, "intro")) == ledger_after
    assert (delivery.step_id, delivery.outcome) == ("intro", outcome)
    assert ("**Delivery in doubt**" in details) is (outcome == DeliveryOutcome.IN_DOUBT)


async def test_retried_delivery_after_recorded_send_is_skipped(
    smtp: SmtpSink, api: Api, campaign: Campaign, worker: Worker, store: Store
) -> None:
    instance_id = await enrol_to_gate(api, campaign)
    await approve_ok(api, campaign, instance_id)

    async def recorded() -> bool:
        state = await DeliveryLedger(store).state(message_id_of(campaign, instance_id, "intro"))
        return state == DeliveryState.SENT

    await assert_eventually(recorded)
    assert len(smtp.received()) == 1


@pytest.mark.parametrize(
    "answer",
    ["550 5.1.1 <ada@example.com>: no such mailbox", "553 mailbox name not allowed", "556 5.1.10"],
)
async def test_a_recipient_refused_for_good_at_send_is_a_hard_bounce(
    answer: str, smtp: SmtpSink, api: Api, campaign: Campaign, worker: Worker, store: Store
) -> None:
    smtp.reject_recipient_with = answer
    instance_id = await enrol_to_gate(api, campaign)

    await approve_ok(api, campaign, instance_id)
    status = await wait_for_status(api, campaign, instance_id, workflowStatus="stopped")

    assert status["workflowStopReason"] == "LEAD_BOUNCED"
    assert smtp.received() == []
    [row] = await store.list_suppressions(campaign.account_group_id)
    assert row.source == "bounce" and row.email_hash is not None
    assert row.evidence is not None and row.evidence["rule"] == "smtp_recipient_refused"
    assert "ada@example.com" not in str(row.evidence)
    enrolled_again = await api.http.post(
        f"{campaign.url}/workflow-instances",
        json={"lead": {"id": "0" * 24, "email": "ada@example.com", "firstName": "A"}},
        headers=campaign.auth,
    )
    assert enrolled_again.json()["error"]["code"] == "LEAD_SUPPRESSED"
    assert enrolled_again.json()["error"]["details"] == "bounce"
    # The stats count it as a bounce of a message never sent: a rate of 1, not 1/0 or above 1.
    stats = (await api.http.get(f"{campaign.url}/stats", headers=campaign.auth)).json()["data"]
    assert {key: stats["total"][key] for key in ("sent", "refused", "bounced", "bounceRate")} == {
        "sent": 0,
        "refused": 1,
        "bounced": 1,
        "bounceRate": 1.0,
    }
    [step] = stats["steps"]
    assert (step["sent"], step["refused"], step["bounceRate"]) == (0, 1, 1.0)


@pytest.mark.parametrize(
    "settings_overrides", [{"bounce_domain": "bounce.acme.test"}], indirect=True
)
async def test_verp_envelope_sender_names_the_message_and_its_bounce_matches(
    smtp: SmtpSink,
    api: Api,
    campaign: Campaign,
    worker: Worker,
    store: Store,
) -> None:
    instance_id = await enrol_to_gate(api, campaign)
    await approve_ok(api, campaign, instance_id)

    async def envelopes() -> list[Any]:
        return smtp.received_envelopes()

    await assert_eventually(envelopes, within=15.0)

    [envelope] = smtp.received_envelopes()
    local, _, domain = envelope.mail_from.partition("@")
    assert domain == "bounce.acme.test" and local.startswith("bounces+")
    assert smtp.received()[0]["From"] == "Sales <sales@acme.test>"
    # A bounce that returns nothing of the original: only its envelope address names it.
    bare = (
        f"From: MAILER-DAEMON@mx.example.net\r\nTo: {envelope.mail_from}\r\n"
        "Subject: Undelivered Mail Returned to Sender\r\nMessage-ID: <b1@mx.example.net>\r\n"
        "MIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="R"\r\n\r\n'
        "--R\r\nContent-Type: text/plain\r\n\r\nFailed.\r\n"
        "--R\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.example.net"
        "\r\n\r\nFinal-Recipient: rfc822; someone-else@example.org\r\nAction: failed\r\n"
        "Status: 5.1.1\r\n--R--\r\n"
    ).encode()
    answer = await api.http.post(
        f"/v1/accounts/{campaign.account_group_id}/inbound-messages",
        content=bare,
        headers={**campaign.auth, "Content-Type": "message/rfc822"},
    )

    data = answer.json()["data"]
    assert (data["action"], data["matched"]["matchedBy"]) == ("suppressed", "verp")
    assert data["matched"]["workflowInstanceId"] == instance_id
    status = await wait_for_status(api, campaign, instance_id, workflowStatus="stopped")
    assert status["workflowStopReason"] == "LEAD_BOUNCED"
