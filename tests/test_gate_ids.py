"""Approve what you saw: gate ids, `ETag` and `If-Match` (RFC 9110 §8.8.3, §13.1.1), the audit
record over REST. Real dev server, real worker, real API."""

from __future__ import annotations

import re
from typing import Any

import httpx
from temporalio.client import Client
from temporalio.worker import Worker

from tests.helpers import (
    TWO_STEP_CAMPAIGN,
    Api,
    Campaign,
    enrol_to_gate,
    handle_of,
    replace_campaign,
    wait_for_status,
)

# Step one has no delay: once approved, step two's gate opens within a few hundred ms.
NO_DELAY: dict[str, Any] = {
    **TWO_STEP_CAMPAIGN,
    "steps": [{**TWO_STEP_CAMPAIGN["steps"][0], "delay": 0}, TWO_STEP_CAMPAIGN["steps"][1]],
}
GATE_ID = re.compile(r"^[0-9a-f]{32}$")


async def read(api: Api, campaign: Campaign, instance_id: str) -> httpx.Response:
    response = await api.http.get(campaign.instance_url(instance_id), headers=campaign.auth)
    assert response.status_code == 200, response.text
    return response


async def approve_if(
    api: Api, campaign: Campaign, instance_id: str, if_match: str | None
) -> httpx.Response:
    headers = dict(campaign.auth)
    if if_match is not None:
        headers["If-Match"] = if_match
    return await api.http.post(campaign.approve_url(instance_id), headers=headers)


def refusal(response: httpx.Response) -> tuple[int, str, str]:
    error = response.json()["error"]
    return response.status_code, error["code"], error["details"]


async def test_get_returns_the_gate_as_strong_etag(
    api: Api, campaign: Campaign, worker: Worker
) -> None:
    instance_id = await enrol_to_gate(api, campaign)

    response = await read(api, campaign, instance_id)

    gate_id = response.json()["data"]["pendingContent"]["gateId"]
    assert GATE_ID.match(gate_id), gate_id
    assert response.headers["ETag"] == f'"{gate_id}"'
    head = await api.http.head(campaign.instance_url(instance_id), headers=campaign.auth)
    assert head.headers["ETag"] == f'"{gate_id}"'


async def test_double_approve_with_if_match_approves_only_what_was_seen(
    api: Api, campaign: Campaign, worker: Worker
) -> None:
    await replace_campaign(api, campaign, NO_DELAY)
    instance_id = await enrol_to_gate(api, campaign)
    etag = (await read(api, campaign, instance_id)).headers["ETag"]

    first = await approve_if(api, campaign, instance_id, etag)
    await wait_for_status(
        api, campaign, instance_id, hasPendingApproval=True, latestStep="follow-up"
    )
    second = await approve_if(api, campaign, instance_id, etag)

    assert first.status_code == 200, first.text
    assert first.headers["ETag"] == etag
    assert refusal(second) == (409, "NO_PENDING_APPROVAL", "GATE_CHANGED")
    after = await read(api, campaign, instance_id)
    data = after.json()["data"]
    assert data["leadStatus"]["hasPendingApproval"] is True
    assert data["pendingContent"]["stepId"] == "follow-up"
    assert after.headers["ETag"] != etag
    # The audit record: the first gate approved by the key, and nothing for the second.
    [approval] = data["approvals"]
    assert approval["stepId"] == "intro"
    assert approval["decision"] == "approved"
    assert approval["decidedBy"] == campaign.key.id
    assert f'"{approval["gateId"]}"' == etag


async def test_without_if_match_today_behaviour_approves_whatever_is_open(
    api: Api, campaign: Campaign, worker: Worker
) -> None:
    await replace_campaign(api, campaign, NO_DELAY)
    instance_id = await enrol_to_gate(api, campaign)
    assert (await approve_if(api, campaign, instance_id, None)).status_code == 200
    await wait_for_status(
        api, campaign, instance_id, hasPendingApproval=True, latestStep="follow-up"
    )

    second = await approve_if(api, campaign, instance_id, None)

    assert second.status_code == 200, second.text
    assert "ETag" in second.headers


