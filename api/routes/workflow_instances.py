"""Workflow instances: one per enrolled lead; enrol, read their status, approve their gates."""

from __future__ import annotations

from dataclasses import asdict
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
from api.enrolment import enrolment_row, sending_mailbox, start_instance
from api.errors import (
    MAY_HAVE_BEEN_RECORDED,
    ApprovalUnconfirmed,
    CampaignNotFound,
    CampaignTooLarge,
    LeadAlreadyEnrolled,
    LeadSuppressed,
    NoPendingApproval,
    TemporalPayloadTooLarge,
    TemporalUnavailable,
    ValidationFailed,
    WorkflowInstanceNotFound,
)
from api.openapi import (
    APPROVED_ETAG_HEADER,
    AUTHENTICATED,
    ETAG_HEADER,
    JSON_BODY,
    TEMPORAL,
    Raises,
    error_responses,
)
from api.review_queue import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, QueueFilters, page_of
from api.schemas import (
    EXAMPLE_GATE_ID,
    EXAMPLE_ID,
    EXAMPLE_PAGE_TOKEN,
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
from campaign_engine.enrolments import Enrolments
from campaign_engine.ids import OBJECT_ID_PATTERN
from workflows.types import WorkflowStatus

router = APIRouter(
    route_class=JsonBodyRoute,
    prefix="/v1/accounts/{accountGroupId}/campaigns/{campaignId}/workflow-instances",
    tags=["workflow instances"],
)


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    summary="Enrol a lead in a campaign",
    responses={
        201: {"description": "The lead's instance started; `data` is its id and status."},
        **error_responses(
            *AUTHENTICATED,
            *JSON_BODY,
            Raises(
                ValidationFailed,
                "The campaign's `from` is no longer a mailbox this account group may send from "
                "(`details`: `from`; PUT the campaign again with another), or Temporal refused "
                "the start as invalid.",
            ),
            Raises(CampaignNotFound, "No campaign with this id in this account group."),
            LeadAlreadyEnrolled,
            LeadSuppressed,
            Raises(
                CampaignTooLarge,
                "The stored campaign would not fit under Temporal's payload size limit (one "
                "stored before the limit was checked); PUT a shorter one.",
            ),
            TemporalPayloadTooLarge,
            *TEMPORAL,
        ),
    },
)
async def enrol_lead(
    body: EnrolmentBody,
    scope: CampaignExecutor,
    store: StoreDep,
    settings: SettingsDep,
    instances: InstancesDep,
    unsubscribe_key: UnsubscribeKeyDep,
) -> EnrolmentSuccessResponse:
    """Starts the lead's workflow instance on a snapshot of the campaign: it drafts the first
    step and, when the step requires approval, waits at its gate (`hasPendingApproval`). The
    instance id is derived from the account group, campaign and lead, so a lead is enrolled in a
    campaign once; a lead that unsubscribed from the account group (its id or its address) is
    never enrolled again.

    The snapshot is the stored definition as the PUT accepted it: nothing is rendered here.
    """
    record = await store.get_campaign(scope.account_group_id, scope.campaign_id)
    if record is None:
        raise CampaignNotFound()
    campaign = campaign_of(record)
    # Checked again, as at PUT: a campaign stored before mailboxes had account groups, or whose
    # mailbox changed hands since, would start an instance whose delivery is refused; one stored
    # before the size limit existed is refused here (413) rather than by Temporal.
    check_sender(campaign, settings, scope.account_group_id)
    snapshot = snapshot_of(campaign)
    check_fits_temporal(snapshot, settings)
    lead = body.lead
    email_hash = unsubscribe.email_hash(unsubscribe_key, lead.email)
    suppressed_by = await store.suppression_source(scope.account_group_id, lead.id, email_hash)
    if suppressed_by is not None:
        raise LeadSuppressed(suppressed_by)
    row = enrolment_row(
        scope,
        lead,
        email_hash=email_hash,
        unsubscribe_key=unsubscribe_key,
        mailbox=sending_mailbox(settings, snapshot),
    )
    # Before the start: an instance whose row is missing would be unknown to inbound matching
    # by address; a row whose start then fails names no instance and matches nothing.
    await Enrolments(store).record(
        account_group_id=scope.account_group_id, campaign_id=scope.campaign_id, **asdict(row)
    )
    lead_status = await start_instance(instances, scope, lead, snapshot)
    return EnrolmentSuccessResponse(
        data=Enrolment(
            workflow_instance_id=lead_status.workflow_instance_id,
            lead_status=LeadStatus.of(lead_status),
        )
    )


