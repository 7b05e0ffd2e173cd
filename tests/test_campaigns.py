"""Campaign definitions and enrolment: validation at the door, snapshots, one instance per lead."""

from __future__ import annotations

from typing import Any

import pytest
from temporalio.client import Client
from temporalio.worker import Worker

from campaign_engine.ids import new_object_id, workflow_id_for
from campaign_engine.keys import Permission
from tests.helpers import TWO_STEP_CAMPAIGN, Api, Campaign, enrol_to_gate, lead


def with_step(**changes: Any) -> dict[str, Any]:
    first = {**TWO_STEP_CAMPAIGN["steps"][0], **changes}
    return {**TWO_STEP_CAMPAIGN, "steps": [first, *TWO_STEP_CAMPAIGN["steps"][1:]]}


async def test_put_campaign_creates_then_replaces(api: Api, campaign: Campaign) -> None:
    renamed = {**TWO_STEP_CAMPAIGN, "name": "Renamed"}

    replaced = await api.http.put(campaign.url, json=renamed, headers=campaign.auth)
    read = await api.http.get(campaign.url, headers=campaign.auth)

    assert replaced.status_code == 200
    data = read.json()["data"]
    assert data["name"] == "Renamed"
    assert data["campaignId"] == campaign.campaign_id
    assert data["steps"][0]["delay"] == "PT1H"
    assert data["approvalTimeout"] == "P7D"


async def test_put_campaign_accepts_delay_in_seconds(api: Api, campaign: Campaign) -> None:
    response = await api.http.put(campaign.url, json=with_step(delay=90), headers=campaign.auth)

    assert response.status_code == 200
    assert response.json()["data"]["steps"][0]["delay"] == "PT1M30S"


async def test_put_campaign_with_broken_template_is_400(api: Api, campaign: Campaign) -> None:
    response = await api.http.put(
        campaign.url, json=with_step(body="Hi {{ lead.firstName "), headers=campaign.auth
    )

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "VALIDATION_ERROR"
    assert error["details"] == "steps.0.body"
    assert "template does not render" in error["message"]


async def test_put_campaign_with_unknown_lead_field_is_400(api: Api, campaign: Campaign) -> None:
    response = await api.http.put(
        campaign.url, json=with_step(subject="Hi {{ lead.fristName }}"), headers=campaign.auth
    )

    assert response.status_code == 400
    assert response.json()["error"]["details"] == "steps.0.subject"
    assert "fristName" in response.json()["error"]["message"]


async def test_put_campaign_with_sandbox_escape_is_400(api: Api, campaign: Campaign) -> None:
    escape = "{{ lead.__class__.__mro__[1].__subclasses__() }}"

    response = await api.http.put(campaign.url, json=with_step(body=escape), headers=campaign.auth)

    assert response.status_code == 400
    assert response.json()["error"]["details"] == "steps.0.body"


async def test_put_campaign_rejects_duplicate_steps_and_bad_delay(
    api: Api, campaign: Campaign
) -> None:
    duplicate = {**TWO_STEP_CAMPAIGN, "steps": [TWO_STEP_CAMPAIGN["steps"][0]] * 2}

    duplicated = await api.http.put(campaign.url, json=duplicate, headers=campaign.auth)
    negative = await api.http.put(campaign.url, json=with_step(delay=-5), headers=campaign.auth)
    garbled = await api.http.put(campaign.url, json=with_step(delay="soon"), headers=campaign.auth)

    assert duplicated.status_code == 400
    assert "unique" in duplicated.json()["error"]["message"]
    assert negative.status_code == 400
    assert negative.json()["error"]["details"] == "steps.0.delay"
    assert garbled.status_code == 400
    assert garbled.json()["error"]["details"] == "steps.0.delay"


async def test_put_campaign_without_write_permission_is_403(api: Api, campaign: Campaign) -> None:
    executor = await api.issue_key([campaign.account_group_id], [Permission.CAMPAIGNS_EXECUTE])

    response = await api.http.put(
        campaign.url, json=TWO_STEP_CAMPAIGN, headers={"X-API-Key": executor.key}
    )

    assert response.status_code == 403
    assert response.json()["error"]["details"] == "campaigns:write"


