"""Workflow instances: one per enrolled lead; enrol, read their status, approve their gates."""

from __future__ import annotations

from fastapi import APIRouter, status

from api.campaigns import campaign_of, check_fits_temporal, snapshot_of
from api.content_type import JsonBodyRoute
from api.deps import (
    CampaignExecutor,
    InstanceExecutor,
    InstanceReader,
    InstancesDep,
    SettingsDep,
    StoreDep,
)
from api.errors import CampaignNotFound
from api.openapi import BODY_ERROR_RESPONSES, ERROR_RESPONSES
from api.schemas import (
    CampaignApprovalResult,
    CampaignApprovalResultSuccessResponse,
    Delivery,
    Enrolment,
    EnrolmentBody,
    EnrolmentSuccessResponse,
    LeadStatus,
    PendingContent,
    WorkflowInstance,
    WorkflowInstanceSuccessResponse,
)
from workflows.types import Lead

router = APIRouter(
    route_class=JsonBodyRoute,
    prefix="/v1/accounts/{accountGroupId}/campaigns/{campaignId}/workflow-instances",
    tags=["workflow instances"],
)


@router.post("", status_code=status.HTTP_201_CREATED, responses=BODY_ERROR_RESPONSES)
async def enrol_lead(
    body: EnrolmentBody,
    scope: CampaignExecutor,
    store: StoreDep,
    settings: SettingsDep,
    instances: InstancesDep,
) -> EnrolmentSuccessResponse:
    """Enrol a lead (`campaigns:execute`): start its workflow instance on a snapshot of the
    campaign; 409 `LEAD_ALREADY_ENROLLED` when it has one.

    The snapshot is the stored definition as the PUT accepted it: nothing is rendered here. Its
    size is checked again (a campaign stored before the limit existed is refused with 413 rather
    than sent to Temporal to be refused there).
    """
    record = await store.get_campaign(scope.account_group_id, scope.campaign_id)
    if record is None:
        raise CampaignNotFound()
    snapshot = snapshot_of(campaign_of(record))
    check_fits_temporal(snapshot, settings)
    lead = body.lead
    lead_status = await instances.enrol(
        scope.account_group_id,
        scope.campaign_id,
        Lead(
            id=lead.id,
            email=str(lead.email),
            first_name=lead.first_name,
            last_name=lead.last_name,
            company=lead.company,
        ),
        snapshot,
    )
    return EnrolmentSuccessResponse(
        data=Enrolment(
            workflow_instance_id=lead_status.workflow_instance_id,
            lead_status=LeadStatus.of(lead_status),
        )
    )


@router.get("/{workflowInstanceId}", responses=ERROR_RESPONSES)
async def get_workflow_instance(
    scope: InstanceReader, instances: InstancesDep
) -> WorkflowInstanceSuccessResponse:
    """Read a lead's workflow status, the content waiting at its gate, if any, and how its
    delivery goes (`campaigns:read`)."""
    lead_status = await instances.lead_status(scope.ref)
    delivery = await instances.delivery_progress(scope.ref, lead_status)
    return WorkflowInstanceSuccessResponse(
        data=WorkflowInstance(
            lead_status=LeadStatus.of(lead_status),
            pending_content=PendingContent.of(lead_status.pending_content),
            delivery=Delivery.of(delivery),
        )
    )


@router.post(
    "/{workflowInstanceId}/approve",
    responses=ERROR_RESPONSES,
    summary="Approve pending campaign content for a workflow instance",
)
async def approve_pending_campaign_content(
    scope: InstanceExecutor, instances: InstancesDep
) -> CampaignApprovalResultSuccessResponse:
    """Resolve the instance's pending approval gate and return its refreshed lead status
    (`campaigns:execute`; the reference page's contract: no body, not idempotent)."""
    lead_status = await instances.approve(scope.ref, decided_by=scope.principal.key_id)
    return CampaignApprovalResultSuccessResponse(
        data=CampaignApprovalResult(
            workflow_instance_id=scope.workflow_instance_id,
            lead_status=LeadStatus.of(lead_status),
        )
    )
