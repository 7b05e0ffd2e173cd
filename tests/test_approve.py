"""The approve endpoint, every status code from a real situation, against a real Temporal server."""

from __future__ import annotations

import asyncio
import email

import pytest
from temporalio.worker import Worker

from campaign_engine.ids import new_object_id
from campaign_engine.keys import Permission
from tests.helpers import (
    TWO_STEP_CAMPAIGN,
    Api,
    Campaign,
    approve,
    assert_eventually,
    enrol_to_gate,
    outbox_files,
)


async def test_approve_delivers_and_opens_next_gate(
    api: Api, campaign: Campaign, worker: Worker
) -> None:
    quick = {
        **TWO_STEP_CAMPAIGN,
        "steps": [{**TWO_STEP_CAMPAIGN["steps"][0], "delay": 1}, TWO_STEP_CAMPAIGN["steps"][1]],
    }
    assert (await api.http.put(campaign.url, json=quick, headers=campaign.auth)).status_code == 200
    instance_id = await enrol_to_gate(api, campaign)
    pending = (await api.http.get(campaign.instance_url(instance_id), headers=campaign.auth)).json()
    assert pending["data"]["pendingContent"] == {
        "stepId": "intro",
        "subject": "Hello Ada",
        "body": "Hi Ada at Analytical Engines",
        "gateId": pending["data"]["pendingContent"]["gateId"],
    }
    assert len(pending["data"]["pendingContent"]["gateId"]) == 32

    response = await approve(api, campaign, instance_id)

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
        return bool(
            data["leadStatus"]["hasPendingApproval"]
            and data["leadStatus"]["latestStep"] == "follow-up"
        )

    await assert_eventually(next_gate_open)
    [delivered] = outbox_files(api.settings)
    message = email.message_from_bytes(delivered.read_bytes())
    dotted = f"campaign.{campaign.account_group_id}.{campaign.campaign_id}.{instance_id}.intro"
    assert delivered.name == f"{dotted}.eml"
    assert message["Message-ID"] == f"<{dotted}@campaign-engine>"
    assert message["To"] == "ada@example.com"
    assert message["Subject"] == "Hello Ada"
    # What the reviewer approved, then the unsubscribe line every message carries (RFC 8058's
    # visible counterpart; the template placed none, so it is appended after "-- ").
    payload = message.get_payload(decode=True)
    assert isinstance(payload, bytes)
    # The outbox keeps the bytes as signed and sent: CRLF line ends (RFC 5322 §2.1).
    text = payload.decode().replace("\r\n", "\n")
    draft, separator, footer = text.partition("\n-- \n")
    assert (draft.strip(), separator) == ("Hi Ada at Analytical Engines", "\n-- \n")
    assert footer.startswith(
        f"To stop receiving these messages: http://{api.settings.api_host}:{api.settings.api_port}/u/"
    )


async def test_approve_second_time_is_409(api: Api, campaign: Campaign, worker: Worker) -> None:
    instance_id = await enrol_to_gate(api, campaign)
    url = campaign.approve_url(instance_id)
    assert (await api.http.post(url, headers=campaign.auth)).status_code == 200

    response = await api.http.post(url, headers=campaign.auth)

    assert response.status_code == 409
    error = response.json()["error"]
    assert error["code"] == "NO_PENDING_APPROVAL"
    assert error["details"] == "ALREADY_APPROVED"


async def test_approve_without_key_is_401(api: Api, campaign: Campaign, worker: Worker) -> None:
    instance_id = await enrol_to_gate(api, campaign)

    response = await api.http.post(campaign.approve_url(instance_id))

    assert response.status_code == 401
    assert response.json()["error"]["code"] == "UNAUTHORIZED"
    assert response.headers["WWW-Authenticate"] == "Bearer"


