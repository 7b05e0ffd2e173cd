"""The OpenAPI document callers generate clients from: its names are part of the contract."""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError
from temporalio.worker import Worker

from api import create_app, errors
from api import schemas as api_schemas
from api.openapi import example_of
from campaign_engine.settings import Settings
from tests.helpers import Api, approve, create_campaign, wait_for_status

ROOT = Path(__file__).resolve().parent.parent

OPERATION_IDS = {
    ("get", "/healthz"): "getHealth",
    ("head", "/healthz"): "headHealth",
    ("get", "/readyz"): "getReadiness",
    ("head", "/readyz"): "headReadiness",
    ("put", "/v1/accounts/{accountGroupId}/campaigns/{campaignId}"): "putCampaign",
    ("get", "/v1/accounts/{accountGroupId}/campaigns/{campaignId}"): "getCampaign",
    ("head", "/v1/accounts/{accountGroupId}/campaigns/{campaignId}"): "headCampaign",
    ("post", "/v1/accounts/{accountGroupId}/campaigns/{campaignId}/pause"): "pauseCampaign",
    ("post", "/v1/accounts/{accountGroupId}/inbound-messages"): "postInboundMessage",
    ("get", "/v1/accounts/{accountGroupId}/campaigns/{campaignId}/stats"): "getCampaignStats",
    ("head", "/v1/accounts/{accountGroupId}/campaigns/{campaignId}/stats"): "headCampaignStats",
    ("post", "/v1/accounts/{accountGroupId}/campaigns/{campaignId}/resume"): "resumeCampaign",
    ("post", "/v1/accounts/{accountGroupId}/campaigns/{campaignId}/workflow-instances"): (
        "enrolLead"
    ),
    ("post", "/v1/accounts/{accountGroupId}/campaigns/{campaignId}/workflow-instances/batch"): (
        "enrolLeads"
    ),
    ("get", "/v1/accounts/{accountGroupId}/campaigns/{campaignId}/workflow-instances"): (
        "listWorkflowInstances"
    ),
    ("head", "/v1/accounts/{accountGroupId}/campaigns/{campaignId}/workflow-instances"): (
        "listWorkflowInstancesHead"
    ),
    (
        "get",
        "/v1/accounts/{accountGroupId}/campaigns/{campaignId}/workflow-instances/"
        "{workflowInstanceId}",
    ): "getWorkflowInstance",
    (
        "head",
        "/v1/accounts/{accountGroupId}/campaigns/{campaignId}/workflow-instances/"
        "{workflowInstanceId}",
    ): "headWorkflowInstance",
    (
        "post",
        "/v1/accounts/{accountGroupId}/campaigns/{campaignId}/workflow-instances/"
        "{workflowInstanceId}/approve",
    ): "approvePendingCampaignContent",
    ("post", "/v1/accounts/{accountGroupId}/suppressions"): "addSuppression",
}


def document() -> dict[str, Any]:
    schema: dict[str, Any] = create_app(Settings()).openapi()
    return schema


def test_operation_ids_are_short_stable_and_unique() -> None:
    # A change here breaks every generated client: make it on purpose, with a changelog entry.
    ids = {
        (method, path): operation["operationId"]
        for path, operations in document()["paths"].items()
        for method, operation in operations.items()
    }

    assert ids == OPERATION_IDS
    assert len(set(ids.values())) == len(ids)


def test_the_reference_page_schema_names_and_no_body_suffix_on_outputs() -> None:
    schemas = document()["components"]["schemas"]
    approve = document()["paths"][
        "/v1/accounts/{accountGroupId}/campaigns/{campaignId}/workflow-instances/"
        "{workflowInstanceId}/approve"
    ]["post"]["responses"]

    assert {
        "CampaignApprovalResultSuccessResponse",
        "ErrorResponse",
        "ValidationErrorResponse",
    } <= (set(schemas))
    assert approve["200"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "/CampaignApprovalResultSuccessResponse"
    )
    # `…Body` names what a caller sends; nothing a response holds is called so.
    response_refs = {
        ref.rsplit("/", 1)[1]
        for ref in re.findall(r'"\$ref": "([^"]+)"', str(document()["paths"]).replace("'", '"'))
    }
    outputs = {name for name in response_refs if name.endswith("Response")}
    for name in outputs:
        assert not any(
            prop.get("$ref", "").endswith("Body") and key != "error"
            for key, prop in schemas[name].get("properties", {}).items()
        ), name
    assert "LeadStatus" in schemas and "LeadStatusBody" not in schemas


