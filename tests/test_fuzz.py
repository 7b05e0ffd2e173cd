"""Bad input: schemathesis against the app's own OpenAPI, in-process; and a cross-tenant matrix.

The fuzzed app runs in schemathesis's own ASGI portal (its lifespan started once, on first call)
against the session's Temporal dev server, with a fresh store and a key that may do everything in
one account group. Every answer must be declared in the spec, be the envelope, and never be a 500.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from schemathesis import Case, GenerationMode
from schemathesis.core import NotSet
from schemathesis.specs.openapi.checks import positive_data_acceptance
from temporalio.worker import Worker

from api import create_app
from api.schemas import MAX_REQUEST_BODY_BYTES
from campaign_engine.ids import new_object_id
from campaign_engine.keys import KeyRing, Permission, load_pepper
from campaign_engine.settings import Settings
from campaign_engine.store import Store
from entrypoints.devserver import DevServer
from tests.helpers import TWO_STEP_CAMPAIGN, Api, Campaign, create_campaign, enrol_to_gate
from tests.keys import TEST_PAYLOAD_KEYS

# Known at import (the schema is read at collection); the Temporal address is filled in by the
# fixture below before the first request starts the app's lifespan.
# Removed when the interpreter exits (the object's finalizer).
_FUZZ_STATE = tempfile.TemporaryDirectory(prefix="campaign-engine-fuzz-")
FUZZ_SETTINGS = Settings(
    state_dir=Path(_FUZZ_STATE.name),
    temporal_address="127.0.0.1:1",
    task_queue=f"fuzz-{uuid.uuid4()}",
    temporal_rpc_timeout_seconds=1.0,
    rate_limit="100000000/minute",
    auth_failure_limit="100000000/minute",
    # The session server's other clients read what the fuzzed app starts: the same test keys.
    payload_keys=TEST_PAYLOAD_KEYS,
)
FUZZ_ACCOUNT_GROUP = new_object_id()
FUZZ_CAMPAIGN = new_object_id()
app = create_app(FUZZ_SETTINGS)
# Raw inbound mail: real message shapes and arbitrary bytes (schemathesis has no serializer for
# `message/rfc822` of its own).
schemathesis.openapi.media_type(
    "message/rfc822",
    st.one_of(
        st.binary(max_size=2000),
        st.builds(
            lambda subject, body: (
                f"From: lead@example.com\r\nTo: sales@example.com\r\nSubject: {subject}\r\n"
                f"Message-ID: <{uuid.uuid4()}@example.com>\r\n\r\n{body}\r\n"
            ).encode("utf-8", "surrogatepass"),
            st.text(max_size=80).filter(lambda text: "\n" not in text and "\r" not in text),
            st.text(max_size=400),
        ),
    ),
)
schema = schemathesis.openapi.from_asgi("/openapi.json", app)
_turn = itertools.count()


@pytest.fixture(scope="module")
def fuzz_key(temporal_server: DevServer) -> Iterator[str]:
    FUZZ_SETTINGS.temporal_address = temporal_server.address

    async def issue() -> str:
        store = await Store.open(FUZZ_SETTINGS.resolved_database_url)
        try:
            keyring = KeyRing(store, load_pepper(FUZZ_SETTINGS))
            issued = await keyring.issue("fuzz", [FUZZ_ACCOUNT_GROUP], list(Permission))
            # A campaign to find, so reads and enrolments get past 404 too.
            await store.put_campaign(FUZZ_ACCOUNT_GROUP, FUZZ_CAMPAIGN, TWO_STEP_CAMPAIGN)
            return issued.key
        finally:
            await store.close()

    # Its own loop: the fuzz tests are synchronous, and the app lives in schemathesis's portal.
    loop = asyncio.new_event_loop()
    try:
        yield loop.run_until_complete(issue())
    finally:
        loop.close()


def _deliberately_invalid(case: Case[Any], locations: set[str]) -> bool:
    """Whether schemathesis generated any of these parts (`path`, `header`, ...) negatively."""
    meta = case.meta
    if meta is None:
        return False
    return any(
        location.value in locations and info.mode == GenerationMode.NEGATIVE
        for location, info in meta.components.items()
    )


@schema.parametrize()
@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)
def test_fuzz_every_operation_answers_declared_envelopes(case: Case[Any], fuzz_key: str) -> None:
    headers: dict[str, str] = {}
    # Every other case carries a valid key scoped to the ids it names, to reach past 401/403;
    # not one whose path or headers schemathesis made invalid on purpose, since replacing them
    # would make its "invalid data is rejected" check wrong.
    if next(_turn) % 2 == 0 and not _deliberately_invalid(case, {"path", "header"}):
        headers["Authorization"] = f"Bearer {fuzz_key}"
        if case.path_parameters is not None:
            case.path_parameters["accountGroupId"] = FUZZ_ACCOUNT_GROUP
            case.path_parameters["campaignId"] = FUZZ_CAMPAIGN
    # Schema-valid bodies may still break rules JSON Schema cannot say (unique step ids, templates
    # that render): those are declared 400s, so "valid data must be accepted" does not apply.
    response = case.call_and_validate(headers=headers, excluded_checks=[positive_data_acceptance])
    assert response.status_code != 500, response.text
    if case.method.upper() == "HEAD":
        # GET's status and headers, never a body (RFC 9110 §9.3.2).
        assert response.content == b"", response.content
        return
    body = response.json()
    assert set(body) == {"success", "data", "error", "traceId"}, body
    assert body["success"] is (response.status_code < 400)


@schema.parametrize()
@settings(
    max_examples=5,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)
def test_fuzz_trailing_slashes_and_foreign_content_types(case: Case[Any], fuzz_key: str) -> None:
    """Every operation with a trailing slash is a 404 envelope (never a redirect); every body
    operation sent its generated body as `text/plain` is a 415 envelope (never a 400 or 500)."""
    headers = {"Authorization": f"Bearer {fuzz_key}"}
    if case.path_parameters is not None:
        case.path_parameters["accountGroupId"] = FUZZ_ACCOUNT_GROUP
        case.path_parameters["campaignId"] = FUZZ_CAMPAIGN
    slashed = case.call(headers=headers, url=f"{case.formatted_path}/", allow_redirects=False)
    assert slashed.status_code == 404, (case.formatted_path, slashed.status_code)
    if case.method.upper() != "HEAD":
        assert slashed.json()["error"]["code"] == "NOT_FOUND"
    declared = case.method.upper() == case.operation.method.upper()
    if declared and not isinstance(case.body, NotSet) and case.method.upper() in {"PUT", "POST"}:
        foreign = case.call(
            headers={**headers, "Content-Type": "text/plain"},
            # A generated body may be raw bytes already (negative cases): sent as they are.
            data=case.body if isinstance(case.body, bytes) else json.dumps(case.body),
        )
        assert foreign.status_code == 415, foreign.text
        assert foreign.json()["error"]["code"] == "UNSUPPORTED_MEDIA_TYPE"


async def test_cross_tenant_keys_never_reach_another_account_group(
    api: Api, worker: Worker
) -> None:
    tenant_b = await create_campaign(api)
    instance_b = await enrol_to_gate(api, tenant_b)
    tenant_a = await create_campaign(api)
    routes = [
        ("PUT", tenant_b.url, TWO_STEP_CAMPAIGN),
        ("GET", tenant_b.url, None),
        (
            "POST",
            f"{tenant_b.url}/workflow-instances",
            {"lead": {"id": new_object_id(), "email": "x@example.com"}},
        ),
        ("GET", tenant_b.instance_url(instance_b), None),
        ("POST", tenant_b.approve_url(instance_b), None),
    ]
    key_headers = [
        tenant_a.auth,
        {"X-API-Key": tenant_a.key.key},
        # Tenant A's key naming tenant A's group but B's campaign and instance: no such thing.
    ]
    answers: dict[tuple[str, str, str], int] = {}
    for (method, url, body), headers in itertools.product(routes, key_headers):
        response = await api.http.request(method, url, json=body, headers=headers)
        answers[(method, url, next(iter(headers)))] = response.status_code
        assert response.json()["success"] is False
    # A's group with B's campaign and instance ids: the workflow id does not exist in A.
    crossed = tenant_a.instance_url(instance_b).replace(tenant_a.campaign_id, tenant_b.campaign_id)
    for method, url in (("GET", crossed), ("POST", f"{crossed}/approve")):
        response = await api.http.request(method, url, headers=tenant_a.auth)
        answers[(method, url, "crossed ids")] = response.status_code

    assert all(status >= 400 for status in answers.values()), answers
    assert {status for key, status in answers.items() if key[2] != "crossed ids"} == {403}
    assert {status for key, status in answers.items() if key[2] == "crossed ids"} == {404}
    status_b = await api.http.get(tenant_b.instance_url(instance_b), headers=tenant_b.auth)
    assert status_b.json()["data"]["leadStatus"]["hasPendingApproval"] is True


async def test_put_campaign_with_bad_bodies_answers_declared_envelopes(
    api: Api, campaign: Campaign
) -> None:
    spec = (await api.http.get("/openapi.json")).json()["paths"]
    put_statuses = set(
        spec["/v1/accounts/{accountGroupId}/campaigns/{campaignId}"]["put"]["responses"]
    )
    approve_statuses = set(
        spec[
            "/v1/accounts/{accountGroupId}/campaigns/{campaignId}/workflow-instances/"
            "{workflowInstanceId}/approve"
        ]["post"]["responses"]
    )
    json_headers = {**campaign.auth, "Content-Type": "application/json"}
    huge = b'{"name": "' + b"x" * (MAX_REQUEST_BODY_BYTES + 1) + b'"}'

    answers = {
        "huge": await api.http.put(campaign.url, content=huge, headers=json_headers),
        "malformed": await api.http.put(campaign.url, content=b'{"name":', headers=json_headers),
        "text/plain": await api.http.put(
            campaign.url,
            content=b'{"name": "x"}',
            headers={**campaign.auth, "Content-Type": "text/plain"},
        ),
        "deeply nested": await api.http.put(
            campaign.url, content=b"[" * 50_000 + b"]" * 50_000, headers=json_headers
        ),
    }
    # The approve endpoint reads no body: a huge one changes nothing about its answer.
    approve_huge = await api.http.post(
        campaign.approve_url(new_object_id()), content=huge, headers=json_headers
    )

    assert {name: r.status_code for name, r in answers.items()} == {
        "huge": 413,
        "malformed": 400,
        "text/plain": 415,
        "deeply nested": 400,
    }
    for response in answers.values():
        assert str(response.status_code) in put_statuses
        assert response.json()["success"] is False
    assert answers["huge"].json()["error"]["code"] == "PAYLOAD_TOO_LARGE"
    assert answers["malformed"].json()["error"]["details"] == "body"
    assert approve_huge.status_code == 404, approve_huge.text
    assert "413" not in approve_statuses
