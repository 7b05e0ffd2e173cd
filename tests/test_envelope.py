"""Every response is the envelope, FastAPI's own errors included; OpenAPI as the reference."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from tests.helpers import Api, Campaign

APPROVE_PATH = (
    "/v1/accounts/{accountGroupId}/campaigns/{campaignId}"
    "/workflow-instances/{workflowInstanceId}/approve"
)


def assert_error_envelope(response: Any, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"success", "data", "error", "traceId"}
    assert body["success"] is False and body["data"] is None
    assert body["error"]["code"] == code
    assert body["traceId"] == response.headers["X-Trace-Id"]
    assert len(body["traceId"]) == 32


async def test_unknown_route_is_404_envelope(api: Api) -> None:
    assert_error_envelope(await api.http.get("/v1/nowhere"), 404, "NOT_FOUND")


async def test_wrong_method_is_405_envelope(api: Api, campaign: Campaign) -> None:
    response = await api.http.delete(campaign.url, headers=campaign.auth)

    assert_error_envelope(response, 405, "METHOD_NOT_ALLOWED")
    assert "PUT" in response.headers["Allow"]


async def test_malformed_json_is_400_envelope(api: Api, campaign: Campaign) -> None:
    response = await api.http.put(
        campaign.url,
        content=b"{not json",
        headers={**campaign.auth, "Content-Type": "application/json"},
    )

    assert_error_envelope(response, 400, "VALIDATION_ERROR")


async def test_incoming_traceparent_is_continued(api: Api) -> None:
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"

    response = await api.http.get(
        "/v1/nowhere", headers={"traceparent": f"00-{trace_id}-00f067aa0ba902b7-01"}
    )

    assert response.json()["traceId"] == trace_id


async def test_openapi_names_schemas_and_lists_every_status(api: Api) -> None:
    spec = (await api.http.get("/openapi.json")).json()

    approve = spec["paths"][APPROVE_PATH]["post"]
    assert "requestBody" not in approve
    responses = approve["responses"]
    assert set(responses) == {"200", "400", "401", "403", "404", "409", "429", "500", "502"}
    schema_of = {
        status: response["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[-1]
        for status, response in responses.items()
    }
    assert schema_of["200"] == "CampaignApprovalResultSuccessResponse"
    assert schema_of["400"] == "ValidationErrorResponse"
    assert {schema_of[s] for s in ("401", "403", "404", "409", "429", "500", "502")} == {
        "ErrorResponse"
    }
    for path in spec["paths"].values():
        for operation in path.values():
            assert "422" not in operation["responses"]
    assert "HTTPValidationError" not in spec["components"]["schemas"]


async def test_request_log_line_carries_trace_and_key_id(
    api: Api, campaign: Campaign, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="campaign_engine.api")

    response = await api.http.get(campaign.url, headers=campaign.auth)

    [record] = [
        r for r in caplog.records if getattr(r, "trace_id", None) == response.json()["traceId"]
    ]
    # The path is the route's template (ids are fields of their own).
    assert record.getMessage() == "GET /v1/accounts/{accountGroupId}/campaigns/{campaignId} 200"
    assert record.__dict__["key_id"] == campaign.key.id
    assert record.__dict__["account_group_id"] == campaign.account_group_id
    assert record.__dict__["campaign_id"] == campaign.campaign_id
    assert campaign.key.key not in caplog.text
