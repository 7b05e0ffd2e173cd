"""`POST /v1/accounts/{ag}/inbound-messages`: raw mail in, the right instance stopped or held,
the address suppressed, exactly once, never across account groups (real Temporal, real API)."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from temporalio.client import Client
from temporalio.worker import Worker

from campaign_engine import codec, unsubscribe
from campaign_engine.deliveries import DeliveryLedger, DeliveryState
from campaign_engine.ids import workflow_id_for
from campaign_engine.inbound_messages import InboundMessages
from campaign_engine.keys import Permission
from campaign_engine.settings import Settings
from campaign_engine.unsubscribe import load_unsubscribe_key
from entrypoints.devserver import DevServer
from tests.helpers import (
    Api,
    Campaign,
    approve,
    approve_ok,
    assert_eventually,
    create_campaign,
    enrol,
    enrol_to_gate,
    handle_of,
    instance_data,
    lead,
    message_id_of,
    running_api,
    wait_for_status,
)
from tests.inbound_mail import dsn, message

RFC822 = {"Content-Type": "message/rfc822"}
FIRST_STEP = "intro"


def inbound_url(campaign: Campaign) -> str:
    """The account group's inbound endpoint."""
    return f"/v1/accounts/{campaign.account_group_id}/inbound-messages"


async def post(api: Api, campaign: Campaign, raw: bytes, **headers: str) -> httpx.Response:
    """POSTs `raw` as `message/rfc822` with the campaign's key."""
    return await api.http.post(
        inbound_url(campaign), content=raw, headers={**campaign.auth, **RFC822, **headers}
    )


def reply(
    *,
    sender: str = "ada@example.com",
    in_reply_to: str | None = None,
    body: str = "Thanks, let's talk on Friday.\r\n\r\nOn Mon, Sales wrote:\r\n> Hello Ada",
    extra: tuple[str, ...] = (),
) -> bytes:
    """A person's reply, with its own fresh Message-ID."""
    threading = (f"In-Reply-To: {in_reply_to}", f"References: {in_reply_to}") if in_reply_to else ()
    return message(
        f"From: Ada <{sender}>",
        "To: Campaign Engine <campaigns@localhost>",
        "Subject: Re: Hello",
        f"Message-ID: <{uuid.uuid4()}@example.com>",
        *threading,
        *extra,
        body=body,
    )


def bounce(original_message_id: str, *, status: str = "5.1.1", action: str = "failed") -> bytes:
    """An RFC 3464 DSN about our message to ada@example.com."""
    return dsn(
        "\r\n".join(
            (
                "Final-Recipient: rfc822; ada@example.com",
                f"Action: {action}",
                f"Status: {status}",
                f"Diagnostic-Code: smtp; 550 {status} <ada@example.com>: user unknown",
            )
        ),
        returned=f"Message-ID: {original_message_id}\r\nTo: ada@example.com",
        headers=(f"Message-ID: <{uuid.uuid4()}@mx.example.net>",),
    )


def complaint(original_message_id: str) -> bytes:
    """An RFC 5965 (ARF) abuse report about our message to ada@example.com."""
    parts = (
        "Content-Type: text/plain\r\n\r\nAn abuse report.\r\n",
        "Content-Type: message/feedback-report\r\n\r\nFeedback-Type: abuse\r\nVersion: 1\r\n"
        "Original-Rcpt-To: <ada@example.com>\r\n",
        f"Content-Type: text/rfc822-headers\r\n\r\nMessage-ID: {original_message_id}\r\n",
    )
    body = "".join(f"--ARF\r\n{part}" for part in parts) + "--ARF--\r\n"
    return message(
        "From: <fbl@isp.example>",
        "To: <fbl@campaign.example>",
        "Subject: Abuse report",
        f"Message-ID: <{uuid.uuid4()}@isp.example>",
        "MIME-Version: 1.0",
        'Content-Type: multipart/report; report-type=feedback-report; boundary="ARF"',
        body=body,
    )


async def sent_first_step(api: Api, campaign: Campaign) -> tuple[str, str]:
    """Enrols a lead, approves and delivers the first step; returns the instance id and the
    Message-ID the step went out under."""
    instance_id = await enrol_to_gate(api, campaign)
    await approve_ok(api, campaign, instance_id)
    sent_id = message_id_of(campaign, instance_id, FIRST_STEP)
    ledger = DeliveryLedger(api.store)

    async def sent() -> bool:
        return await ledger.state(sent_id) == DeliveryState.SENT

    await assert_eventually(sent, within=15.0)
    return instance_id, sent_id