def test_no_error_code_is_spelled_outside_the_error_module() -> None:
    # Codes live on the named error classes of api/errors.py; raise sites name the class.
    codes = set(re.findall(r'code = "([A-Z_]+)"', (ROOT / "api/errors.py").read_text()))
    assert "NO_PENDING_APPROVAL" in codes
    spelled: dict[str, list[str]] = {}
    for package in ("api", "activities", "worker", "entrypoints", "campaign_engine"):
        for path in (ROOT / package).rglob("*.py"):
            if path == ROOT / "api/errors.py":
                continue
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Constant) and node.value in codes:
                    spelled.setdefault(str(path.relative_to(ROOT)), []).append(str(node.value))
    # The envelope schema's own literal and example are the reference page's, not raise sites.
    assert {path: sorted(found) for path, found in spelled.items()} == {
        "api/schemas.py": ["NO_PENDING_APPROVAL", "VALIDATION_ERROR", "VALIDATION_ERROR"]
    }


def test_conditional_approval_is_documented() -> None:
    paths = document()["paths"]
    instance = "/v1/accounts/{accountGroupId}/campaigns/{campaignId}/workflow-instances/"
    approve = paths[instance + "{workflowInstanceId}/approve"]["post"]
    [if_match] = [p for p in approve["parameters"] if p["in"] == "header"]
    assert if_match["name"] == "If-Match" and "13.1.1" in if_match["description"]
    assert "ETag" in approve["responses"]["200"]["headers"]
    assert "GATE_CHANGED" in approve["responses"]["409"]["description"]
    assert "requestBody" not in approve
    assert approve["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "/CampaignApprovalResultSuccessResponse"
    )
    get = paths[instance + "{workflowInstanceId}"]["get"]
    assert "ETag" in get["responses"]["200"]["headers"]


# --- an OpenAPI that explains itself --------------------------------------------------------------

ERROR_CODE_LINE = re.compile(r"^- `([A-Z_]+)`: \S", re.MULTILINE)


def _refers(prop: dict[str, Any]) -> bool:
    """A property whose type is another component schema (directly, nullable, or as a list's
    items): its example is that schema's, made of its own fields' examples."""
    if "$ref" in prop:
        return True
    for key in ("anyOf", "oneOf", "allOf"):
        if any(_refers(branch) for branch in prop.get(key, []) if branch.get("type") != "null"):
            return True
    return "items" in prop and _refers(prop["items"])


def undocumented(doc: dict[str, Any]) -> list[str]:
    """Every gap in `doc`: an operation without a summary of its own (FastAPI's default is the
    function's name in title case), a description, or a permission; a parameter or a response
    header without a description or an example; a response without a
    description of its own (FastAPI's default is "Successful Response"), an error response that
    names no error code; a schema without a description or an example; a field without a
    description or an example."""
    codes = {
        kind.code
        for kind in vars(errors).values()
        if isinstance(kind, type) and issubclass(kind, errors.ApiError)
    }
    gaps: list[str] = []
    for path, operations in doc["paths"].items():
        for method, operation in operations.items():
            where = f"{method.upper()} {path}"
            summary = operation.get("summary", "")
            default = re.sub(r"(?<!^)([A-Z])", r" \1", operation["operationId"]).title()
            if not summary or summary.title() == default:
                gaps.append(f"{where}: no summary of its own ({summary!r})")
            description = operation.get("description", "")
            if len(description) < 40:
                gaps.append(f"{where}: no description")
            if "**Required API permission:**" not in description:
                gaps.append(f"{where}: the description does not say the permission")
            if path.startswith("/v1/") and "x-required-permission" not in operation:
                gaps.append(f"{where}: no x-required-permission")
            for parameter in operation.get("parameters", []):
                name = f"{where} parameter {parameter['name']}"
                if not parameter.get("description"):
                    gaps.append(f"{name}: no description")
                schema = parameter.get("schema", {})
                if not {"example", "examples"} & (set(parameter) | set(schema)):
                    gaps.append(f"{name}: no example")
            for status, response in operation["responses"].items():
                if response.get("description", "Successful Response") == "Successful Response":
                    gaps.append(f"{where} {status}: no description")
                for header, declared in response.get("headers", {}).items():
                    if not declared.get("description") or "example" not in declared:
                        gaps.append(f"{where} {status} header {header}: no description or example")
                if status.startswith(("4", "5")):
                    named = ERROR_CODE_LINE.findall(response.get("description", ""))
                    if not named:
                        gaps.append(f"{where} {status}: names no error code and when")
                    gaps.extend(
                        f"{where} {status}: `{code}` is no code of api/errors.py"
                        for code in named
                        if code not in codes
                    )
    for name, schema in doc["components"]["schemas"].items():
        if not schema.get("description"):
            gaps.append(f"schema {name}: no description")
        if not schema.get("examples"):
            gaps.append(f"schema {name}: no example")
        for field, prop in schema.get("properties", {}).items():
            if not prop.get("description"):
                gaps.append(f"schema {name}.{field}: no description")
            if "examples" not in prop and "example" not in prop and not _refers(prop):
                gaps.append(f"schema {name}.{field}: no example")
    return gaps


