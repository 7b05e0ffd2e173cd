"""Bulk enrolment, `POST …/workflow-instances/batch`, against the real API, store and Temporal
dev server: one answer per row in order, bad rows never fail the batch, a re-post enrols nobody
twice, suppressed leads are refused, and the enrolment budget counts rows."""

from __future__ import annotations

from typing import Any

import pytest
from temporalio.worker import Worker

from campaign_engine.ids import new_object_id
from campaign_engine.keys import Permission
from tests.helpers import Api, Campaign, create_campaign, lead, wait_for_status


def batch_url(campaign: Campaign) -> str:
    return f"{campaign.url}/workflow-instances/batch"


async def post_batch(api: Api, campaign: Campaign, leads: Any) -> Any:
    return await api.http.post(batch_url(campaign), json={"leads": leads}, headers=campaign.auth)


async def test_each_row_is_answered_in_order_and_a_bad_row_fails_nothing(
    api: Api, campaign: Campaign, worker: Worker
) -> None:
    suppressed = lead(email="gone@example.org")
    answer = await api.http.post(
        f"/v1/accounts/{campaign.account_group_id}/suppressions",
        json={"leadId": suppressed["id"], "email": suppressed["email"]},
        headers=campaign.auth,
    )
    assert answer.status_code == 201, answer.text
    ada = lead(email="ada@example.com")
    grace = lead(email="grace@example.com", firstName="Grace")
    rows: list[Any] = [
        ada,
        {**lead(), "email": "not an address"},
        grace,
        {**lead(), "id": "nope"},
        {**lead(), "id": ada["id"]},  # the same lead twice in one batch
        "a string, not a lead",
        {**lead(email="GONE@example.org")},  # the suppressed address under another id
        suppressed,
        {**lead(), "timeZone": "Mars/Olympus_Mons"},
        {**lead(), "unknownField": 1},
        {"lead": lead()},  # the single enrolment's body shape, one level too deep
    ]

    answer = await post_batch(api, campaign, rows)

    assert answer.status_code == 200, answer.text
    data = answer.json()["data"]
    outcomes = [(r["index"], r["outcome"], r["field"]) for r in data["results"]]
    assert outcomes == [
        (0, "enrolled", None),
        (1, "invalid", "email"),
        (2, "enrolled", None),
        (3, "invalid", "id"),
        (4, "invalid", "id"),
        (5, "invalid", "lead"),
        (6, "suppressed", None),
        (7, "suppressed", None),
        (8, "invalid", "timeZone"),
        (9, "invalid", "unknownField"),
        (10, "invalid", "lead"),
    ]
    assert data["counts"] == {
        "enrolled": 2,
        "alreadyEnrolled": 0,
        "suppressed": 2,
        "invalid": 7,
        "failed": 0,
    }
    results = data["results"]
    assert results[4]["reason"] == "the same lead id is row 0 of this batch"
    assert results[6]["reason"] == results[7]["reason"] == "api"
    assert results[1]["leadId"] == rows[1]["id"]
    assert 'not {"lead": {…}}' in results[10]["reason"]
    # The enrolled ones run: they reach their first gate like any enrolment.
    for row in (results[0], results[2]):
        instance_url = f"{campaign.url}/workflow-instances/{row['workflowInstanceId']}"
        got = await api.http.get(instance_url, headers=campaign.auth)
        assert got.json()["data"]["leadStatus"]["leadId"] == row["leadId"]
        await wait_for_status(api, campaign, row["workflowInstanceId"], hasPendingApproval=True)


async def test_posting_the_same_batch_again_enrols_nobody_twice(
    api: Api, campaign: Campaign
) -> None:
    leads = [lead(email=f"lead{i}@example.com") for i in range(25)]
    first = await post_batch(api, campaign, leads)
    already = await api.http.post(
        f"{campaign.url}/workflow-instances", json={"lead": lead()}, headers=campaign.auth
    )
    assert already.status_code == 201

    again = await post_batch(api, campaign, leads)

    assert first.json()["data"]["counts"]["enrolled"] == 25
    assert again.status_code == 200
    assert again.json()["data"]["counts"]["alreadyEnrolled"] == 25
    assert [r["workflowInstanceId"] for r in again.json()["data"]["results"]] == [
        r["workflowInstanceId"] for r in first.json()["data"]["results"]
    ]
    stats = (await api.http.get(f"{campaign.url}/stats", headers=campaign.auth)).json()["data"]
    assert stats["enrolled"] == 26


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"leads": "not a list"}, "leads"),
        ({"leads": []}, "leads"),
        ({"leads": [{"id": new_object_id(), "email": "a@example.com"}] * 1001}, "leads"),
        ([{"id": new_object_id(), "email": "a@example.com"}], "body"),
        ({}, "leads"),
    ],
    ids=["not_a_list", "empty", "over_1000", "a_bare_list", "no_leads"],
)
async def test_a_bad_batch_is_a_400_and_enrols_nobody(
    api: Api, campaign: Campaign, body: Any, field: str
) -> None:
    answer = await api.http.post(batch_url(campaign), json=body, headers=campaign.auth)

    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["code"] == "VALIDATION_ERROR"
    assert answer.json()["error"]["details"] == field
    if isinstance(body, list):
        assert '{"leads": [...]}' in answer.json()["error"]["message"]
    stats = (await api.http.get(f"{campaign.url}/stats", headers=campaign.auth)).json()["data"]
    assert stats["enrolled"] == 0


async def test_permission_account_group_and_campaign_are_checked_first(
    api: Api, campaign: Campaign
) -> None:
    reader = await api.issue_key([campaign.account_group_id], [Permission.CAMPAIGNS_READ])
    other = await create_campaign(api)
    missing = f"/v1/accounts/{campaign.account_group_id}/campaigns/{'f' * 24}/workflow-instances"
    body = {"leads": [lead()]}

    no_permission = await api.http.post(
        batch_url(campaign), json=body, headers={"Authorization": f"Bearer {reader.key}"}
    )
    other_group = await api.http.post(batch_url(campaign), json=body, headers=other.auth)
    no_campaign = await api.http.post(f"{missing}/batch", json=body, headers=campaign.auth)

    assert [
        (r.status_code, r.json()["error"]["code"])
        for r in (no_permission, other_group, no_campaign)
    ] == [
        (403, "MISSING_PERMISSION"),
        (403, "ACCOUNT_GROUP_ACCESS_DENIED"),
        (404, "CAMPAIGN_NOT_FOUND"),
    ]


@pytest.mark.parametrize("settings_overrides", [{"enrolment_rate_limit": "30/minute"}])
async def test_rows_count_against_the_enrolment_budget_and_an_overspend_enrols_nobody(
    api: Api, campaign: Campaign
) -> None:
    first = await post_batch(api, campaign, [lead() for _ in range(20)])
    over = await post_batch(api, campaign, [lead() for _ in range(11)])
    fits = await post_batch(api, campaign, [lead() for _ in range(10)])

    assert first.json()["data"]["counts"]["enrolled"] == 20
    assert over.status_code == 429, over.text
    assert over.json()["error"]["code"] == "RATE_LIMITED"
    assert "Enrolment budget" in over.json()["error"]["message"]
    assert int(over.headers["Retry-After"]) >= 1
    assert fits.json()["data"]["counts"]["enrolled"] == 10
    stats = (await api.http.get(f"{campaign.url}/stats", headers=campaign.auth)).json()["data"]
    assert stats["enrolled"] == 30