async def test_approval_right_after_the_first_is_refused_whatever_it_races(
    api: Api, campaign: Campaign, worker: Worker
) -> None:
    """The retry comes before or after the next gate opens: either way never a 200."""
    await replace_campaign(api, campaign, NO_DELAY)
    instance_id = await enrol_to_gate(api, campaign)
    etag = (await read(api, campaign, instance_id)).headers["ETag"]
    assert (await approve_if(api, campaign, instance_id, etag)).status_code == 200

    retried = await approve_if(api, campaign, instance_id, etag)

    assert refusal(retried) == (409, "NO_PENDING_APPROVAL", "GATE_CHANGED")


async def test_gate_discarded_between_get_and_conditional_approve(
    api: Api, campaign: Campaign, worker: Worker, temporal: Client
) -> None:
    instance_id = await enrol_to_gate(api, campaign)
    etag = (await read(api, campaign, instance_id)).headers["ETag"]
    await handle_of(temporal, campaign, instance_id).signal("discard", {"decided_by": "ops"})
    await wait_for_status(api, campaign, instance_id, workflowStopReason="CONTENT_DISCARDED")

    response = await approve_if(api, campaign, instance_id, etag)

    assert refusal(response) == (409, "NO_PENDING_APPROVAL", "WORKFLOW_CLOSED")
    data = (await read(api, campaign, instance_id)).json()["data"]
    [decision] = data["approvals"]
    assert (decision["decision"], decision["decidedBy"]) == ("discarded", "ops")
    assert f'"{decision["gateId"]}"' == etag


async def test_gate_expired_between_get_and_conditional_approve(
    api: Api, campaign: Campaign, worker: Worker
) -> None:
    await replace_campaign(api, campaign, {**TWO_STEP_CAMPAIGN, "approvalTimeout": 2})
    instance_id = await enrol_to_gate(api, campaign)
    etag = (await read(api, campaign, instance_id)).headers["ETag"]
    await wait_for_status(api, campaign, instance_id, workflowStopReason="APPROVAL_EXPIRED")

    response = await approve_if(api, campaign, instance_id, etag)

    assert refusal(response) == (409, "NO_PENDING_APPROVAL", "WORKFLOW_CLOSED")
    [decision] = (await read(api, campaign, instance_id)).json()["data"]["approvals"]
    assert (decision["decision"], decision["decidedBy"]) == ("expired", "system")


async def test_if_match_garbage_weak_and_other_tags_never_match(
    api: Api, campaign: Campaign, worker: Worker
) -> None:
    instance_id = await enrol_to_gate(api, campaign)
    etag = (await read(api, campaign, instance_id)).headers["ETag"]
    never = [
        "garbage",
        '"unterminated',
        '"a", garbage',
        f"W/{etag}",  # weak: strong comparison (RFC 9110 §13.1.1) never matches
        '"0123456789abcdef0123456789abcdef"',
        etag.strip('"'),  # not quoted: not an entity tag
        "'; DROP TABLE x; --",
        '"",',
    ]
    for value in never:
        response = await approve_if(api, campaign, instance_id, value)
        assert refusal(response) == (409, "NO_PENDING_APPROVAL", "GATE_CHANGED"), value

    listed = await approve_if(api, campaign, instance_id, f'"other", {etag}')

    assert listed.status_code == 200, listed.text
    assert listed.headers["ETag"] == etag


async def test_if_match_star_approves_any_open_gate(
    api: Api, campaign: Campaign, worker: Worker
) -> None:
    instance_id = await enrol_to_gate(api, campaign)
    etag = (await read(api, campaign, instance_id)).headers["ETag"]

    response = await approve_if(api, campaign, instance_id, "*")

    assert response.status_code == 200, response.text
    assert response.headers["ETag"] == etag
    again = await approve_if(api, campaign, instance_id, "*")
    assert refusal(again) == (409, "NO_PENDING_APPROVAL", "ALREADY_APPROVED")