async def suppressions(api: Api, campaign: Campaign) -> list[dict[str, Any]]:
    """The account group's suppressions as stored."""
    return [
        {
            "lead_id": row.lead_id,
            "source": row.source,
            "evidence": row.evidence,
            "has_email": row.email_hash is not None,
        }
        for row in await api.store.list_suppressions(campaign.account_group_id)
    ]


async def test_a_threaded_reply_stops_the_instance_once_and_answers_the_same_twice(
    api: Api, campaign: Campaign, worker: Worker
) -> None:
    instance_id, sent_id = await sent_first_step(api, campaign)
    raw = reply(in_reply_to=sent_id)

    first = await post(api, campaign, raw)
    again = await post(api, campaign, raw)

    assert first.status_code == 202, first.text
    data = first.json()["data"]
    assert (data["classification"], data["action"]) == ("reply", "stopped")
    assert data["matched"] == {
        "campaignId": campaign.campaign_id,
        "workflowInstanceId": instance_id,
        "leadId": data["matched"]["leadId"],
        "stepId": FIRST_STEP,
        "matchedBy": "in_reply_to",
    }
    assert again.status_code == 202 and again.json()["data"] == data
    status = await wait_for_status(api, campaign, instance_id, workflowStatus="stopped")
    assert status["workflowStopReason"] == "LEAD_REPLIED"
    [recorded] = (await instance_data(api, campaign, instance_id))["inboundMessages"]
    assert recorded["classification"] == "reply"
    assert recorded["inboundMessageId"] == data["inboundMessageId"]
    assert recorded["excerpt"] == "Thanks, let's talk on Friday."
    log = await InboundMessages(api.store).get(
        f"account-group:{campaign.account_group_id}", data["inboundMessageId"]
    )
    assert log is not None and log.classification == "reply" and log.step_id == FIRST_STEP


async def test_a_reply_by_address_closes_the_gate_before_anything_was_sent(
    api: Api, campaign: Campaign, worker: Worker
) -> None:
    instance_id = await enrol_to_gate(api, campaign)

    answer = await post(api, campaign, reply(extra=("X-Mailer: rewritten threading",)))

    data = answer.json()["data"]
    assert (answer.status_code, data["action"]) == (202, "stopped")
    assert data["matched"]["matchedBy"] == "from_address"
    assert data["matched"]["stepId"] is None
    await wait_for_status(api, campaign, instance_id, workflowStatus="stopped")
    refused = await approve(api, campaign, instance_id)
    assert (refused.status_code, refused.json()["error"]["code"]) == (409, "NO_PENDING_APPROVAL")


async def test_a_reply_stops_the_leads_instances_in_every_campaign_of_the_group(
    api: Api, campaign: Campaign, worker: Worker
) -> None:
    same_lead = lead()
    first = await enrol(api, campaign, same_lead)
    other = Campaign(campaign.account_group_id, uuid.uuid4().hex[:24], campaign.key)
    put = await api.http.put(
        other.url,
        json={"name": "Other", "steps": [{"id": "a", "subject": "S", "body": "B"}]},
        headers=other.auth,
    )
    assert put.status_code == 201, put.text
    second = await enrol(api, other, same_lead)
    await wait_for_status(api, campaign, first, hasPendingApproval=True)
    await wait_for_status(api, other, second, hasPendingApproval=True)

    answer = await post(api, campaign, reply())

    assert answer.json()["data"]["action"] == "stopped"
    for each, instance_id in ((campaign, first), (other, second)):
        status = await wait_for_status(api, each, instance_id, workflowStatus="stopped")
        assert status["workflowStopReason"] == "LEAD_REPLIED"


