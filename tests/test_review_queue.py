"""The review queue: visibility-backed, scoped by the path, newest gate first, opaque cursors."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from temporalio.worker import Worker

from campaign_engine.ids import new_object_id
from campaign_engine.keys import Permission
from tests.helpers import (
    TWO_STEP_CAMPAIGN,
    Api,
    Campaign,
    approve,
    assert_eventually,
    create_campaign,
    enrol_to_gate,
)


def queue_url(campaign: Campaign) -> str:
    return f"{campaign.url}/workflow-instances"


async def list_all(
    api: Api, campaign: Campaign, page_size: int, **filters: str
) -> list[list[dict[str, Any]]]:
    """Every page of the queue, following `nextPageToken`."""
    pages: list[list[dict[str, Any]]] = []
    token: str | None = None
    while True:
        params: dict[str, Any] = {"pageSize": page_size, **filters}
        if token:
            params["pageToken"] = token
        response = await api.http.get(queue_url(campaign), params=params, headers=campaign.auth)
        assert response.status_code == 200, response.text
        data = response.json()["data"]
        pages.append(data["items"])
        token = data["nextPageToken"]
        if token is None:
            return pages


async def populate(api: Api, campaign: Campaign, count: int) -> tuple[set[str], set[str]]:
    """`count` instances at their first gate; every other one approved (then in its delay).
    Returns (at a gate, approved)."""
    ids = list(await asyncio.gather(*(enrol_to_gate(api, campaign) for _ in range(count))))
    approved = set(ids[::2])
    for instance_id in approved:
        assert (await approve(api, campaign, instance_id)).status_code == 200
    return set(ids) - approved, approved


async def test_queue_pages_filters_and_scope(api: Api, worker: Worker) -> None:
    first = await create_campaign(api)
    second = Campaign(first.account_group_id, new_object_id(), first.key)
    put = await api.http.put(second.url, json=TWO_STEP_CAMPAIGN, headers=second.auth)
    assert put.status_code == 201
    other_group = await create_campaign(api)
    gated_1, approved_1 = await populate(api, first, 10)
    gated_2, _ = await populate(api, second, 10)
    gated_3, _ = await populate(api, other_group, 10)
    started = time.monotonic()

    async def first_queue_settled() -> list[list[dict[str, Any]]]:
        return await list_all(api, first, 7, hasPendingApproval="true")

    pages = await assert_eventually(
        first_queue_settled,
        lambda got: {i["workflowInstanceId"] for p in got for i in p} == gated_1,
        what="visibility of the first campaign's gates",
    )
    lag = time.monotonic() - started
    print(f"visibility settled {lag:.2f} s after the last approval")

    # Pages of 7 cover the campaign's open gates exactly once, newest gate first.
    items = [item for page in pages for item in page]
    assert [len(page) for page in pages] == [5]
    assert len(items) == len({i["workflowInstanceId"] for i in items}) == len(gated_1)
    opened = [item["gateOpenedAt"] for item in items]
    assert opened == sorted(opened, reverse=True)
    for item in items:
        assert item["hasPendingApproval"] is True
        assert item["workflowStatus"] == "pending"
        assert item["latestStep"] == "intro"
        assert len(item["gateId"]) == 32 and item["gateExpiresAt"] > item["gateOpenedAt"]
        assert len(item["leadId"]) == 24

    # The whole campaign in pages of 3: each instance once, gates newest first.
    everything = await assert_eventually(
        lambda: list_all(api, first, 3),
        lambda got: (
            sum(len(p) for p in got) == 10
            and {i["workflowInstanceId"] for p in got for i in p if not i["hasPendingApproval"]}
            == approved_1
        ),
    )
    assert [len(page) for page in everything] == [3, 3, 3, 1]

    # Filters combine (AND).
    [pending_in_delay] = await list_all(
        api, first, 100, hasPendingApproval="false", workflowStatus="pending"
    )
    assert {i["workflowInstanceId"] for i in pending_in_delay} == approved_1
    one = next(iter(items))
    [by_lead] = await list_all(api, first, 100, leadId=one["leadId"], hasPendingApproval="true")
    assert [i["workflowInstanceId"] for i in by_lead] == [one["workflowInstanceId"]]
    assert await list_all(api, first, 100, leadId=one["leadId"], hasPendingApproval="false") == [[]]
    assert await list_all(api, first, 100, workflowStatus="completed") == [[]]

    # The second campaign has its own gates only.
    second_pages = await assert_eventually(
        lambda: list_all(api, second, 7, hasPendingApproval="true"),
        lambda got: {i["workflowInstanceId"] for p in got for i in p} == gated_2,
    )
    assert [len(page) for page in second_pages] == [5]

    # Another account group's campaign id under our group is simply empty…
    borrowed = Campaign(first.account_group_id, other_group.campaign_id, first.key)
    assert await list_all(api, borrowed, 100) == [[]]
    # …and its own path, with our key, is a 403.
    denied = await api.http.get(queue_url(other_group), headers=first.auth)
    assert denied.status_code == 403
    assert denied.json()["error"]["code"] == "ACCOUNT_GROUP_ACCESS_DENIED"
    # Its owner sees its gates.
    await assert_eventually(
        lambda: list_all(api, other_group, 100, hasPendingApproval="true"),
        lambda got: {i["workflowInstanceId"] for p in got for i in p} == gated_3,
    )


async def test_page_tokens_are_opaque_and_bound_to_their_query(
    api: Api, campaign: Campaign, worker: Worker
) -> None:
    await populate(api, campaign, 3)
    pages = await assert_eventually(lambda: list_all(api, campaign, 1), lambda got: len(got) == 3)
    assert len(pages) == 3
    first = await api.http.get(queue_url(campaign), params={"pageSize": 1}, headers=campaign.auth)
    token = first.json()["data"]["nextPageToken"]
    payload, signature = token.split(".")
    forged = [
        "garbage",
        token + "x",
        payload + "." + signature[::-1],
        payload[::-1] + "." + signature,
        "eyJxIjoiIiwidCI6bnVsbCwidyI6IiJ9.AAAA",
        "' OR 1=1 --",
        "",
    ]
    for value in forged:
        response = await api.http.get(
            queue_url(campaign), params={"pageToken": value}, headers=campaign.auth
        )
        assert response.status_code == 400, (value, response.text)
        assert response.json()["error"]["details"] == "pageToken", value
    # A token of another query (other filters) is refused too.
    other = await api.http.get(
        queue_url(campaign),
        params={"pageToken": token, "hasPendingApproval": "true"},
        headers=campaign.auth,
    )
    assert other.status_code == 400
    assert other.json()["error"]["details"] == "pageToken"


async def test_filters_are_validated_never_injected(
    api: Api, campaign: Campaign, worker: Worker
) -> None:
    await populate(api, campaign, 1)
    attempts = {
        "leadId": [
            "' OR '1'='1",
            "507f1f77bcf86cd799439011' OR LeadId != '",
            "(507f1f77bcf86cd799439011)",
            "507F1F77BCF86CD799439011",
        ],
        "workflowStatus": ["pending' OR 'a'='a", "(pending)", "PENDING"],
        "hasPendingApproval": ["true OR 1=1", "(true)", "maybe"],
        "pageSize": ["0", "101", "7 OR 1", "-1"],
    }
    for field, values in attempts.items():
        for value in values:
            response = await api.http.get(
                queue_url(campaign), params={field: value}, headers=campaign.auth
            )
            assert response.status_code == 400, (field, value, response.text)
            assert response.json()["error"]["details"] == field, (field, value)


async def test_queue_needs_campaigns_read(api: Api, campaign: Campaign) -> None:
    key = await api.issue_key([campaign.account_group_id], [Permission.CAMPAIGNS_EXECUTE])
    response = await api.http.get(
        queue_url(campaign), headers={"Authorization": f"Bearer {key.key}"}
    )
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "MISSING_PERMISSION"
