"""Workflow instances: one per enrolled lead; read their status and approve their gates."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request, status

from api.content_type import JsonBodyRoute
from api.deps import CampaignScope, InstanceScope, StoreDep, campaign_scope, instance_scope
from api.errors import BODY_ERROR_RESPONSES, ERROR_RESPONSES, NotFound
from api.instances import WorkflowInstances, workflow_instance_id_for
from api.routes.campaigns import campaign_of, check_fits_temporal, snapshot_of
from api.schemas import (
    CampaignApprovalResult,
    CampaignApprovalResultSuccessResponse,
    Delivery,
    Enrollment,
    EnrollmentBody,
    EnrollmentSuccessResponse,
    LeadStatusBody,
    PendingContent,
    WorkflowInstance,
    WorkflowInstanceSuccessResponse,
)
from campaign_engine.keys import Permission
from workflows.types import CampaignInput, Lead, workflow_id_for

router = APIRouter(
    route_class=JsonBodyRoute,
    prefix="/v1/accounts/{accountGroupId}/campaigns/{campaignId}/workflow-instances",
    tags=["workflow instances"],
)


def get_instances(request: Request) -> WorkflowInstances:
    instances: WorkflowInstances = request.app.state.instances
    return instances


InstancesDep = Annotated[WorkflowInstances, Depends(get_instances)]


def _workflow_id(scope: InstanceScope) -> str:
    return workflow_id_for(scope.account_group_id, scope.campaign_id, scope.workflow_instance_id)


@router.post("", status_code=status.HTTP_201_CREATED, responses=BODY_ERROR_RESPONSES)
async def enroll_lead(
    body: EnrollmentBody,
    scope: Annotated[CampaignScope, Depends(campaign_scope(Permission.CAMPAIGNS_EXECUTE))],
    store: StoreDep,
    instances: InstancesDep,
    request: Request,
) -> EnrollmentSuccessResponse:
    """Enrol a lead: start its workflow instance on a snapshot of the campaign.

    The snapshot is the stored definition as the PUT accepted it: nothing is rendered here. Its
    size is checked again (a campaign stored before the limit existed is refused with 413 rather
    than sent to Temporal to be refused there).
    """
    record = await store.get_campaign(scope.account_group_id, scope.campaign_id)
    if record is None:
        raise NotFound("No such campaign", code="CAMPAIGN_NOT_FOUND")
    snapshot = snapshot_of(campaign_of(record))
    check_fits_temporal(snapshot, request.app.state.settings)
    lead = body.lead
    workflow_instance_id = workflow_instance_id_for(
        scope.account_group_id, scope.campaign_id, lead.id
    )
    lead_status = await instances.enroll(
        CampaignInput(
            account_group_id=scope.account_group_id,
            campaign_id=scope.campaign_id,
            workflow_instance_id=workflow_instance_id,
            lead=Lead(
                id=lead.id,
                email=str(lead.email),
                first_name=lead.first_name,
                last_name=lead.last_name,
                company=lead.company,
            ),
            campaign=snapshot,
        )
    )
    return EnrollmentSuccessResponse(
        data=Enrollment(
            workflow_instance_id=workflow_instance_id, lead_status=LeadStatusBody.of(lead_status)
        )
    )


@router.get("/{workflowInstanceId}", responses=ERROR_RESPONSES)
async def get_workflow_instance(
    scope: Annotated[InstanceScope, Depends(instance_scope(Permission.CAMPAIGNS_READ))],
    instances: InstancesDep,
) -> WorkflowInstanceSuccessResponse:
    """Read a lead's workflow status and the content waiting at its gate, if any."""
    lead_status = await instances.lead_status(_workflow_id(scope))
    delivery = await instances.delivery_progress(_workflow_id(scope), lead_status)
    return WorkflowInstanceSuccessResponse(
        data=WorkflowInstance(
            lead_status=LeadStatusBody.of(lead_status),
            pending_content=PendingContent.of(lead_status.pending_content),
            delivery=Delivery.of(delivery),
        )
    )


@router.post(
    "/{workflowInstanceId}/approve",
    responses=ERROR_RESPONSES,
    summary="Approve pending campaign content for a workflow instance",
)
async def approve_pending_content(
    scope: Annotated[InstanceScope, Depends(instance_scope(Permission.CAMPAIGNS_EXECUTE))],
    instances: InstancesDep,
) -> CampaignApprovalResultSuccessResponse:
    """Resolve the instance's pending approval gate and return its refreshed lead status."""
    lead_status = await instances.approve(_workflow_id(scope), approved_by=scope.principal.key_id)
    return CampaignApprovalResultSuccessResponse(
        data=CampaignApprovalResult(
            workflow_instance_id=scope.workflow_instance_id,
            lead_status=LeadStatusBody.of(lead_status),
        )
    )
