"""HTTP as callers expect it (issue 8, item 7): HEAD, no redirects, 415 for non-JSON bodies."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from temporalio.worker import Worker

from campaign_engine.ids import new_object_id
from tests.helpers import TWO_STEP_CAMPAIGN, Api, Campaign, enrol_to_gate, lead

# Per-request headers that legitimately differ between two requests.
VARYING = {"x-trace-id", "date", "x-ratelimit-remaining", "x-ratelimit-reset"}


def comparable_headers(response: httpx.Response) -> dict[str, str]:
    return {k: v for k, v in response.headers.items() if k.lower() not in VARYING}


async def test_head_answers_every_get_route_with_gets_headers_and_no_body(
    api: Api, campaign: Campaign, worker: Worker
) -> None:
    instance_id = await enrol_to_gate(api, campaign)
    routes = ["/healthz", "/readyz", campaign.url, campaign.instance_url(instance_id)]
    for path in routes:
        got = await api.http.get(path, headers=campaign.auth)
        head = await api.http.head(path, headers=campaign.auth)

        assert got.status_code == 200, (path, got.text)
        assert head.status_code == 200, (path, head.text)
        assert head.content == b""
        assert comparable_headers(head) == comparable_headers(got), path
        assert int(head.headers["content-length"]) == len(got.content)
        assert head.headers["x-trace-id"] != got.headers["x-trace-id"]


async def test_head_runs_the_same_checks_as_get(api: Api, campaign: Campaign) -> None:
    unknown_instance = campaign.instance_url(new_object_id())

    no_key = await api.http.head(campaign.url)
    bad_id = await api.http.head(f"{campaign.url[:-24]}not-an-id", headers=campaign.auth)
    missing = await api.http.head(unknown_instance, headers=campaign.auth)

    assert (no_key.status_code, no_key.content) == (401, b"")
    assert no_key.headers["www-authenticate"] == "Bearer"
    assert (bad_id.status_code, bad_id.content) == (400, b"")
    assert missing.status_code == 404
    # A route without GET does not grow a HEAD: it answers 405 naming what it allows.
    approve = await api.http.head(f"{unknown_instance}/approve", headers=campaign.auth)
    assert approve.status_code == 405
    assert approve.headers["allow"] == "POST"


@pytest.mark.parametrize("method", ["GET", "POST", "PUT", "HEAD"])
async def test_a_trailing_slash_gets_the_envelope_never_a_redirect(
    api: Api, campaign: Campaign, method: str
) -> None:
    paths = [
        "/healthz/",
        "/readyz/",
        f"{campaign.url}/",
        f"{campaign.url}/workflow-instances/",
        f"{campaign.instance_url(new_object_id())}/",
        f"{campaign.instance_url(new_object_id())}/approve/",
    ]
    for path in paths:
        response = await api.http.request(method, path, headers=campaign.auth)

        assert response.status_code == 404, (method, path, response.status_code)
        assert "location" not in response.headers
        if method != "HEAD":
            error = response.json()["error"]
            assert error["code"] == "NOT_FOUND"
            assert "trailing slash" in error["message"]
    # Paths that do not exist without the slash either are plain unknown routes.
    unknown = await api.http.get("/nowhere/", headers=campaign.auth)
    assert unknown.json()["error"]["message"] == "No such route"


BODY_CASES: list[tuple[str, str]] = [
    ("text/plain", "the issue's input"),
    ("application/x-www-form-urlencoded", "what curl -d sends"),
    ("multipart/form-data; boundary=x", "a form upload"),
    ("text/json", "not a registered JSON type"),
    ("application/jsonx", "a look-alike"),
    ("application/xml", "another format"),
]


@pytest.mark.parametrize(("content_type", "why"), BODY_CASES)
async def test_a_body_that_is_not_json_is_415_and_changes_nothing(
    api: Api, campaign: Campaign, worker: Worker, content_type: str, why: str
) -> None:
    other_campaign = campaign.url[:-24] + new_object_id()
    enrolled = lead()

    put = await api.http.put(
        other_campaign,
        content=json.dumps(TWO_STEP_CAMPAIGN),
        headers={**campaign.auth, "Content-Type": content_type},
    )
    enrol = await api.http.post(
        f"{campaign.url}/workflow-instances",
        content=json.dumps({"lead": enrolled}),
        headers={**campaign.auth, "Content-Type": content_type},
    )

    for response in (put, enrol):
        assert response.status_code == 415, (why, response.text)
        assert response.json()["error"]["code"] == "UNSUPPORTED_MEDIA_TYPE"
        assert response.json()["error"]["details"] == "application/json"
    assert (await api.http.get(other_campaign, headers=campaign.auth)).status_code == 404
    # Nothing was started: the same lead enrols now, once.
    retried = await api.http.post(
        f"{campaign.url}/workflow-instances", json={"lead": enrolled}, headers=campaign.auth
    )
    assert retried.status_code == 201, retried.text


@pytest.mark.parametrize(
    "content_type",
    [None, "application/json", "application/json; charset=utf-8", "Application/JSON",
     "application/merge-patch+json"],
)  # fmt: skip
async def test_json_bodies_are_accepted_with_or_without_parameters(
    api: Api, campaign: Campaign, content_type: str | None
) -> None:

    headers: dict[str, Any] = dict(campaign.auth)
    if content_type is not None:
        headers["Content-Type"] = content_type
    request = api.http.build_request(
        "PUT", campaign.url, content=json.dumps(TWO_STEP_CAMPAIGN), headers=headers
    )
    assert request.headers.get("Content-Type") == content_type

    response = await api.http.send(request)

    assert response.status_code == 200, response.text


async def test_the_approve_endpoint_ignores_any_body_it_is_sent(
    api: Api, campaign: Campaign, worker: Worker
) -> None:
    instance_id = await enrol_to_gate(api, campaign)

    response = await api.http.post(
        campaign.approve_url(instance_id),
        content=b"approve please",
        headers={**campaign.auth, "Content-Type": "text/plain"},
    )

    assert response.status_code == 200, response.text


async def test_openapi_declares_head_and_415(api: Api) -> None:
    paths = (await api.http.get("/openapi.json")).json()["paths"]

    for path, operations in paths.items():
        if "get" in operations:
            assert "head" in operations, path
            assert all("content" not in r for r in operations["head"]["responses"].values())
            ids = {operations["get"]["operationId"], operations["head"]["operationId"]}
            assert len(ids) == 2, path
        for method in ("put", "post"):
            if "requestBody" in operations.get(method, {}):
                assert "415" in operations[method]["responses"], (method, path)
    approve = paths[
        "/v1/accounts/{accountGroupId}/campaigns/{campaignId}/workflow-instances/"
        "{workflowInstanceId}/approve"
    ]["post"]
    assert "415" not in approve["responses"]
