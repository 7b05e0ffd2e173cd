"""The OpenAPI document callers generate clients from: its names are part of the contract."""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Any

from api import create_app
from campaign_engine.settings import Settings

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