async def test_nothing_matches_across_account_groups(
    api: Api, campaign: Campaign, worker: Worker
) -> None:
    instance_id, sent_id = await sent_first_step(api, campaign)
    stranger = await create_campaign(api)  # another account group, with its own key

    # A forged In-Reply-To naming the first group's message, from an address nobody enrolled.
    forged = await post(api, stranger, reply(sender="mallory@example.net", in_reply_to=sent_id))
    # The first group's lead's address, posted to the other group.
    by_address = await post(api, stranger, reply())
    # A bounce of the first group's message, posted to the other group.
    bounced = await post(api, stranger, bounce(sent_id))

    for answer in (forged, by_address, bounced):
        assert answer.status_code == 202, answer.text
        assert (answer.json()["data"]["matched"], answer.json()["data"]["action"]) == (None, "none")
        # The answer says why nothing matched, without naming the other group's instance.
        assert answer.json()["data"]["noMatch"] == "no_reference"
    data = await instance_data(api, campaign, instance_id)
    assert data["leadStatus"]["workflowStatus"] != "stopped"
    assert data["inboundMessages"] == []
    assert await suppressions(api, campaign) == []


async def test_a_hard_bounce_suppresses_the_address_with_its_evidence(
    api: Api, campaign: Campaign, worker: Worker
) -> None:
    instance_id, sent_id = await sent_first_step(api, campaign)

    answer = await post(api, campaign, bounce(sent_id))

    data = answer.json()["data"]
    assert (data["classification"], data["action"]) == ("hard_bounce", "suppressed")
    assert data["matched"]["matchedBy"] == "returned_message_id"
    assert (data["evidence"]["status"], data["evidence"]["action"]) == ("5.1.1", "failed")
    status = await wait_for_status(api, campaign, instance_id, workflowStatus="stopped")
    assert status["workflowStopReason"] == "LEAD_BOUNCED"
    [row] = await suppressions(api, campaign)
    assert (row["source"], row["has_email"], row["evidence"]["status"]) == ("bounce", True, "5.1.1")
    assert "ada@example.com" not in str(row["evidence"])
    # The address, under another lead id, in the group's other campaigns: refused.
    other = await create_campaign_in(api, campaign)
    again = await api.http.post(
        f"{other.url}/workflow-instances",
        json={"lead": lead(email="ADA@example.com")},
        headers=other.auth,
    )
    assert (again.status_code, again.json()["error"]["code"]) == (409, "LEAD_SUPPRESSED")
    # The answer says why: a bounce, not an unsubscribe.
    assert again.json()["error"]["details"] == "bounce"
    assert "hard-bounced" in again.json()["error"]["message"]
    assert "unsubscribed" not in again.json()["error"]["message"]


async def create_campaign_in(api: Api, campaign: Campaign) -> Campaign:
    """A second campaign in the same account group, with the same key."""
    other = Campaign(campaign.account_group_id, uuid.uuid4().hex[:24], campaign.key)
    put = await api.http.put(
        other.url,
        json={"name": "Other", "steps": [{"id": "a", "subject": "S", "body": "B"}]},
        headers=other.auth,
    )
    assert put.status_code == 201, put.text
    return other


async def test_a_complaint_suppresses_and_stops_lead_complained(
    api: Api, campaign: Campaign, worker: Worker
) -> None:
    instance_id, sent_id = await sent_first_step(api, campaign)

    data = (await post(api, campaign, complaint(sent_id))).json()["data"]

    assert (data["classification"], data["action"]) == ("complaint", "suppressed")
    assert data["evidence"]["feedbackType"] == "abuse"
    status = await wait_for_status(api, campaign, instance_id, workflowStatus="stopped")
    assert status["workflowStopReason"] == "LEAD_COMPLAINED"
    assert [row["source"] for row in await suppressions(api, campaign)] == ["complaint"]


async def test_soft_bounces_are_recorded_until_the_limit_counts_them_hard(
    api: Api, campaign: Campaign, worker: Worker
) -> None:
    instance_id, sent_id = await sent_first_step(api, campaign)

    actions = []
    for _ in range(3):  # the default limit: 3 within 7 days
        answer = await post(api, campaign, bounce(sent_id, status="4.2.2", action="delayed"))
        actions.append(answer.json()["data"]["action"])

    assert actions == ["recorded", "recorded", "suppressed"]
    status = await wait_for_status(api, campaign, instance_id, workflowStatus="stopped")
    assert status["workflowStopReason"] == "LEAD_BOUNCED"
    [row] = await suppressions(api, campaign)
    assert (row["source"], row["evidence"]["rule"]) == ("bounce", "soft_bounce_limit")


