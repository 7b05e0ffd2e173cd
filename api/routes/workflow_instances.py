"""Workflow instances: one per enrolled lead; enrol, read their status, approve their gates."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Query, Request, Response, status

from api.campaigns import campaign_of, check_fits_temporal, check_sender, snapshot_of
from api.conditional import etag_of, parse_if_match
from api.content_type import JsonBodyRoute
from api.deps import (
    CampaignExecutor,
    CampaignReader,
    InstanceExecutor,
    InstanceReader,
    InstancesDep,
    PageTokensDep,
    SettingsDep,
    StoreDep,
    UnsubscribeKeyDep,
)
from api.errors import CampaignNotFound, LeadSuppressed, WorkflowInstanceNotFound
from api.openapi import (
    APPROVE_RESPONSES,
    BODY_ERROR_RESPONSES,
    ERROR_RESPONSES,
    INSTANCE_RESPONSES,
)
from api.review_queue import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, QueueFilters, page_of
from api.schemas import (
    Approval,
    CampaignApprovalResult,
    CampaignApprovalResultSuccessResponse,
    Delivery,
    Enrolment,
    EnrolmentBody,
    EnrolmentSuccessResponse,
    InboundMessage,
    InstanceFailure,
    LastDelivery,
    LeadStatus,
    NextStep,
    PendingContent,
    ReviewQueue,
    ReviewQueueItem,
    ReviewQueueSuccessResponse,
    WorkflowInstance,
    WorkflowInstanceSuccessResponse,
)
from campaign_engine import unsubscribe
from campaign_engine.addresses import InvalidAddress
from campaign_engine.enrolments import Enrolments
from campaign_engine.ids import OBJECT_ID_PATTERN, InstanceRef
from workflows.types import Lead, WorkflowStatus

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
    unsubscribe_key: UnsubscribeKeyDep,
) -> EnrolmentSuccessResponse:
    """Enrol a lead (`campaigns:execute`): start its workflow instance on a snapshot of the
    campaign; 409 `LEAD_ALREADY_ENROLLED` when it has one, 409 `LEAD_SUPPRESSED` when the lead
    (its id or its address) unsubscribed from the account group.

    The snapshot is the stored definition as the PUT accepted it: nothing is rendered here. Its
    size is checked again (a campaign stored before the limit existed is refused with 413 rather
    than sent to Temporal to be refused there), and so is its `from` (400 naming `from`: a
    campaign stored before mailboxes had account groups, or whose mailbox changed hands since,
    would start an instance whose delivery is refused).
    """
    record = await store.get_campaign(scope.account_group_id, scope.campaign_id)
    if record is None:
        raise CampaignNotFound()
    campaign = campaign_of(record)
    check_sender(campaign, settings, scope.account_group_id)
    snapshot = snapshot_of(campaign)
    check_fits_temporal(snapshot, settings)
    lead = body.lead
    email_hash = unsubscribe.email_hash(unsubscribe_key, str(lead.email))
    suppressed_by = await store.suppression_source(scope.account_group_id, lead.id, email_hash)
    if suppressed_by is not None:
        raise LeadSuppressed(suppressed_by)
    try:
        mailbox: str | None = settings.sending_address(snapshot.mailbox)
    except InvalidAddress:
        mailbox = None  # a campaign stored before `from` was checked: delivery will say so
    # Before the start: an instance whose row is missing would be unknown to inbound matching
    # by address; a row whose start then fails names no instance and matches nothing.
    await Enrolments(store).record(
        account_group_id=scope.account_group_id,
        campaign_id=scope.campaign_id,
        lead_id=lead.id,
        workflow_instance_id=InstanceRef.of_lead(
            scope.account_group_id, scope.campaign_id, lead.id
        ).workflow_instance_id,
        email_hash=email_hash,
        domain_hash=unsubscribe.domain_hash(unsubscribe_key, str(lead.email)),
        mailbox=mailbox,
    )
    lead_status = await instances.enrol(
        scope.account_group_id,
        scope.campaign_id,
        Lead(
            id=lead.id,
            email=str(lead.email),
            first_name=lead.first_name,
            last_name=lead.last_name,
            company=lead.company,
            time_zone=lead.time_zone,
        ),
        snapshot,
    )
    return EnrolmentSuccessResponse(
        data=Enrolment(
            workflow_instance_id=lead_status.workflow_instance_id,
            lead_status=LeadStatus.of(lead_status),
        )
    )


@router.get("", responses=ERROR_RESPONSES)
async def list_workflow_instances(
    scope: CampaignReader,
    instances: InstancesDep,
    page_tokens: PageTokensDep,
    has_pending_approval: Annotated[
        bool | None,
        Query(
            alias="hasPendingApproval", description="Only instances with (without) an open gate."
        ),
    ] = None,
    workflow_status: Annotated[
        WorkflowStatus | None, Query(alias="workflowStatus", description="Only this status.")
    ] = None,
    lead_id: Annotated[
        str | None,
        Query(alias="leadId", pattern=OBJECT_ID_PATTERN, description="Only this lead's instance."),
    ] = None,
    page_size: Annotated[
        int, Query(alias="pageSize", ge=1, le=MAX_PAGE_SIZE, description="Items per page.")
    ] = DEFAULT_PAGE_SIZE,
    page_token: Annotated[
        str | None,
        Query(
            alias="pageToken",
            max_length=4000,
            description="`nextPageToken` of the previous page (opaque); 400 `pageToken` for any "
            "other value.",
        ),
    ] = None,
) -> ReviewQueueSuccessResponse:
    """The review queue (`campaigns:read`): the campaign's instances, newest gate first, from
    Temporal's visibility store (ids, states and times only; it trails the instances by up to
    about a second — the instance GET is the authority). Filters combine (AND); a campaign of
    another account group is simply empty."""
    filters = QueueFilters(has_pending_approval, workflow_status, lead_id)
    query, items = await instances.review_queue(scope.account_group_id, scope.campaign_id, filters)
    after = page_tokens.read(query, page_token) if page_token is not None else None
    page, last = page_of(items, after, page_size)
    return ReviewQueueSuccessResponse(
        data=ReviewQueue(
            items=[
                ReviewQueueItem(
                    workflow_instance_id=item.workflow_instance_id,
                    lead_id=item.lead_id,
                    workflow_status=item.workflow_status,
                    latest_step=item.latest_step,
                    has_pending_approval=item.has_pending_approval,
                    gate_id=item.gate_id,
                    gate_opened_at=item.gate_opened_at,
                    gate_expires_at=item.gate_expires_at,
                )
                for item in page
            ],
            next_page_token=page_tokens.issue(query, last) if last is not None else None,
        )
    )


@router.get("/{workflowInstanceId}", responses=INSTANCE_RESPONSES)
async def get_workflow_instance(
    scope: InstanceReader, instances: InstancesDep, store: StoreDep, response: Response
) -> WorkflowInstanceSuccessResponse:
    """Read a lead's workflow status, the content waiting at its gate, if any, its gate
    decisions, and how its delivery goes (`campaigns:read`).

    While a gate is open the answer carries `ETag: "<gateId>"` (strong, RFC 9110 §8.8.3), the
    tag to send back as `If-Match` to approve exactly this gate.
    """
    try:
        lead_status, description = await instances.read(scope.ref)
        delivery = await instances.delivery_progress(scope.ref, lead_status, description)
    except WorkflowInstanceNotFound as error:
        raise await instances.why_not_found(scope.ref, store) from error
    if lead_status.gate_id is not None and lead_status.pending_content is not None:
        response.headers["ETag"] = etag_of(lead_status.gate_id)
    return WorkflowInstanceSuccessResponse(
        data=WorkflowInstance(
            lead_status=LeadStatus.of(lead_status),
            pending_content=PendingContent.of(lead_status.pending_content, lead_status.gate_id),
            approvals=[Approval.of(decision) for decision in lead_status.gate_decisions],
            delivery=Delivery.of(delivery),
            inbound_messages=[InboundMessage.of(r) for r in lead_status.inbound_messages],
            last_delivery=LastDelivery.of(lead_status.deliveries),
            next_step=NextStep.of(lead_status.next_step),
            failure=InstanceFailure.of(lead_status.failure),
        )
    )


@router.post(
    "/{workflowInstanceId}/approve",
    responses=APPROVE_RESPONSES,
    summary="Approve pending campaign content for a workflow instance",
)
async def approve_pending_campaign_content(
    scope: InstanceExecutor,
    instances: InstancesDep,
    store: StoreDep,
    request: Request,
    response: Response,
    if_match: Annotated[
        str | None,
        Header(
            alias="If-Match",
            description='Approve only this gate: the `ETag` of the instance GET (`"<gateId>"`), '
            "or `*` for any open gate (RFC 9110 §13.1.1, strong comparison: a weak `W/` tag "
            "never matches). When the open gate is not one named, nothing is applied: 409 "
            "`NO_PENDING_APPROVAL`, `details: GATE_CHANGED`. Without it, whatever gate is "
            "open is approved.",
        ),
    ] = None,
) -> CampaignApprovalResultSuccessResponse:
    """Resolve the instance's pending approval gate and return its refreshed lead status
    (`campaigns:execute`; the reference page's contract: no body, not idempotent). The 200
    carries the approved gate's `ETag`."""
    try:
        lead_status, gate_id = await instances.approve(
            scope.ref,
            decided_by=scope.principal.key_id,
            if_match=parse_if_match(request.headers.getlist("if-match")),
        )
    except WorkflowInstanceNotFound as error:
        raise await instances.why_not_found(scope.ref, store) from error
    if gate_id is not None:
        response.headers["ETag"] = etag_of(gate_id)
    return CampaignApprovalResultSuccessResponse(
        data=CampaignApprovalResult(
            workflow_instance_id=scope.workflow_instance_id,
            lead_status=LeadStatus.of(lead_status),
        )
    )
