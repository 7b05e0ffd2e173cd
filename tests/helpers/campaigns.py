"""Campaigns and instances through the REST API, as a caller drives them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from activities.campaign import message_id_for
from campaign_engine.ids import new_object_id, workflow_id_for
from campaign_engine.keys import IssuedKey
from campaign_engine.settings import Settings
from tests.helpers.api import Api
from tests.helpers.waiting import assert_eventually

TWO_STEP_CAMPAIGN: dict[str, Any] = {
    "name": "Two steps",
    "approvalTimeout": "P7D",
    "steps": [
        {
            "id": "intro",
            "subject": "Hello {{ lead.firstName }}",
            "body": "Hi {{ lead.firstName }} at {{ lead.company }}",
            "requiresApproval": True,
            "delay": "PT1H",
        },
        {
            "id": "follow-up",
            "subject": "Again, {{ lead.firstName }}",
            "body": "Checking in.",
            "requiresApproval": True,
        },
    ],
}


@dataclass
class Campaign:
    """A campaign in one account group, with a key that may do everything there."""

    account_group_id: str
    campaign_id: str
    key: IssuedKey

    @property
    def url(self) -> str:
        """The campaign's path, `/v1/accounts/{ag}/campaigns/{id}`, without the base URL."""
        return f"/v1/accounts/{self.account_group_id}/campaigns/{self.campaign_id}"

    @property
    def auth(self) -> dict[str, str]:
        """Headers presenting the campaign's key: `Authorization: Bearer …`."""
        return {"Authorization": f"Bearer {self.key.key}"}

    def instance_url(self, workflow_instance_id: str) -> str:
        """The instance's resource path."""
        return f"{self.url}/workflow-instances/{workflow_instance_id}"

    def approve_url(self, workflow_instance_id: str) -> str:
        """The approve endpoint of the instance (the reference page's path)."""
        return f"{self.instance_url(workflow_instance_id)}/approve"


async def create_campaign(api: Api, definition: dict[str, Any] = TWO_STEP_CAMPAIGN) -> Campaign:
    """A new campaign in a new account group, with a key that may do everything there."""
    account_group_id, campaign_id = new_object_id(), new_object_id()
    key = await api.issue_key([account_group_id])
    created = Campaign(account_group_id, campaign_id, key)
    response = await api.http.put(created.url, json=definition, headers=created.auth)
    assert response.status_code == 201, response.text
    return created


def lead(**overrides: str) -> dict[str, str]:
    """A lead as the enrolment body's `lead` (camelCase): a fresh id, Ada Lovelace's details,
    and any field given in `overrides` (e.g. `email=...`)."""
    return {
        "id": new_object_id(),
        "email": "ada@example.com",
        "firstName": "Ada",
        "lastName": "Lovelace",
        "company": "Analytical Engines",
        **overrides,
    }


async def replace_campaign(api: Api, campaign: Campaign, definition: dict[str, Any]) -> None:
    """PUTs a new definition over the campaign; asserts the 200 of a replacement."""
    response = await api.http.put(campaign.url, json=definition, headers=campaign.auth)
    assert response.status_code == 200, response.text


async def enrol(api: Api, campaign: Campaign, enrolled: dict[str, str] | None = None) -> str:
    """Enrols a lead (a fresh one by default); returns its workflow instance id."""
    response = await api.http.post(
        f"{campaign.url}/workflow-instances",
        json={"lead": enrolled or lead()},
        headers=campaign.auth,
    )
    assert response.status_code == 201, response.text
    instance_id: str = response.json()["data"]["workflowInstanceId"]
    return instance_id


async def approve(api: Api, campaign: Campaign, instance_id: str) -> httpx.Response:
    """POSTs the approval with the campaign's key; returns the answer, whatever it is."""
    return await api.http.post(campaign.approve_url(instance_id), headers=campaign.auth)


async def approve_ok(api: Api, campaign: Campaign, instance_id: str) -> None:
    """Approves the instance's gate; asserts the answer is a 200."""
    response = await approve(api, campaign, instance_id)
    assert response.status_code == 200, response.text


def message_id_of(campaign: Campaign, instance_id: str, step_id: str) -> str:
    """The Message-ID a step of this instance is delivered under."""
    workflow_id = workflow_id_for(campaign.account_group_id, campaign.campaign_id, instance_id)
    return message_id_for(workflow_id, step_id)


async def enrol_to_gate(api: Api, campaign: Campaign) -> str:
    """Enrols a fresh lead and waits until its first gate is open; returns its instance id."""
    instance_id = await enrol(api, campaign)
    # 30 s: a worker process started just before (the fault tests) may still be importing on
    # a loaded 2-core machine; a gate that opens is not a race, so waiting longer costs nothing.
    await wait_for_status(api, campaign, instance_id, within=30.0, hasPendingApproval=True)
    return instance_id


async def instance_data(api: Api, campaign: Campaign, instance_id: str) -> dict[str, Any]:
    """The instance's `data` as `GET …/workflow-instances/{id}` returns it (camelCase JSON);
    asserts a 200."""
    response = await api.http.get(campaign.instance_url(instance_id), headers=campaign.auth)
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()["data"]
    return data


async def lead_status(api: Api, campaign: Campaign, instance_id: str) -> dict[str, Any]:
    """The instance's `leadStatus` as the API returns it (camelCase JSON); asserts a 200."""
    status: dict[str, Any] = (await instance_data(api, campaign, instance_id))["leadStatus"]
    return status


async def wait_for_status(
    api: Api, campaign: Campaign, instance_id: str, within: float = 30.0, **expected: Any
) -> dict[str, Any]:
    """Waits until the instance's lead status has every expected field value; returns it.

    Answers other than 200 count as "not yet": a freshly (re)started worker may not answer the
    first queries in time.
    """

    async def status() -> dict[str, Any]:
        response = await api.http.get(campaign.instance_url(instance_id), headers=campaign.auth)
        if response.status_code != 200:
            return {"response": response.text}
        seen: dict[str, Any] = response.json()["data"]["leadStatus"]
        return seen

    return await assert_eventually(
        status,
        lambda seen: all(seen.get(name) == value for name, value in expected.items()),
        within=within,
        what=f"lead status {expected}",
    )


def outbox_files(settings: Settings) -> list[Path]:
    """The messages in the file outbox of these settings, by name."""
    directory = settings.resolved_outbox_dir
    return sorted(directory.glob("*.eml")) if directory.exists() else []