async def test_an_auto_reply_is_recorded_and_never_stops(
    api: Api, campaign: Campaign, worker: Worker
) -> None:
    instance_id, sent_id = await sent_first_step(api, campaign)
    raw = reply(
        in_reply_to=sent_id,
        body="I am out of the office until 14 December 2026 with limited access to e-mail.",
        extra=("Auto-Submitted: auto-replied",),
    )

    data = (await post(api, campaign, raw)).json()["data"]

    assert (data["classification"], data["action"]) == ("auto_reply", "recorded")
    recorded = (await instance_data(api, campaign, instance_id))["inboundMessages"]
    assert [(each["classification"], each["returnDate"]) for each in recorded] == [
        ("auto_reply", "2026-12-14")
    ]
    assert (await instance_data(api, campaign, instance_id))["leadStatus"][
        "workflowStatus"
    ] != "stopped"


@pytest.mark.parametrize(
    "settings_overrides", [{"unsubscribe_mailbox": "unsubscribe@campaign.example"}]
)
async def test_a_mailto_unsubscribe_is_handled_as_the_one_click_post(
    api: Api, campaign: Campaign, worker: Worker
) -> None:
    instance_id, _sent_id = await sent_first_step(api, campaign)
    data = await instance_data(api, campaign, instance_id)
    key = load_unsubscribe_key(api.settings)
    token = unsubscribe.mint(
        key,
        account_group_id=campaign.account_group_id,
        campaign_id=campaign.campaign_id,
        lead_id=data["leadStatus"]["leadId"],
        step_id=FIRST_STEP,
        email="ada@example.com",
    )
    raw = message(
        "From: someone-else@example.net",
        "To: unsubscribe@campaign.example",
        f"Subject: unsubscribe {token}",
        f"Message-ID: <{uuid.uuid4()}@example.net>",
    )

    answer = (await post(api, campaign, raw)).json()["data"]

    assert (answer["classification"], answer["action"]) == ("unsubscribe", "unsubscribed")
    assert answer["matched"]["matchedBy"] == "unsubscribe_token"
    status = await wait_for_status(api, campaign, instance_id, workflowStatus="stopped")
    assert status["workflowStopReason"] == "LEAD_UNSUBSCRIBED"
    assert [row["source"] for row in await suppressions(api, campaign)] == ["mailto"]


async def test_stop_on_reply_domain_stops_colleagues_but_never_for_free_mail(
    api: Api, campaign: Campaign, worker: Worker
) -> None:
    definition = {
        "name": "Company-wide",
        "stopOnReply": "domain",
        "steps": [{"id": "a", "subject": "S", "body": "B"}],
    }
    put = await api.http.put(campaign.url, json=definition, headers=campaign.auth)
    assert put.status_code == 200, put.text
    ada = await enrol(api, campaign, lead(email="ada@acme-corp.com"))
    grace = await enrol(api, campaign, lead(email="grace@acme-corp.com"))
    gmail_one = await enrol(api, campaign, lead(email="one@gmail.com"))
    gmail_two = await enrol(api, campaign, lead(email="two@gmail.com"))
    for instance_id in (ada, grace, gmail_one, gmail_two):
        await wait_for_status(api, campaign, instance_id, hasPendingApproval=True)

    company = await post(api, campaign, reply(sender="ada@acme-corp.com"))
    free_mail = await post(api, campaign, reply(sender="one@gmail.com"))

    # The answer says how many it stopped, not only the instance it matched first.
    assert company.json()["data"]["instancesSignalled"] == 2
    assert free_mail.json()["data"]["instancesSignalled"] == 1

    for instance_id in (ada, grace, gmail_one):
        status = await wait_for_status(api, campaign, instance_id, workflowStatus="stopped")
        assert status["workflowStopReason"] == "LEAD_REPLIED"
    untouched = await instance_data(api, campaign, gmail_two)
    assert untouched["leadStatus"]["hasPendingApproval"] is True