async def test_get_campaign_unknown_is_404(api: Api, campaign: Campaign) -> None:
    url = f"/v1/accounts/{campaign.account_group_id}/campaigns/{new_object_id()}"

    response = await api.http.get(url, headers=campaign.auth)

    assert response.status_code == 404
    assert response.json()["error"]["code"] == "CAMPAIGN_NOT_FOUND"


async def test_enroll_lead_starts_instance_on_snapshot(
    api: Api, campaign: Campaign, worker: Worker, temporal: Client
) -> None:
    instance_id = await enrol_to_gate(api, campaign)
    changed = with_step(subject="Changed after enrolment")
    assert (
        await api.http.put(campaign.url, json=changed, headers=campaign.auth)
    ).status_code == 200

    got = await api.http.get(campaign.instance_url(instance_id), headers=campaign.auth)

    assert got.json()["data"]["pendingContent"]["subject"] == "Hello Ada"
    handle = temporal.get_workflow_handle(
        workflow_id_for(campaign.account_group_id, campaign.campaign_id, instance_id)
    )
    description = await handle.describe()
    assert description.task_queue == api.settings.task_queue
    assert (
        await description.static_summary()
        == f"Two steps · lead {got.json()['data']['leadStatus']['leadId']}"
    )


async def test_enroll_same_lead_twice_is_409(api: Api, campaign: Campaign) -> None:
    body = {"lead": lead()}
    url = f"{campaign.url}/workflow-instances"

    first = await api.http.post(url, json=body, headers=campaign.auth)
    second = await api.http.post(url, json=body, headers=campaign.auth)

    assert first.status_code == 201
    assert first.json()["data"]["leadStatus"]["workflowStatus"] == "running"
    assert second.status_code == 409
    assert second.json()["error"]["code"] == "LEAD_ALREADY_ENROLLED"
    assert second.json()["error"]["details"] == first.json()["data"]["workflowInstanceId"]


async def test_enroll_into_unknown_campaign_is_404(api: Api, campaign: Campaign) -> None:
    url = f"/v1/accounts/{campaign.account_group_id}/campaigns/{new_object_id()}/workflow-instances"

    response = await api.http.post(url, json={"lead": lead()}, headers=campaign.auth)

    assert response.status_code == 404
    assert response.json()["error"]["code"] == "CAMPAIGN_NOT_FOUND"


async def test_enroll_with_invalid_email_is_400(api: Api, campaign: Campaign) -> None:
    response = await api.http.post(
        f"{campaign.url}/workflow-instances",
        json={"lead": lead(email="not an address")},
        headers=campaign.auth,
    )

    assert response.status_code == 400
    assert response.json()["error"]["details"] == "lead.email"


async def test_get_unknown_instance_is_404(api: Api, campaign: Campaign) -> None:
    response = await api.http.get(campaign.instance_url(new_object_id()), headers=campaign.auth)

    assert response.status_code == 404
    assert response.json()["error"]["code"] == "WORKFLOW_INSTANCE_NOT_FOUND"


@pytest.mark.parametrize(
    "name", ["   ", "\t", "line\nbreak", "nul\u0000byte", "bell\u0007", "c1\u0085control"]
)
async def test_campaign_name_is_one_visible_line(api: Api, campaign: Campaign, name: str) -> None:
    # The name is the UI's summary of every instance: blank or control characters are refused.
    definition = {**TWO_STEP_CAMPAIGN, "name": name}

    response = await api.http.put(campaign.url, json=definition, headers=campaign.auth)

    assert response.status_code == 400, response.text
    assert response.json()["error"]["details"] == "name"
    stored = await api.http.get(campaign.url, headers=campaign.auth)
    assert stored.json()["data"]["name"] == TWO_STEP_CAMPAIGN["name"]