def test_every_operation_schema_and_field_is_described() -> None:
    assert undocumented(document()) == []


def test_a_missing_summary_description_or_example_is_found() -> None:
    # The walk above must be able to fail: take one of each away from a real document.
    doc = document()
    approve = doc["paths"][
        "/v1/accounts/{accountGroupId}/campaigns/{campaignId}/workflow-instances/"
        "{workflowInstanceId}/approve"
    ]["post"]
    approve["summary"] = "Approve Pending Campaign Content"
    del approve["responses"]["409"]["description"]
    campaign_get = doc["paths"]["/v1/accounts/{accountGroupId}/campaigns/{campaignId}"]["get"]
    campaign_get["description"] = ""
    schemas = doc["components"]["schemas"]
    del schemas["LeadBody"]["properties"]["email"]["examples"]
    del schemas["LeadStatus"]["properties"]["leadId"]["description"]
    del schemas["Delivery"]["description"]
    del schemas["Delivery"]["examples"]
    del approve["parameters"][0]["schema"]["examples"]

    assert sorted(undocumented(doc)) == sorted(
        [
            "POST /v1/accounts/{accountGroupId}/campaigns/{campaignId}/workflow-instances/"
            "{workflowInstanceId}/approve: no summary of its own "
            "('Approve Pending Campaign Content')",
            "POST /v1/accounts/{accountGroupId}/campaigns/{campaignId}/workflow-instances/"
            "{workflowInstanceId}/approve 409: no description",
            "POST /v1/accounts/{accountGroupId}/campaigns/{campaignId}/workflow-instances/"
            "{workflowInstanceId}/approve 409: names no error code and when",
            "GET /v1/accounts/{accountGroupId}/campaigns/{campaignId}: no description",
            "GET /v1/accounts/{accountGroupId}/campaigns/{campaignId}: the description does "
            "not say the permission",
            "schema Delivery: no description",
            "schema Delivery: no example",
            "POST /v1/accounts/{accountGroupId}/campaigns/{campaignId}/workflow-instances/"
            "{workflowInstanceId}/approve parameter accountGroupId: no example",
            "schema LeadBody.email: no example",
            "schema LeadStatus.leadId: no description",
        ]
    )


def _example(doc: dict[str, Any], schema: dict[str, Any]) -> Any:
    """The example a reader sees: a field's own, or composed from the schema it refers to."""
    return example_of(doc, schema)


def _shape(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _shape(item) for key, item in value.items()}
    return type(value).__name__ if value is not None else None