@pytest.mark.parametrize("settings_overrides", [{"inbound_max_message_bytes": 10_000}])
async def test_bad_requests_get_the_envelope_and_apply_nothing(
    api: Api, campaign: Campaign, temporal: Client
) -> None:
    url = inbound_url(campaign)
    empty = await api.http.post(url, content=b"", headers={**campaign.auth, **RFC822})
    not_mail = await api.http.post(
        url, content=b"\x00\x01\x02 not a message", headers={**campaign.auth, **RFC822}
    )
    too_large = await api.http.post(
        url, content=reply(body="x" * 20_000), headers={**campaign.auth, **RFC822}
    )
    wrong_type = await api.http.post(
        url, content=reply(), headers={**campaign.auth, "Content-Type": "application/json"}
    )
    reader = await api.issue_key([campaign.account_group_id], [Permission.CAMPAIGNS_WRITE])
    no_permission = await api.http.post(
        url, content=reply(), headers={"Authorization": f"Bearer {reader.key}", **RFC822}
    )
    hook = await api.issue_key(["0" * 24], [Permission.INBOUND_WRITE])
    other_group = await api.http.post(
        url, content=reply(), headers={"Authorization": f"Bearer {hook.key}", **RFC822}
    )

    answers = [
        (r.status_code, r.json()["error"]["code"], r.json()["error"]["details"])
        for r in (empty, not_mail, too_large, wrong_type, no_permission, other_group)
    ]
    assert answers == [
        (400, "INBOUND_MESSAGE_REFUSED", "empty"),
        (400, "INBOUND_MESSAGE_REFUSED", "not_a_message"),
        (413, "PAYLOAD_TOO_LARGE", None),
        (415, "UNSUPPORTED_MEDIA_TYPE", "message/rfc822"),
        (403, "MISSING_PERMISSION", "inbound:write"),
        (403, "ACCOUNT_GROUP_ACCESS_DENIED", campaign.account_group_id),
    ]
    for answer in (empty, not_mail, too_large):
        assert answer.json()["success"] is False
    assert await api.store.list_suppressions(campaign.account_group_id) == []


async def test_a_key_with_only_inbound_write_posts_mail(
    api: Api, campaign: Campaign, worker: Worker
) -> None:
    instance_id = await enrol_to_gate(api, campaign)
    hook = await api.issue_key([campaign.account_group_id], [Permission.INBOUND_WRITE])

    answer = await api.http.post(
        inbound_url(campaign),
        content=reply(),
        headers={"Authorization": f"Bearer {hook.key}", **RFC822},
    )

    assert (answer.status_code, answer.json()["data"]["action"]) == (202, "stopped")
    await wait_for_status(api, campaign, instance_id, workflowStatus="stopped")
    assert hook.permissions == ["inbound:write"]
    data = await instance_data(api, campaign, instance_id)
    assert data["leadStatus"]["workflowStopReason"] == "LEAD_REPLIED"


async def test_a_dsn_for_an_address_never_mailed_matches_nothing(
    api: Api, campaign: Campaign, worker: Worker
) -> None:
    await enrol_to_gate(api, campaign)
    never = dsn(
        "Final-Recipient: rfc822; nobody@example.org\r\nAction: failed\r\nStatus: 5.1.1",
        headers=(f"Message-ID: <{uuid.uuid4()}@mx.example.net>",),
    )

    data = (await post(api, campaign, never)).json()["data"]

    assert (data["classification"], data["matched"], data["action"], data["noMatch"]) == (
        "hard_bounce",
        None,
        "none",
        "no_reference",
    )
    assert await api.store.list_suppressions(campaign.account_group_id) == []


async def test_campaign_stats_count_each_lead_once_per_outcome_per_step(
    api: Api, campaign: Campaign, worker: Worker
) -> None:
    _replier, sent_id = await sent_first_step(api, campaign)
    await post(api, campaign, reply(in_reply_to=sent_id))
    await post(api, campaign, reply(in_reply_to=sent_id))  # the same lead again: one reply
    silent = await enrol(api, campaign, lead(email="grace@example.org"))
    await wait_for_status(api, campaign, silent, hasPendingApproval=True)
    await approve_ok(api, campaign, silent)
    grace_sent = message_id_of(campaign, silent, FIRST_STEP)
    ledger = DeliveryLedger(api.store)

    async def delivered() -> bool:
        return await ledger.state(grace_sent) == DeliveryState.SENT

    await assert_eventually(delivered, within=15.0)
    await enrol(api, campaign, lead(email="linus@example.org"))  # enrolled, nothing sent

    answer = await api.http.get(f"{campaign.url}/stats", headers=campaign.auth)

    assert answer.status_code == 200, answer.text
    data = answer.json()["data"]
    assert data["enrolled"] == 3
    assert {key: data["total"][key] for key in ("sent", "replied", "bounced")} == {
        "sent": 2,
        "replied": 1,
        "bounced": 0,
    }
    assert data["total"]["replyRate"] == 0.5
    [intro] = data["steps"]
    assert (intro["stepId"], intro["sent"], intro["replied"], intro["replyRate"]) == (
        FIRST_STEP,
        2,
        1,
        0.5,
    )
    other_group = await create_campaign(api)
    foreign = await api.http.get(f"{campaign.url}/stats", headers=other_group.auth)
    assert foreign.status_code == 403
    missing = await api.http.get(
        f"/v1/accounts/{campaign.account_group_id}/campaigns/{'f' * 24}/stats",
        headers=campaign.auth,
    )
    assert missing.json()["error"]["code"] == "CAMPAIGN_NOT_FOUND"