@router.get(
    "",
    summary="List the review queue",
    response_description="One page of the campaign's instances, newest gate first.",
    responses=error_responses(
        *AUTHENTICATED,
        Raises(
            ValidationFailed,
            "A query parameter is invalid (`details`: `pageSize`, `leadId`, "
            "`workflowStatus`, `hasPendingApproval`), or `pageToken` is not the "
            "`nextPageToken` of this query.",
        ),
        *TEMPORAL,
    ),
)
async def list_workflow_instances(
    scope: CampaignReader,
    instances: InstancesDep,
    page_tokens: PageTokensDep,
    has_pending_approval: Annotated[
        bool | None,
        Query(
            alias="hasPendingApproval",
            description="Only instances with (without) an open gate.",
            examples=[True],
        ),
    ] = None,
    workflow_status: Annotated[
        WorkflowStatus | None,
        Query(alias="workflowStatus", description="Only this status.", examples=["pending"]),
    ] = None,
    lead_id: Annotated[
        str | None,
        Query(
            alias="leadId",
            pattern=OBJECT_ID_PATTERN,
            description="Only this lead's instance.",
            examples=[EXAMPLE_ID],
        ),
    ] = None,
    page_size: Annotated[
        int,
        Query(
            alias="pageSize",
            ge=1,
            le=MAX_PAGE_SIZE,
            description="Items per page.",
            examples=[DEFAULT_PAGE_SIZE],
        ),
    ] = DEFAULT_PAGE_SIZE,
    page_token: Annotated[
        str | None,
        Query(
            alias="pageToken",
            max_length=4000,
            description="`nextPageToken` of the previous page (opaque); 400 `pageToken` for any "
            "other value.",
            examples=[EXAMPLE_PAGE_TOKEN],
        ),
    ] = None,
) -> ReviewQueueSuccessResponse:
    """Lists the campaign's instances, newest gate first, from
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


@router.get(
    "/{workflowInstanceId}",
    summary="Read a workflow instance",
    responses={
        200: {"description": "The instance's state.", "headers": ETAG_HEADER},
        **error_responses(*AUTHENTICATED, WorkflowInstanceNotFound, *TEMPORAL),
    },
)
async def get_workflow_instance(
    scope: InstanceReader, instances: InstancesDep, store: StoreDep, response: Response
) -> WorkflowInstanceSuccessResponse:
    """Returns the lead's workflow status, the content waiting at its gate, if any, its gate
    decisions, how its delivery goes, and the inbound messages matched to the lead.

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
    summary="Approve pending campaign content for a workflow instance",
    responses={
        200: {
            "description": "Pending campaign content approved and workflow status refreshed",
            "headers": APPROVED_ETAG_HEADER,
        },
        **error_responses(
            *AUTHENTICATED,
            WorkflowInstanceNotFound,
            Raises(
                NoPendingApproval,
                "The approval changed nothing; `details` says why: `ALREADY_APPROVED` "
                "(another approval of the same gate was applied first), `NO_GATE_OPEN` (the "
                "instance is drafting, delivering or waiting out a delay), `WORKFLOW_CLOSED` "
                "(completed, stopped or failed), `GATE_CHANGED` (`If-Match` named no open "
                "gate: nothing was applied).",
            ),
            Raises(
                TemporalUnavailable,
                "Temporal or the instance's worker did not answer in time (`details`: the gRPC "
                f"status or `TimeoutError`). {MAY_HAVE_BEEN_RECORDED}",
            ),
            ApprovalUnconfirmed,
        ),
    },
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
            examples=[f'"{EXAMPLE_GATE_ID}"'],
        ),
    ] = None,
) -> CampaignApprovalResultSuccessResponse:
    """Resolves a campaign-scoped pending approval gate without exposing message editing or
    generic workflow controls. The response returns the updated lead workflow status for the
    affected instance.

    Approving pending content clears the approval gate and resumes the existing campaign
    workflow: the approved message is delivered (inside the campaign's send window, when it has
    one). No request body. Idempotency: not supported; check the current resource state (`GET`
    the instance) before retrying this request. With `If-Match`, only the gate it names is
    approved; the 200 carries the approved gate's `ETag`.
    """
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