def test_the_approve_examples_have_the_reference_pages_shape() -> None:
    # The reference page's 200 and error examples, their fields and value types; its nullable
    # strings (`latestStep`, `workflowStopReason`, `details`) may be null or a string.
    doc = document()
    schemas = doc["components"]["schemas"]
    success = _example(doc, schemas["CampaignApprovalResultSuccessResponse"])
    error = _example(doc, schemas["ErrorResponse"])
    validation = _example(doc, schemas["ValidationErrorResponse"])

    lead_status = {
        "leadId": "str",
        "workflowStatus": "str",
        "workflowInstanceId": "str",
        "latestStep": "str",
        "workflowStopReason": None,
        "hasPendingApproval": "bool",
    }
    assert _shape(success) == {
        "success": "bool",
        "data": {"action": "str", "workflowInstanceId": "str", "leadStatus": lead_status},
        "error": None,
        "traceId": "str",
    }
    assert success["success"] is True and success["data"]["action"] == "approved"
    assert success["data"]["workflowInstanceId"] == "507f1f77bcf86cd799439011"
    envelope = {
        "success": "bool",
        "data": None,
        "error": {"code": "str", "message": "str", "details": "str"},
        "traceId": "str",
    }
    assert _shape(error) == _shape(validation) == envelope
    assert error["success"] is False and validation["error"]["code"] == "VALIDATION_ERROR"
    statuses = doc["paths"][
        "/v1/accounts/{accountGroupId}/campaigns/{campaignId}/workflow-instances/"
        "{workflowInstanceId}/approve"
    ]["post"]["responses"]
    titles = {
        "200": "Pending campaign content approved and workflow status refreshed",
        "400": "Request validation failed",
        "401": "Invalid or missing API key",
        "403": "Missing required permission",
        "404": "Resource not found",
        "409": "Conflict — resource is in a state that prevents this operation",
        "429": "Rate limit exceeded",
        "500": "Internal server error",
        "502": "Upstream service error",
    }
    assert {status: r["description"].split(".\n")[0] for status, r in statuses.items()} == titles
    assert {
        status: r["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]
        for status, r in statuses.items()
    } == {
        "200": "CampaignApprovalResultSuccessResponse",
        "400": "ValidationErrorResponse",
        **{s: "ErrorResponse" for s in ("401", "403", "404", "409", "429", "500", "502")},
    }
    approve = doc["paths"][
        "/v1/accounts/{accountGroupId}/campaigns/{campaignId}/workflow-instances/"
        "{workflowInstanceId}/approve"
    ]["post"]
    assert approve["x-required-permission"] == "campaigns:execute"


def test_every_schemas_example_is_valid_for_its_model() -> None:
    # What a reader copies from the document must be accepted: each schema's example, as a
    # reader sees it (its fields' first examples), read back through its own model.
    doc = document()
    checked = []
    for name, schema in doc["components"]["schemas"].items():
        model = getattr(api_schemas, name, None)
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            continue
        example = _example(doc, schema)
        try:
            model.model_validate(example)
        except ValidationError as error:
            raise AssertionError(f"{name}: {example}\n{error}") from error
        checked.append(name)
    assert {"CampaignBody", "LeadBody", "CampaignApprovalResultSuccessResponse"} <= set(checked)


async def test_the_documented_request_examples_run(api: Api, worker: Worker) -> None:
    # A reader who sends the document's examples as they are gets what the document promises:
    # the campaign is stored, the lead enrolled and approved, the batch and the suppression
    # answered. The ids are the reference page's example id, in a fresh account group.
    doc = document()
    schemas = doc["components"]["schemas"]
    campaign = await create_campaign(api)
    put = await api.http.put(
        campaign.url, json=_example(doc, schemas["CampaignBody"]), headers=campaign.auth
    )
    assert put.status_code == 200, put.text
    enrolment = _example(doc, schemas["EnrolmentBody"])
    enrolled = await api.http.post(
        f"{campaign.url}/workflow-instances", json=enrolment, headers=campaign.auth
    )
    assert enrolled.status_code == 201, enrolled.text
    instance_id = enrolled.json()["data"]["workflowInstanceId"]
    await wait_for_status(api, campaign, instance_id, within=15.0, hasPendingApproval=True)
    approved = await approve(api, campaign, instance_id)
    assert approved.status_code == 200, approved.text
    answer = approved.json()
    assert set(answer) == set(schemas["CampaignApprovalResultSuccessResponse"]["properties"])
    assert set(answer["data"]) == set(schemas["CampaignApprovalResult"]["properties"])
    assert set(answer["data"]["leadStatus"]) == set(schemas["LeadStatus"]["properties"])
    batch = await api.http.post(
        f"{campaign.url}/workflow-instances/batch",
        json=_example(doc, schemas["EnrolmentBatchBody"]),
        headers=campaign.auth,
    )
    assert batch.status_code == 200, batch.text
    assert [row["outcome"] for row in batch.json()["data"]["results"]] == [
        "already_enrolled",
        "enrolled",
    ]
    suppressed = await api.http.post(
        f"/v1/accounts/{campaign.account_group_id}/suppressions",
        json=_example(doc, schemas["SuppressionBody"]),
        headers=campaign.auth,
    )
    assert suppressed.status_code == 201, suppressed.text