async def test_suppressions_list_shows_why_and_lift_undoes_a_wrong_bounce(
    api: Api, campaign: Campaign, worker: Worker
) -> None:
    _instance_id, sent_id = await sent_first_step(api, campaign)
    await post(api, campaign, bounce(sent_id))
    env = {
        "PATH": os.environ.get("PATH", ""),
        "CAMPAIGN_ENGINE_STATE_DIR": str(api.settings.state_dir),
    }

    listed = await run_cli(env, "suppressions", "list")
    [row] = [json.loads(line) for line in listed.splitlines()]
    assert (row["source"], row["evidence"]["status"], row["evidence"]["rule"]) == (
        "bounce",
        "5.1.1",
        "dsn_permanent_failure",
    )
    assert "ada@example.com" not in listed
    await run_cli(
        env,
        "suppressions",
        "lift",
        "--account-group",
        campaign.account_group_id,
        "--lead",
        row["leadId"],
    )
    other = await create_campaign_in(api, campaign)
    again = await api.http.post(
        f"{other.url}/workflow-instances", json={"lead": lead()}, headers=other.auth
    )
    assert again.status_code == 201, again.text


async def run_cli(env: dict[str, str], *args: str) -> str:
    """Runs `campaign-engine ARGS` in its own process; asserts exit 0; returns its stdout."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "entrypoints.cli",
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    assert process.returncode == 0, err.decode()
    return out.decode()


HOSTILE = {
    "malformed_mime": message(
        "From: ada@example.com",
        "Message-ID: <h1@example.com>",
        'Content-Type: multipart/mixed; boundary="never-closed"',
        body="--never-closed\r\nContent-Type: text/plain\r\n\r\nhalf a part",
    ),
    "duplicated_headers": message(
        "From: ada@example.com",
        "From: grace@example.org",
        "Message-ID: <h2@example.com>",
        "Message-ID: <h3@example.com>",
        "Subject: one",
        "Subject: two",
    ),
    "ten_thousand_references": message(
        "From: nobody@example.net",
        "Message-ID: <h4@example.net>",
        "References: " + " ".join(f"<r{i}@example.net>" for i in range(10_000)),
    ),
    "encoded_word_bomb": message(
        "From: nobody@example.net",
        "Message-ID: <h5@example.net>",
        "Subject: " + " ".join(["=?utf-8?B?" + "QUFB" * 30 + "?="] * 2000),
    ),
    "unknown_charset": message(
        "From: nobody@example.net",
        "Message-ID: <h6@example.net>",
        "Content-Type: text/plain; charset=x-klingon-1",
        body=b"\xff\xfe\xfd hello",
    ),
    "no_headers_at_all": b"\r\n\r\njust a body",
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
async def test_hostile_mail_is_classified_or_refused_never_an_error(
    name: str, api: Api, campaign: Campaign, worker: Worker
) -> None:
    instance_id = await enrol_to_gate(api, campaign)

    answer = await post(api, campaign, HOSTILE[name])

    assert answer.status_code in (202, 400), answer.text
    body = answer.json()
    if answer.status_code == 400:
        assert body["error"]["code"] == "INBOUND_MESSAGE_REFUSED"
    else:
        assert body["data"]["classification"] in {
            "reply",
            "auto_reply",
            "hard_bounce",
            "soft_bounce",
            "complaint",
            "unsubscribe",
            "unknown",
        }
    # None of them is from the lead (ada@example.com's `From` is duplicated with another: the
    # first wins, and a reply from the lead stops only when it is one).
    data = await instance_data(api, campaign, instance_id)
    if name != "duplicated_headers" and name != "malformed_mime":
        assert data["leadStatus"]["hasPendingApproval"] is True


async def test_a_thirty_megabyte_message_is_413_before_it_is_read(
    api: Api, campaign: Campaign
) -> None:
    huge = reply(body="x" * 30_000_000)

    answer = await post(api, campaign, huge)

    assert (answer.status_code, answer.json()["error"]["code"]) == (413, "PAYLOAD_TOO_LARGE")
    # The answer names what an operator would change.
    assert "CAMPAIGN_ENGINE_INBOUND_MAX_MESSAGE_BYTES" in answer.json()["error"]["message"]


async def test_no_address_or_reply_text_in_clear_in_history_store_or_logs(
    api: Api,
    campaign: Campaign,
    worker: Worker,
    temporal: Client,
    caplog: pytest.LogCaptureFixture,
) -> None:
    instance_id, sent_id = await sent_first_step(api, campaign)
    secret_text = "My private number is 555-0199"
    await post(api, campaign, reply(in_reply_to=sent_id, body=secret_text))
    await post(api, campaign, bounce(sent_id))
    await wait_for_status(api, campaign, instance_id, workflowStatus="stopped")

    history = await handle_of(temporal, campaign, instance_id).fetch_history()
    signalled = [
        payload
        for event in history.events
        if event.HasField("workflow_execution_signaled_event_attributes")
        and event.workflow_execution_signaled_event_attributes.signal_name == "inbound_message"
        for payload in event.workflow_execution_signaled_event_attributes.input.payloads
    ]
    assert len(signalled) == 1  # the reply; the bounce came after the stop, to a closed run
    for payload in signalled:
        assert payload.metadata["encoding"] == codec.ENCODING
        assert b"555-0199" not in payload.data
    rows = [repr(vars(row)) for row in await api.store.list_suppressions(campaign.account_group_id)]
    log_rows = await InboundMessages(api.store).campaign_counts(
        campaign.account_group_id, campaign.campaign_id
    )
    stored = " ".join(rows) + repr(log_rows)
    assert "ada@example.com" not in stored and "555-0199" not in stored
    assert "ada@example.com" not in caplog.text and "555-0199" not in caplog.text


async def test_temporal_down_is_502_and_the_same_message_later_completes(
    settings: Settings, tmp_path: Path
) -> None:
    """An outage is the envelope's 502 TEMPORAL_UNAVAILABLE within the RPC timeout (never a
    500), nothing is logged as processed, and the same message handed over again once Temporal
    is back stops the instance."""
    server = DevServer(db_file=tmp_path / "temporal.db")
    await server.start()
    settings = settings.model_copy(update={"temporal_address": server.address})
    try:
        # temporal=None: the API connects lazily, as `campaign-engine api` does.
        async with running_api(settings, temporal=None) as api:
            campaign = await create_campaign(api)
            instance_id = await enrol(api, campaign)  # no worker: the instance just waits
            raw = reply()

            await server.stop(kill=True)
            started = time.monotonic()
            down = await post(api, campaign, raw)
            elapsed = time.monotonic() - started

            assert down.status_code == 502, down.text
            assert down.json()["error"]["code"] == "TEMPORAL_UNAVAILABLE"
            assert "hand the message over again" in down.json()["error"]["message"]
            assert elapsed < settings.temporal_rpc_timeout_seconds + 3

            server = DevServer(db_file=server.db_file, port=server.port)
            await server.start()
            again = await post(api, campaign, raw)

            assert again.status_code == 202, again.text
            assert (again.json()["data"]["action"], again.json()["data"]["instancesSignalled"]) == (
                "stopped",
                1,
            )
            temporal = await Client.connect(server.address)
            history = await temporal.get_workflow_handle(
                workflow_id_for(campaign.account_group_id, campaign.campaign_id, instance_id)
            ).fetch_history()
            signals = [
                event.workflow_execution_signaled_event_attributes.signal_name
                for event in history.events
                if event.HasField("workflow_execution_signaled_event_attributes")
            ]
            assert signals == ["inbound_message"]
    finally:
        await server.stop()
