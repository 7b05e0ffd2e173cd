"""The approve endpoint, every status code from a real situation, against a real Temporal server."""

from __future__ import annotations

import asyncio
import email
from pathlib import Path

from temporalio.worker import Worker

from campaign_engine.ids import new_object_id
from campaign_engine.keys import Permission
from tests.conftest import Api, Campaign, enroll_to_gate, eventually


def outbox(api: Api) -> list[Path]:
    directory = api.settings.resolved_outbox_dir
    return sorted(directory.glob("*.eml")) if directory.exists() else []


async def test_approve_delivers_and_opens_next_gate(api: Api, campaign: Campaign, worker: Worker) -> None:
    instance_id = await enroll_to_gate(api, campaign)
    pending = (await api.http.get(campaign.instance_url(instance_id), headers=campaign.auth)).json()
    assert pending["data"]["pendingContent"] == {
        "stepId": "intro",
        "subject": "Hello Ada",
        "body": "Hi Ada at Analytical Engines",
    }

    response = await api.http.post(f"{campaign.instance_url(instance_id)}/approve", headers=campaign.auth)

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["success"] is True and body["error"] is None
    assert body["traceId"] == response.headers["X-Trace-Id"]
    assert body["data"]["action"] == "approved"
    assert body["data"]["workflowInstanceId"] == instance_id
    status = body["data"]["leadStatus"]
    assert status["workflowInstanceId"] == instance_id
    assert status["latestStep"] == "intro"
    assert status["hasPendingApproval"] is False
    assert status["workflowStatus"] == "running"
    assert status["workflowStopReason"] is None

    async def next_gate_open() -> bool:
        got = await api.http.get(campaign.instance_url(instance_id), headers=campaign.auth)
        data = got.json()["data"]
        return bool(data["leadStatus"]["hasPendingApproval"] and data["leadStatus"]["latestStep"] == "follow-up")

    await eventually(next_gate_open)
    [delivered] = outbox(api)
    message = email.message_from_bytes(delivered.read_bytes())
    assert message["To"] == "ada@example.com"
    assert message["Subject"] == "Hello Ada"
    assert message.get_payload().strip() == "Hi Ada at Analytical Engines"


async def test_approve_second_time_is_409(api: Api, campaign: Campaign, worker: Worker) -> None:
    instance_id = await enroll_to_gate(api, campaign)
    url = f"{campaign.instance_url(instance_id)}/approve"
    assert (await api.http.post(url, headers=campaign.auth)).status_code == 200

    response = await api.http.post(url, headers=campaign.auth)

    assert response.status_code == 409
    error = response.json()["error"]
    assert error["code"] == "NO_PENDING_APPROVAL"
    assert error["details"] in {"ALREADY_APPROVED", "NO_GATE_OPEN"}
