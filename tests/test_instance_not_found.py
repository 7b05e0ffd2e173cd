"""A 404 on an instance hints at the likely mix-up, within the caller's account group only
(`api.instances.WorkflowInstances.why_not_found`): a lead id where the instance id belongs, an
instance or a lead of another campaign of the group, a campaign the group does not have. The
same ids under another account group answer the plain 404, saying nothing of the first."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from campaign_engine.ids import new_object_id
from tests.helpers import Api, Campaign, create_campaign, enrol, lead

ONE_STEP: dict[str, Any] = {
    "name": "One step",
    "steps": [{"id": "intro", "subject": "Hi", "body": "Hello", "requiresApproval": True}],
}
PLAIN = "No such workflow instance"


@dataclass
class Group:
    """Two campaigns of one account group, a lead enrolled in the first (`instance_id`)."""

    first: Campaign
    second: Campaign
    lead_id: str
    instance_id: str


@pytest.fixture
async def group(api: Api) -> Group:
    first = await create_campaign(api, ONE_STEP)
    second = Campaign(first.account_group_id, new_object_id(), first.key)
    put = await api.http.put(second.url, json=ONE_STEP, headers=second.auth)
    assert put.status_code == 201, put.text
    enrolled = lead()
    instance_id = await enrol(api, first, enrolled)
    return Group(first, second, enrolled["id"], instance_id)


async def _get(api: Api, campaign: Campaign, instance_id: str) -> dict[str, Any]:
    response = await api.http.get(campaign.instance_url(instance_id), headers=campaign.auth)
    return _not_found(response)


async def _approve(api: Api, campaign: Campaign, instance_id: str) -> dict[str, Any]:
    response = await api.http.post(campaign.approve_url(instance_id), headers=campaign.auth)
    return _not_found(response)


def _not_found(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 404, response.text
    error: dict[str, Any] = response.json()["error"]
    assert error["code"] == "WORKFLOW_INSTANCE_NOT_FOUND"
    return error


@pytest.mark.parametrize("call", [_get, _approve])
async def test_a_lead_id_where_the_instance_id_belongs_names_the_instance(
    api: Api, group: Group, call: Any
) -> None:
    error = await call(api, group.first, group.lead_id)

    assert error["details"] == "LEAD_ID_NOT_INSTANCE_ID"
    assert f"{group.lead_id} is the id of a lead enrolled in it" in error["message"]
    assert group.first.instance_url(group.instance_id) in error["message"]


@pytest.mark.parametrize("call", [_get, _approve])
async def test_an_instance_of_another_campaign_names_its_campaign(
    api: Api, group: Group, call: Any
) -> None:
    error = await call(api, group.second, group.instance_id)

    assert error["details"] == "INSTANCE_OF_ANOTHER_CAMPAIGN"
    assert f"belongs to campaign {group.first.campaign_id}" in error["message"]
    assert group.first.instance_url(group.instance_id) in error["message"]


async def test_a_lead_of_another_campaign_names_where_it_is_enrolled(
    api: Api, group: Group
) -> None:
    error = await _get(api, group.second, group.lead_id)

    assert error["details"] == "LEAD_OF_ANOTHER_CAMPAIGN"
    assert "is the id of a lead" in error["message"]
    assert group.first.instance_url(group.instance_id) in error["message"]


async def test_a_campaign_the_group_does_not_have_is_said(api: Api, group: Group) -> None:
    missing = Campaign(group.first.account_group_id, new_object_id(), group.first.key)

    error = await _get(api, missing, new_object_id())

    assert error["details"] == "NO_SUCH_CAMPAIGN"
    assert f"no campaign {missing.campaign_id}" in error["message"]


async def test_an_id_that_is_nothing_of_the_group_is_the_plain_404(api: Api, group: Group) -> None:
    error = await _get(api, group.first, new_object_id())

    assert error == {"code": "WORKFLOW_INSTANCE_NOT_FOUND", "message": PLAIN, "details": None}


@pytest.mark.parametrize("both_groups", [False, True])
async def test_the_same_ids_under_another_account_group_say_nothing_of_the_first(
    api: Api, group: Group, both_groups: bool
) -> None:
    """Another group with campaigns of the same ids, read with a key of that group only, or
    with a key of both groups: every mix-up above is the plain 404 there, and no id of the
    first group's campaigns, lead or instance appears in it."""
    other = new_object_id()
    key = await api.issue_key([other, group.first.account_group_id] if both_groups else [other])
    first = Campaign(other, group.first.campaign_id, key)
    second = Campaign(other, group.second.campaign_id, key)
    for campaign in (first, second):
        put = await api.http.put(campaign.url, json=ONE_STEP, headers=campaign.auth)
        assert put.status_code == 201, put.text

    errors = [
        await _get(api, first, group.lead_id),
        await _approve(api, first, group.lead_id),
        await _get(api, second, group.instance_id),
        await _approve(api, second, group.instance_id),
        await _get(api, second, group.lead_id),
        await _get(api, first, group.instance_id),
    ]

    for error in errors:
        assert error == {"code": "WORKFLOW_INSTANCE_NOT_FOUND", "message": PLAIN, "details": None}
    # A campaign id the other group lacks is said of that group only.
    missing = Campaign(other, new_object_id(), key)
    error = await _get(api, missing, group.instance_id)
    assert error["details"] == "NO_SUCH_CAMPAIGN"
    assert group.first.account_group_id not in error["message"]
    assert group.instance_id in error["message"]  # the caller's own words back, nothing more
    assert group.first.campaign_id not in error["message"]