@pytest.mark.parametrize(
    "authorization", ["Basic YWRhOnNlY3JldA==", "Token abc", "Bearer", "bearer-but-no-space"]
)
async def test_an_authorization_header_of_another_scheme_is_401_saying_so(
    api: Api, campaign: Campaign, authorization: str
) -> None:
    response = await api.http.post(
        campaign.approve_url(new_object_id()), headers={"Authorization": authorization}
    )

    assert response.status_code == 401
    error = response.json()["error"]
    assert error["code"] == "UNAUTHORIZED"
    assert "Bearer scheme" in error["message"] and "X-API-Key" in error["message"]
    assert response.headers["WWW-Authenticate"] == "Bearer"


async def test_approve_with_wrong_secret_is_401(
    api: Api, campaign: Campaign, worker: Worker
) -> None:
    instance_id = await enrol_to_gate(api, campaign)
    forged = campaign.key.key[:-4] + ("AAAA" if not campaign.key.key.endswith("AAAA") else "BBBB")

    response = await api.http.post(campaign.approve_url(instance_id), headers={"X-API-Key": forged})

    assert response.status_code == 401
    assert response.json()["error"]["message"] == "Invalid or revoked API key"


async def test_approve_with_revoked_key_is_401(
    api: Api, campaign: Campaign, worker: Worker
) -> None:
    instance_id = await enrol_to_gate(api, campaign)
    approver = await api.issue_key([campaign.account_group_id], [Permission.CAMPAIGNS_EXECUTE])
    assert await api.store.revoke_api_key(approver.id)

    response = await api.http.post(
        campaign.approve_url(instance_id),
        headers={"Authorization": f"Bearer {approver.key}"},
    )

    assert response.status_code == 401
    still_pending = await api.http.get(campaign.instance_url(instance_id), headers=campaign.auth)
    assert still_pending.json()["data"]["leadStatus"]["hasPendingApproval"] is True


async def test_approve_accepts_x_api_key_header(
    api: Api, campaign: Campaign, worker: Worker
) -> None:
    instance_id = await enrol_to_gate(api, campaign)

    response = await api.http.post(
        campaign.approve_url(instance_id), headers={"X-API-Key": campaign.key.key}
    )

    assert response.status_code == 200, response.text


async def test_approve_without_execute_permission_is_403(
    api: Api, campaign: Campaign, worker: Worker
) -> None:
    instance_id = await enrol_to_gate(api, campaign)
    reader = await api.issue_key(
        [campaign.account_group_id], [Permission.CAMPAIGNS_READ, Permission.CAMPAIGNS_WRITE]
    )

    response = await api.http.post(
        campaign.approve_url(instance_id),
        headers={"Authorization": f"Bearer {reader.key}"},
    )

    assert response.status_code == 403
    assert response.json()["error"]["code"] == "MISSING_PERMISSION"
    assert response.json()["error"]["details"] == "campaigns:execute"


async def test_approve_with_key_of_other_account_group_is_403(
    api: Api, campaign: Campaign, worker: Worker
) -> None:
    instance_id = await enrol_to_gate(api, campaign)
    outsider = await api.issue_key([new_object_id()])

    response = await api.http.post(
        campaign.approve_url(instance_id),
        headers={"Authorization": f"Bearer {outsider.key}"},
    )

    assert response.status_code == 403
    assert response.json()["error"]["code"] == "ACCOUNT_GROUP_ACCESS_DENIED"
    still_pending = await api.http.get(campaign.instance_url(instance_id), headers=campaign.auth)
    assert still_pending.json()["data"]["leadStatus"]["hasPendingApproval"] is True


async def test_approve_with_malformed_id_is_400(api: Api, campaign: Campaign) -> None:
    response = await api.http.post(
        f"{campaign.url}/workflow-instances/not-an-object-id/approve", headers=campaign.auth
    )

    assert response.status_code == 400
    body = response.json()
    assert body["success"] is False and body["data"] is None
    assert body["error"]["code"] == "VALIDATION_ERROR"
    assert body["error"]["details"] == "workflowInstanceId"
    assert "24-character" in body["error"]["message"]


async def test_approve_checks_key_before_ids(api: Api, campaign: Campaign) -> None:
    response = await api.http.post(f"{campaign.url}/workflow-instances/nope/approve")

    assert response.status_code == 401


