"""Send windows, `from`, `businessDays` and a lead's `timeZone` at the API: 400 naming the field."""

from __future__ import annotations

from typing import Any

import pytest

from campaign_engine.settings import MailboxLimits
from tests.helpers import Api, create_campaign, lead
from tests.helpers.campaigns import Campaign

WINDOW = {"timeZone": "America/New_York", "days": ["mon", "fri"], "start": "09:00", "end": "17:00"}


def campaign_with(**fields: Any) -> dict[str, Any]:
    """A one-step campaign with `fields` added (camelCase) or replaced."""
    return {
        "name": "Windowed",
        "steps": [{"id": "intro", "subject": "Hello", "body": "Hi"}],
        **fields,
    }


async def put(api: Api, campaign: Campaign, definition: dict[str, Any]) -> Any:
    """PUTs `definition` over the campaign; returns the response."""
    return await api.http.put(campaign.url, json=definition, headers=campaign.auth)


async def test_a_window_is_stored_and_read_back(api: Api) -> None:
    definition = campaign_with(
        sendWindow={**WINDOW, "holidays": "US-NY"},
        steps=[
            {"id": "intro", "subject": "Hello", "body": "Hi", "businessDays": 2},
            {"id": "next", "subject": "Again", "body": "Hi"},
        ],
    )
    campaign = await create_campaign(api, definition)

    read = await api.http.get(campaign.url, headers=campaign.auth)

    data = read.json()["data"]
    assert data["sendWindow"] == {**WINDOW, "holidays": "US-NY"}
    assert data["steps"][0]["businessDays"] == 2
    assert data["paused"] is False and data["pausedAt"] is None


@pytest.mark.parametrize(
    ("window", "field"),
    [
        ({**WINDOW, "timeZone": "Mars/Olympus"}, "sendWindow.timeZone"),
        ({**WINDOW, "timeZone": "../etc/passwd"}, "sendWindow.timeZone"),
        ({**WINDOW, "timeZone": "America/New_York "}, "sendWindow.timeZone"),
        ({**WINDOW, "timeZone": "localtime"}, "sendWindow.timeZone"),
        ({**WINDOW, "days": ["monday"]}, "sendWindow.days"),
        ({**WINDOW, "days": ["mon", "mon"]}, "sendWindow.days"),
        ({**WINDOW, "days": []}, "sendWindow.days"),
        ({**WINDOW, "start": "9:00"}, "sendWindow.start"),
        ({**WINDOW, "start": "09:60"}, "sendWindow.start"),
        ({**WINDOW, "start": "24:00"}, "sendWindow.start"),
        ({**WINDOW, "end": "25:00"}, "sendWindow.end"),
        ({**WINDOW, "start": "17:00", "end": "09:00"}, "sendWindow.end"),
        ({**WINDOW, "end": "09:00"}, "sendWindow.end"),
        ({**WINDOW, "holidays": "XX"}, "sendWindow.holidays"),
        ({**WINDOW, "holidays": "US-ZZ"}, "sendWindow.holidays"),
    ],
)
async def test_a_window_that_cannot_be_used_is_a_400_naming_the_field(
    api: Api, window: dict[str, Any], field: str
) -> None:
    campaign = await create_campaign(api, campaign_with())

    response = await put(api, campaign, campaign_with(sendWindow=window))

    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "VALIDATION_ERROR"
    assert error["details"] == field, error
    stored = await api.http.get(campaign.url, headers=campaign.auth)
    assert stored.json()["data"]["sendWindow"] is None


@pytest.mark.parametrize(
    "step",
    [
        {"id": "a", "subject": "s", "body": "b", "businessDays": 1, "delay": "P1D"},
        {"id": "a", "subject": "s", "body": "b", "businessDays": 0},
        {"id": "a", "subject": "s", "body": "b", "businessDays": True},
        {"id": "a", "subject": "s", "body": "b", "businessDays": 1.5},
    ],
)
async def test_business_days_are_a_positive_whole_number_instead_of_a_delay(
    api: Api, step: dict[str, Any]
) -> None:
    campaign = await create_campaign(api, campaign_with())

    response = await put(api, campaign, campaign_with(steps=[step]))

    assert response.status_code == 400, response.text
    assert response.json()["error"]["details"].startswith("steps.0"), response.text


@pytest.mark.parametrize(
    "settings_overrides",
    [{"mailboxes": {"sales@example.com": MailboxLimits(account_groups="*", daily_cap=5)}}],
)
async def test_from_must_be_the_sender_or_a_configured_mailbox(api: Api) -> None:
    campaign = await create_campaign(api, campaign_with())

    configured = await put(api, campaign, campaign_with(**{"from": "Sales <Sales@Example.com>"}))
    sender = await put(api, campaign, campaign_with(**{"from": "campaigns@localhost"}))
    stranger = await put(api, campaign, campaign_with(**{"from": "ceo@bank.example"}))
    broken = await put(api, campaign, campaign_with(**{"from": "Sales <sales@example.com"}))

    assert configured.status_code == 200, configured.text
    assert configured.json()["data"]["from"] == "Sales <Sales@Example.com>"
    assert sender.status_code == 200, sender.text
    for refused in (stranger, broken):
        assert refused.status_code == 400, refused.text
        assert refused.json()["error"]["details"] == "from"


@pytest.mark.parametrize("zone", ["Mars/Olympus", "", "../../etc/passwd", "EST5EDT "])
async def test_a_lead_time_zone_that_is_no_zone_is_a_400(api: Api, zone: str) -> None:
    campaign = await create_campaign(api, campaign_with(sendWindow=WINDOW))

    response = await api.http.post(
        f"{campaign.url}/workflow-instances",
        json={"lead": lead(timeZone=zone)},
        headers=campaign.auth,
    )

    assert response.status_code == 400, response.text
    assert response.json()["error"]["details"] == "lead.timeZone"
