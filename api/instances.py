"""Talking to campaign workflow instances: enrol, read, approve; Temporal failures → API errors."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal, TypeVar

from temporalio.api.enums.v1 import PendingActivityState
from temporalio.api.failure.v1 import Failure
from temporalio.client import Client, WorkflowHandle
from temporalio.common import (
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDConflictPolicy,
    WorkflowIDReusePolicy,
)
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from api.errors import (
    ApiError,
    Conflict,
    NotFound,
    TemporalPayloadTooLarge,
    UpstreamError,
    ValidationFailed,
)
from workflows.campaign import DELIVERY_MAX_ATTEMPTS, CampaignWorkflow
from workflows.search_attributes import (
    ACCOUNT_GROUP_ID,
    CAMPAIGN_ID,
    HAS_PENDING_APPROVAL,
    LEAD_ID,
    LEAD_WORKFLOW_STATUS,
)
from workflows.types import (
    DELIVER_MESSAGE_ACTIVITY,
    ApprovalOutcome,
    ApprovalOutcomeRequest,
    ApproveRequest,
    CampaignInput,
    LeadStatus,
    WorkflowStatus,
    workflow_id_for,
)

T = TypeVar("T")

logger = logging.getLogger("campaign_engine.api")

MAY_HAVE_BEEN_RECORDED = (
    "The approval may have been recorded; check the current resource state before retrying."
)


@dataclass(frozen=True)
class DeliveryProgress:
    """A delivery under way (`sending`, `retrying`) or given up (`failed`)."""

    step_id: str | None
    state: Literal["sending", "retrying", "failed"]
    attempt: int | None
    """The attempt running or due next (1 = the first); for `failed`, the last one made."""
    maximum_attempts: int | None
    last_error: str | None
    """What the previous attempt (or, for `failed`, the last one) reported."""
    next_attempt_at: datetime | None
    """When a `retrying` delivery tries again."""


def workflow_instance_id_for(account_group_id: str, campaign_id: str, lead_id: str) -> str:
    """One instance per lead and campaign: a retried enrolment finds the first, never a twin."""
    digest = hashlib.sha256(f"{account_group_id}:{campaign_id}:{lead_id}".encode()).hexdigest()
    return digest[:24]


class WorkflowInstances:
    def __init__(self, client: Client, task_queue: str, timeout_seconds: float) -> None:
        self._client = client
        self._task_queue = task_queue
        self._timeout = timedelta(seconds=timeout_seconds)

    async def enroll(self, input: CampaignInput) -> LeadStatus:
        workflow_id = workflow_id_for(
            input.account_group_id, input.campaign_id, input.workflow_instance_id
        )
        async with self._temporal_call("Could not start the workflow instance."):
            try:
                await self._bounded(
                    self._client.start_workflow(
                        CampaignWorkflow.run,
                        input,
                        id=workflow_id,
                        task_queue=self._task_queue,
                        id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
                        id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
                        static_summary=f"{input.campaign.name} · lead {input.lead.id}"[:200],
                        # Set at start too, so the instance is findable before its first task.
                        search_attributes=TypedSearchAttributes(
                            [
                                SearchAttributePair(ACCOUNT_GROUP_ID, input.account_group_id),
                                SearchAttributePair(CAMPAIGN_ID, input.campaign_id),
                                SearchAttributePair(LEAD_ID, input.lead.id),
                                SearchAttributePair(HAS_PENDING_APPROVAL, False),
                                SearchAttributePair(
                                    LEAD_WORKFLOW_STATUS, WorkflowStatus.RUNNING.value
                                ),
                            ]
                        ),
                        rpc_timeout=self._timeout,
                    )
                )
            except WorkflowAlreadyStartedError as error:
                raise Conflict(
                    "This lead is already enrolled in this campaign",
                    code="LEAD_ALREADY_ENROLLED",
                    details=input.workflow_instance_id,
                ) from error
        return LeadStatus(
            lead_id=input.lead.id,
            workflow_status=WorkflowStatus.RUNNING,
            workflow_instance_id=input.workflow_instance_id,
        )

    async def lead_status(self, workflow_id: str) -> LeadStatus:
        handle = self._client.get_workflow_handle(workflow_id)
        async with self._temporal_call("Could not read the workflow instance."):
            return await self._bounded(
                handle.query(CampaignWorkflow.lead_status, rpc_timeout=self._timeout)
            )

    async def delivery_progress(
        self, workflow_id: str, status: LeadStatus
    ) -> DeliveryProgress | None:
        """Where the delivery of the current step stands, or None when none is under way.

        Attempts are the activity's, which the workflow cannot see: they are read from Temporal
        (`DescribeWorkflowExecution` → pending activities: attempt, last failure, next attempt
        time), only while the instance is `running`. A failed delivery is read from the lead
        status the workflow keeps.
        """
        failure = status.failure
        if failure is not None:
            return DeliveryProgress(
                step_id=failure.step_id,
                state="failed",
                attempt=failure.attempt,
                maximum_attempts=DELIVERY_MAX_ATTEMPTS,
                last_error=failure.message,
                next_attempt_at=None,
            )
        if status.workflow_status != WorkflowStatus.RUNNING:
            return None
        handle = self._client.get_workflow_handle(workflow_id)
        async with self._temporal_call("Could not read the workflow instance."):
            description = await self._bounded(handle.describe(rpc_timeout=self._timeout))
        for pending in description.raw_description.pending_activities:
            if pending.activity_type.name != DELIVER_MESSAGE_ACTIVITY:
                continue
            waiting = pending.state == PendingActivityState.PENDING_ACTIVITY_STATE_SCHEDULED
            last_error = None
            if pending.HasField("last_failure"):
                last_error = await self._failure_message(pending.last_failure)
            next_at = (
                pending.next_attempt_schedule_time.ToDatetime(tzinfo=UTC)
                if pending.HasField("next_attempt_schedule_time")
                else None
            )
            return DeliveryProgress(
                step_id=status.latest_step,
                state="retrying" if waiting and pending.attempt > 1 else "sending",
                attempt=pending.attempt,
                maximum_attempts=pending.maximum_attempts or None,
                last_error=last_error or None,
                next_attempt_at=next_at,
            )
        return None

    async def _failure_message(self, failure: Failure) -> str:
        """A failure's message as raised: failures travel encrypted ("Encoded failure" outside,
        the message inside a payload; campaign_engine/codec.py), so decode it with our codec."""
        decoded = Failure()
        decoded.CopyFrom(failure)
        return str(await self._client.data_converter.decode_failure(decoded))

    async def approve(self, workflow_id: str, approved_by: str) -> LeadStatus:
        """Signals the gate, then reads back whether this very signal was applied."""
        handle = self._client.get_workflow_handle(workflow_id)
        request_id = uuid.uuid4().hex
        async with self._temporal_call(
            f"Temporal did not confirm the approval. {MAY_HAVE_BEEN_RECORDED}"
        ):
            try:
                await self._bounded(
                    handle.signal(
                        CampaignWorkflow.approve,
                        ApproveRequest(request_id=request_id, decided_by=approved_by),
                        rpc_timeout=self._timeout,
                    )
                )
            except RPCError as error:
                if error.status == RPCStatusCode.NOT_FOUND:
                    await self._raise_not_found_or_closed(handle)
                raise
            # Temporal serves a query only after the workflow has processed the signals accepted
            # before it, so this reads the outcome of our signal without polling.
            outcome: ApprovalOutcome = await self._bounded(
                handle.query(
                    CampaignWorkflow.approval_outcome,
                    ApprovalOutcomeRequest(request_id),
                    rpc_timeout=self._timeout,
                )
            )
        if outcome.applied:
            return outcome.lead_status
        if outcome.applied is None:
            raise UpstreamError(
                f"The approval's outcome was not found on the instance. {MAY_HAVE_BEEN_RECORDED}",
                code="APPROVAL_UNCONFIRMED",
            )
        refusal = outcome.refusal.value if outcome.refusal else None
        raise Conflict(
            "No approval is pending on this workflow instance",
            code="NO_PENDING_APPROVAL",
            details=refusal,
        )

    async def _raise_not_found_or_closed(self, handle: WorkflowHandle[object, object]) -> None:
        # A signal to a closed workflow is refused as NOT_FOUND too; describe tells them apart.
        try:
            description = await self._bounded(handle.describe(rpc_timeout=self._timeout))
        except RPCError as error:
            if error.status == RPCStatusCode.NOT_FOUND:
                raise NotFound(
                    "No such workflow instance", code="WORKFLOW_INSTANCE_NOT_FOUND"
                ) from None
            raise
        status = description.status.name.lower() if description.status else "closed"
        raise Conflict(
            f"No approval is pending: the workflow instance is {status}",
            code="NO_PENDING_APPROVAL",
            details="WORKFLOW_CLOSED",
        )

    async def _bounded(self, call: Awaitable[T]) -> T:
        # The RPC timeout bounds each call on the wire; this also bounds connecting, for a lazy
        # client whose server is down.
        return await asyncio.wait_for(call, self._timeout.total_seconds() + 1)

    @asynccontextmanager
    async def _temporal_call(self, unavailable_message: str) -> AsyncIterator[None]:
        """Maps what Temporal answers to the API's errors, and logs Temporal's own words.

        A refusal of what we sent (`INVALID_ARGUMENT`, a message over the gRPC size limit) is
        the request's fault and the same request fails the same way again: 413 when it is about
        size, else 400 — never the 502 that tells a caller to retry an outage.
        """
        try:
            yield
        except ApiError:
            raise
        except RPCError as error:
            if error.status == RPCStatusCode.NOT_FOUND:
                raise NotFound(
                    "No such workflow instance", code="WORKFLOW_INSTANCE_NOT_FOUND"
                ) from error
            cause = f"{error.status.name}: {error.message}"
            if _refused_as_too_large(error):
                logger.warning("Temporal refused the payload as too large: %s", cause)
                raise TemporalPayloadTooLarge(
                    f"Temporal refused the request as too large ({error.message}); "
                    "shorten the campaign.",
                    details=error.status.name,
                ) from error
            if error.status == RPCStatusCode.INVALID_ARGUMENT:
                logger.warning("Temporal refused the request as invalid: %s", cause)
                raise ValidationFailed(
                    f"Temporal refused the request as invalid: {error.message}"
                ) from error
            logger.warning("Temporal call failed: %s", cause)
            raise UpstreamError(
                unavailable_message, code="TEMPORAL_UNAVAILABLE", details=error.status.name
            ) from error
        except (TimeoutError, RuntimeError) as error:
            # RuntimeError: a lazy client that cannot connect reports it this way.
            logger.warning("Temporal call failed: %s: %s", type(error).__name__, error)
            raise UpstreamError(
                unavailable_message, code="TEMPORAL_UNAVAILABLE", details=type(error).__name__
            ) from error


def _refused_as_too_large(error: RPCError) -> bool:
    """Temporal's blob size limit ("Blob data size exceeds limit.", INVALID_ARGUMENT) or gRPC's
    message size limit ("… larger than max …", RESOURCE_EXHAUSTED; that status also means a rate
    limit, which is an outage, so the message decides)."""
    message = error.message.lower()
    if error.status == RPCStatusCode.INVALID_ARGUMENT:
        return "size" in message and "limit" in message
    if error.status == RPCStatusCode.RESOURCE_EXHAUSTED:
        return "larger than max" in message
    return False