async def test_approve_unknown_instance_is_404(
    api: Api, campaign: Campaign, worker: Worker
) -> None:
    response = await api.http.post(campaign.approve_url(new_object_id()), headers=campaign.auth)

    assert response.status_code == 404
    assert response.json()["error"]["code"] == "WORKFLOW_INSTANCE_NOT_FOUND"


async def test_approve_instance_through_other_campaign_is_404(
    api: Api, campaign: Campaign, worker: Worker
) -> None:
    instance_id = await enrol_to_gate(api, campaign)
    other_campaign_url = f"/v1/accounts/{campaign.account_group_id}/campaigns/{new_object_id()}"

    response = await api.http.post(
        f"{other_campaign_url}/workflow-instances/{instance_id}/approve", headers=campaign.auth
    )

    assert response.status_code == 404
    still_pending = await api.http.get(campaign.instance_url(instance_id), headers=campaign.auth)
    assert still_pending.json()["data"]["leadStatus"]["hasPendingApproval"] is True


async def test_approve_completed_instance_is_409(
    api: Api, campaign: Campaign, worker: Worker
) -> None:
    single_step = {
        "name": "One step",
        "steps": [{"id": "only", "subject": "Hi", "body": "Hello", "requiresApproval": True}],
    }
    assert (
        await api.http.put(campaign.url, json=single_step, headers=campaign.auth)
    ).status_code == 200
    instance_id = await enrol_to_gate(api, campaign)
    url = campaign.approve_url(instance_id)
    assert (await api.http.post(url, headers=campaign.auth)).status_code == 200

    async def completed() -> bool:
        got = await api.http.get(campaign.instance_url(instance_id), headers=campaign.auth)
        return bool(got.json()["data"]["leadStatus"]["workflowStatus"] == "completed")

    await assert_eventually(completed)
    response = await api.http.post(url, headers=campaign.auth)

    assert response.status_code == 409
    assert response.json()["error"]["details"] == "WORKFLOW_CLOSED"


async def test_concurrent_approvals_exactly_one_wins(
    api: Api, campaign: Campaign, worker: Worker
) -> None:
    instance_id = await enrol_to_gate(api, campaign)
    url = campaign.approve_url(instance_id)

    responses = await asyncio.gather(
        *(api.http.post(url, headers=campaign.auth) for _ in range(20))
    )

    codes = sorted(r.status_code for r in responses)
    assert codes == [200] + [409] * 19, [
        r.text for r in responses if r.status_code not in (200, 409)
    ]
    assert {r.json()["error"]["details"] for r in responses if r.status_code == 409} == {
        "ALREADY_APPROVED"
    }

    async def delaying_after_delivery() -> bool:
        got = await api.http.get(campaign.instance_url(instance_id), headers=campaign.auth)
        return bool(got.json()["data"]["leadStatus"]["workflowStatus"] == "pending")

    await assert_eventually(delaying_after_delivery)
    assert len(outbox_files(api.settings)) == 1


@pytest.mark.parametrize("settings_overrides", [{"rate_limit": "5/minute"}])
async def test_approve_over_rate_limit_is_429(api: Api, campaign: Campaign) -> None:
    limited = await api.issue_key([campaign.account_group_id])
    url = campaign.approve_url(new_object_id())
    headers = {"Authorization": f"Bearer {limited.key}"}

    within_budget = [await api.http.post(url, headers=headers) for _ in range(5)]
    response = await api.http.post(url, headers=headers)

    assert {r.status_code for r in within_budget} == {404}
    assert response.status_code == 429
    assert response.json()["error"]["code"] == "RATE_LIMITED"
    assert 1 <= int(response.headers["Retry-After"]) <= 60
    assert response.headers["X-RateLimit-Limit"] == "5"
    assert response.headers["X-RateLimit-Remaining"] == "0"
    other_key = await api.http.post(url, headers=campaign.auth)
    assert other_key.status_code == 404
