"""Talking to campaign workflow instances: enrol, read, approve; Temporal failures → API errors."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, TypeVar

from temporalio.api.batch.v1 import BatchOperationSignal
from temporalio.api.common.v1 import Payloads
from temporalio.api.enums.v1 import PendingActivityState
from temporalio.api.failure.v1 import Failure
from temporalio.api.workflowservice.v1 import StartBatchOperationRequest
from temporalio.client import (
    Client,
    WorkflowExecutionDescription,
    WorkflowExecutionStatus,
    WorkflowHandle,
    WorkflowQueryFailedError,
)
from temporalio.common import (
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDConflictPolicy,
    WorkflowIDReusePolicy,
)
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from api.errors import (
    MAY_HAVE_BEEN_RECORDED,
    ApiError,
    ApprovalUnconfirmed,
    LeadAlreadyEnrolled,
    NoPendingApproval,
    TemporalPayloadTooLarge,
    TemporalUnavailable,
    ValidationFailed,
    WorkflowInstanceNotFound,
)
from api.execution_status import CLOSED_AS, closed_as, truthful
from api.review_queue import MAX_SCAN, QueueFilters, QueueItem, visibility_query
from campaign_engine.enrolments import Enrolments
from campaign_engine.ids import InstanceRef, is_object_id
from campaign_engine.store import Store
from campaign_engine.temporal import bounded_call
from workflows.activity_options import DELIVERY_MAX_ATTEMPTS
from workflows.campaign import CampaignWorkflow
from workflows.search_attributes import (
    ACCOUNT_GROUP_ID,
    CAMPAIGN_ID,
    GATE_EXPIRES_AT,
    GATE_ID,
    GATE_OPENED_AT,
    HAS_PENDING_APPROVAL,
    LATEST_STEP,
    LEAD_ID,
    LEAD_WORKFLOW_STATUS,
)
from workflows.types import (
    DELIVER_MESSAGE_ACTIVITY,
    ApprovalOutcomeRequest,
    ApprovalRefusal,
    ApproveRequest,
    CampaignInput,
    CampaignPauseEvent,
    CampaignSnapshot,
    Deferral,
    Lead,
    LeadStatus,
    StopReason,
    WorkflowStatus,
)

T = TypeVar("T")

logger = logging.getLogger("campaign_engine.api")


@dataclass(frozen=True)
class DeliveryProgress:
    """A delivery under way (`sending`, `retrying`), waiting for its send time (`scheduled`),
    or given up (`failed`)."""

    step_id: str | None
    state: Literal["sending", "retrying", "failed", "scheduled"]
    attempt: int | None
    """The attempt running or due next (1 = the first); for `failed`, the last one made."""
    maximum_attempts: int | None
    last_error: str | None
    """What the previous attempt (or, for `failed`, the last one) reported."""
    next_attempt_at: datetime | None
    """When a `retrying` delivery tries again, or a `scheduled` one is sent (None: on resume)."""
    deferred_because: Deferral | None = None
    """Why a `scheduled` delivery waits."""
    send_at_local: str | None = None
    """A `scheduled` delivery's send time in the lead's window zone."""


APPROVAL_OUTCOME_QUERY = CampaignWorkflow.approval_outcome.__name__
"""The `approval_outcome` query's name (`ApprovalOutcome` as JSON)."""


def _lead_status_of(status: dict[str, Any]) -> LeadStatus:
    """The reference page's six `leadStatus` fields of a `LeadStatus` read as JSON; the audit
    (decisions, deliveries, content) is left out: the approve response does not carry it."""
    stop_reason = status.get("workflow_stop_reason")
    return LeadStatus(
        lead_id=status["lead_id"],
        workflow_status=WorkflowStatus(status["workflow_status"]),
        workflow_instance_id=status["workflow_instance_id"],
        latest_step=status.get("latest_step"),
        workflow_stop_reason=StopReason(stop_reason) if stop_reason else None,
        has_pending_approval=bool(status.get("has_pending_approval")),
    )


class WorkflowInstances:
    """The API's calls to campaign workflow instances, in the API's terms (ids, leads).

    Every call is bounded by `timeout_seconds` (the RPC and, for a lazy client, connecting) and
    maps what Temporal answers to the API's errors: an unknown instance is
    `WorkflowInstanceNotFound`, an outage `TemporalUnavailable`, a refused payload
    `TemporalPayloadTooLarge` or `ValidationFailed` — never a 502 for a request that would fail
    the same way again.
    """

    def __init__(self, client: Client, task_queue: str, timeout_seconds: float) -> None:
        self._client = client
        self._task_queue = task_queue
        self._timeout = timedelta(seconds=timeout_seconds)

    async def enrol(
        self,
        account_group_id: str,
        campaign_id: str,
        lead: Lead,
        campaign: CampaignSnapshot,
        *,
        continue_as_new_after_events: int | None = None,
    ) -> LeadStatus:
        """Starts the lead's instance on `campaign`; its id is derived from the lead (one
        instance per lead and campaign). Raises `LeadAlreadyEnrolled` (409) when it exists.

        `continue_as_new_after_events` is a test knob (see `CampaignInput`).
        """
        ref = InstanceRef.of_lead(account_group_id, campaign_id, lead.id)
        input = CampaignInput(
            account_group_id=account_group_id,
            campaign_id=campaign_id,
            workflow_instance_id=ref.workflow_instance_id,
            lead=lead,
            campaign=campaign,
            continue_as_new_after_events=continue_as_new_after_events,
        )
        async with temporal_errors("Could not start the workflow instance."):
            try:
                await self._bounded(
                    self._client.start_workflow(
                        CampaignWorkflow.run,
                        input,
                        id=ref.workflow_id,
                        task_queue=self._task_queue,
                        id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
                        id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
                        static_summary=f"{campaign.name} · lead {lead.id}"[:200],
                        # Set at start too, so the instance is findable before its first task.
                        search_attributes=TypedSearchAttributes(
                            [
                                SearchAttributePair(ACCOUNT_GROUP_ID, account_group_id),
                                SearchAttributePair(CAMPAIGN_ID, campaign_id),
                                SearchAttributePair(LEAD_ID, lead.id),
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
                raise LeadAlreadyEnrolled(ref.workflow_instance_id) from error
        return LeadStatus(
            lead_id=lead.id,
            workflow_status=WorkflowStatus.RUNNING,
            workflow_instance_id=ref.workflow_instance_id,
        )

    async def lead_status(self, ref: InstanceRef) -> LeadStatus:
        """The instance's status, pending content and audit record (`read`)."""
        status, _ = await self.read(ref)
        return status

    async def read(self, ref: InstanceRef) -> tuple[LeadStatus, WorkflowExecutionDescription]:
        """The instance's status, pending content and audit record, and Temporal's description
        of its execution (`DescribeWorkflowExecution`, which `delivery_progress` reuses).

        The status is the `lead_status` query's, read together with the execution's own status
        (`api.execution_status`): an execution terminated, timed out, failed by Temporal, or
        cancelled before the workflow handled cancellations, reads `stopped`/`failed` with that
        reason and no open gate, whatever its history last said. When such a closed execution
        cannot be queried (no worker answers, or its history no longer replays) the status is
        built from its search attributes alone, without the audit.
        """
        handle = self._client.get_workflow_handle(ref.workflow_id)
        async with temporal_errors("Could not read the workflow instance."):
            description = await self._bounded(handle.describe(rpc_timeout=self._timeout))
            if description.status not in CLOSED_AS:
                status = await self._bounded(
                    handle.query(CampaignWorkflow.lead_status, rpc_timeout=self._timeout)
                )
                return status, description
        try:
            status = await self._bounded(
                handle.query(CampaignWorkflow.lead_status, rpc_timeout=self._timeout)
            )
        except (WorkflowQueryFailedError, RPCError, TimeoutError, RuntimeError) as error:
            logger.info(
                "closed instance %s (%s) not queried (%s): read from its description",
                ref.workflow_id,
                description.status.name if description.status else None,
                error,
            )
            attributes = description.typed_search_attributes
            status = LeadStatus(
                lead_id=attributes.get(LEAD_ID) or "",
                workflow_status=WorkflowStatus.RUNNING,
                workflow_instance_id=ref.workflow_instance_id,
                latest_step=attributes.get(LATEST_STEP),
            )
        return truthful(status, description.status), description

    async def delivery_progress(
        self,
        ref: InstanceRef,
        status: LeadStatus,
        description: WorkflowExecutionDescription | None = None,
    ) -> DeliveryProgress | None:
        """Where the delivery of the current step stands, or None when none is under way.

        Attempts are the activity's, which the workflow cannot see: they are read from Temporal
        (`DescribeWorkflowExecution` → pending activities: attempt, last failure, next attempt
        time), only while the instance is `running` (from `description` when given: `read`'s).
        A failed delivery is read from the lead status the workflow keeps.
        """
        scheduled = status.scheduled
        if scheduled is not None and status.workflow_status == WorkflowStatus.PENDING:
            return DeliveryProgress(
                step_id=scheduled.step_id,
                state="scheduled",
                attempt=None,
                maximum_attempts=None,
                last_error=None,
                next_attempt_at=scheduled.send_at,
                deferred_because=scheduled.deferred_because,
                send_at_local=scheduled.send_at_local,
            )
        failure = status.failure
        if failure is not None and status.workflow_stop_reason == StopReason.DELIVERY_FAILED:
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
        if description is None:
            handle = self._client.get_workflow_handle(ref.workflow_id)
            async with temporal_errors("Could not read the workflow instance."):
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

    async def approve(
        self, ref: InstanceRef, decided_by: str, if_match: list[str] | None = None
    ) -> tuple[LeadStatus, str | None]:
        """Signals the gate, then reads back whether this very signal was applied.

        `if_match`: the gate ids of the caller's `If-Match` (`["*"]`: any open gate; `[]`: a
        header that names none, which never matches); None approves whatever gate is open.
        The workflow checks it in the same step that approves (`ApprovalRefusal.GATE_CHANGED`).

        Returns the lead status after the approval (its six reference-page fields; the audit
        is not read) and the approved gate's id. Raises
        `NoPendingApproval` (409) with the workflow's refusal, `WorkflowInstanceNotFound`
        (404), `TemporalUnavailable` or `ApprovalUnconfirmed` (502: the approval may have been
        recorded).
        """
        handle = self._client.get_workflow_handle(ref.workflow_id)
        request_id = uuid.uuid4().hex
        async with temporal_errors(
            f"Temporal did not confirm the approval. {MAY_HAVE_BEEN_RECORDED}"
        ):
            try:
                await self._bounded(
                    handle.signal(
                        CampaignWorkflow.approve,
                        ApproveRequest(
                            request_id=request_id, decided_by=decided_by, if_match=if_match
                        ),
                        rpc_timeout=self._timeout,
                    )
                )
            except RPCError as error:
                if error.status == RPCStatusCode.NOT_FOUND:
                    raise await self._not_found_or_closed(handle) from error
                raise
            # Temporal serves a query only after the workflow has processed the signals accepted
            # before it, so this reads the outcome of our signal without polling. Read as plain
            # JSON: decoding the whole `ApprovalOutcome` into dataclasses (`typing` hints per
            # field, the audit's lists) cost ~1 ms of CPU per approval, a fifth of the API's,
            # for six fields of the lead status (docs/performance-history.md).
            answer: dict[str, Any] = await self._bounded(
                handle.query(
                    APPROVAL_OUTCOME_QUERY,
                    ApprovalOutcomeRequest(request_id),
                    result_type=dict,
                    rpc_timeout=self._timeout,
                )
            )
        applied, refusal = answer.get("applied"), answer.get("refusal")
        if applied:
            return _lead_status_of(answer["lead_status"]), answer.get("gate_id")
        if applied is None or refusal is None:
            raise ApprovalUnconfirmed()
        raise NoPendingApproval(ApprovalRefusal(refusal))

    async def signal_campaign(
        self, account_group_id: str, campaign_id: str, signal: str, event: CampaignPauseEvent
    ) -> str:
        """Sends `signal` (`campaign_paused` or `campaign_resumed`) with `event` to every running
        instance of the campaign, in one Temporal batch operation (`StartBatchOperation` by
        visibility query): one request here however many instances there are. Returns the
        batch job id, or `direct:<n>` when the server refused another batch (its limit of
        concurrent batch operations per namespace) and the instances were signalled one by one.

        Both ids must be 24 lowercase hex (`ValueError` else): they go into a visibility query.
        Visibility is eventually consistent, so an instance started moments ago may be missed:
        the delivery activity reads the pause flag from the store before every hand-over, and a
        held delivery asks again within `PAUSE_RECHECK`. Raises `TemporalUnavailable` (502).
        """
        for value in (account_group_id, campaign_id):
            if not is_object_id(value):
                raise ValueError(f"not a 24-character lowercase hex id: {value!r}")
        query = (
            f"{ACCOUNT_GROUP_ID.name} = '{account_group_id}' AND "
            f"{CAMPAIGN_ID.name} = '{campaign_id}' AND ExecutionStatus = 'Running'"
        )
        job_id = f"{signal}-{campaign_id}-{uuid.uuid4().hex}"
        async with temporal_errors("Could not signal the campaign's workflow instances."):
            payloads = await self._client.data_converter.encode([event])
            request = StartBatchOperationRequest(
                namespace=self._client.namespace,
                visibility_query=query,
                job_id=job_id,
                reason=f"{signal} {account_group_id}/{campaign_id} by {event.decided_by}"[:256],
                signal_operation=BatchOperationSignal(
                    signal=signal,
                    input=Payloads(payloads=payloads),
                    identity=self._client.identity,
                ),
            )
            try:
                await self._bounded(
                    self._client.workflow_service.start_batch_operation(
                        request, timeout=self._timeout
                    )
                )
                return job_id
            except RPCError as error:
                if error.status != RPCStatusCode.RESOURCE_EXHAUSTED:
                    raise
                logger.info("batch operations at their limit (%s); signalling one by one", error)
            return f"direct:{await self._signal_each(query, signal, event)}"

    async def unsubscribe_lead(
        self, account_group_id: str, lead_id: str, *, decided_by: str, note: str
    ) -> int:
        """Sends `lead_unsubscribed` (`{"decided_by", "note"}`) to every running instance of the
        lead in the account group, found by search attributes; returns how many were signalled.

        Both ids must be 24 lowercase hex (`ValueError` else): they go into a visibility query.
        Visibility is eventually consistent, so an instance started moments ago may be missed:
        the delivery activity reads the suppression list again before every hand-over. Raises
        `TemporalUnavailable` (502) when Temporal does not answer; an instance that closed
        between the listing and its signal is skipped.
        """
        for value in (account_group_id, lead_id):
            if not is_object_id(value):
                raise ValueError(f"not a 24-character lowercase hex id: {value!r}")
        query = (
            f"{ACCOUNT_GROUP_ID.name} = '{account_group_id}' AND {LEAD_ID.name} = '{lead_id}' "
            "AND ExecutionStatus = 'Running'"
        )
        async with temporal_errors("Could not signal the lead's workflow instances."):
            return await self._signal_each(
                query,
                CampaignWorkflow.lead_unsubscribed.__name__,
                {"decided_by": decided_by, "note": note},
            )

    async def _signal_each(self, query: str, signal: str, arg: object) -> int:
        """Sends `signal` with `arg` to every workflow the visibility `query` lists, one call
        each; returns how many were signalled. A workflow that closed between the listing and
        its signal is skipped. Call it inside `temporal_errors`."""
        workflow_ids = [
            execution.id
            async for execution in self._client.list_workflows(query, rpc_timeout=self._timeout)
        ]
        signalled = 0
        for workflow_id in workflow_ids:
            handle = self._client.get_workflow_handle(workflow_id)
            try:
                await self._bounded(handle.signal(signal, arg, rpc_timeout=self._timeout))
            except RPCError as error:
                if error.status != RPCStatusCode.NOT_FOUND:
                    raise
                continue  # closed meanwhile
            signalled += 1
        return signalled

    async def review_queue(
        self, account_group_id: str, campaign_id: str, filters: QueueFilters
    ) -> tuple[str, list[QueueItem]]:
        """Every instance of the campaign that matches `filters`, read from Temporal's
        visibility store only (never from the workflows); returns the query and the items,
        unordered (`api.review_queue.page_of` orders them). At most `MAX_SCAN` rows are read.
        Visibility trails the workflows by up to about a second."""
        query = visibility_query(account_group_id, campaign_id, filters)

        async def collect() -> list[QueueItem]:
            items: list[QueueItem] = []
            async for execution in self._client.list_workflows(
                query, page_size=1000, limit=MAX_SCAN, rpc_timeout=self._timeout
            ):
                attributes = execution.typed_search_attributes
                indexed = attributes.get(LEAD_WORKFLOW_STATUS)
                status = WorkflowStatus(indexed) if indexed else None
                # A closed execution's last upsert may still say `pending` with a gate open.
                closed = closed_as(execution.status, status)
                items.append(
                    QueueItem(
                        workflow_instance_id=execution.id.rsplit(":", 1)[-1],
                        lead_id=attributes.get(LEAD_ID),
                        workflow_status=closed[0] if closed else status,
                        latest_step=attributes.get(LATEST_STEP),
                        has_pending_approval=closed is None
                        and execution.status == WorkflowExecutionStatus.RUNNING
                        and bool(attributes.get(HAS_PENDING_APPROVAL)),
                        gate_id=attributes.get(GATE_ID),
                        gate_opened_at=attributes.get(GATE_OPENED_AT),
                        gate_expires_at=attributes.get(GATE_EXPIRES_AT),
                    )
                )
            return items

        async with temporal_errors("Could not list the workflow instances."):
            # Each visibility page is bounded by the RPC timeout; the whole scan by a few.
            return query, await asyncio.wait_for(collect(), 3 * self._timeout.total_seconds())

    async def why_not_found(self, ref: InstanceRef, store: Store) -> WorkflowInstanceNotFound:
        """The 404 for an instance `ref` does not name, with what was probably meant, looked up
        only within `ref`'s account group (the caller's, checked before): never a word about
        another group, whose ids answer the plain 404.

        In turn: the id is a lead's enrolled in this campaign (its instance id is derived,
        `InstanceRef.of_lead`, and Temporal asked whether it exists): `details`
        `LEAD_ID_NOT_INSTANCE_ID`, the message gives the instance's path; the id is an instance
        of another campaign of the group (the enrolment table): `INSTANCE_OF_ANOTHER_CAMPAIGN`,
        with that campaign's path; the id is a lead's enrolled in other campaigns of the group
        only: `LEAD_OF_ANOTHER_CAMPAIGN`; the group has no such campaign: `NO_SUCH_CAMPAIGN`.
        Otherwise, or when a look-up fails (a hint is not worth a 502), the plain 404.
        """
        try:
            return await self._diagnosed(ref, store)
        except Exception as error:  # a hint is best effort; the 404 stands
            logger.info("no hint for the 404 of %s: %r", ref.workflow_id, error)
            return WorkflowInstanceNotFound()

    async def _diagnosed(self, ref: InstanceRef, store: Store) -> WorkflowInstanceNotFound:
        group, campaign, given = ref.account_group_id, ref.campaign_id, ref.workflow_instance_id
        base = f"/v1/accounts/{group}/campaigns"
        as_lead = InstanceRef.of_lead(group, campaign, given)
        if await self._exists(as_lead):
            return WorkflowInstanceNotFound(
                f"No workflow instance {given} in campaign {campaign}, but {given} is the id of "
                f"a lead enrolled in it: a lead's instance has an id of its own. Use its "
                f"instance id {as_lead.workflow_instance_id}: "
                f"{base}/{campaign}/workflow-instances/{as_lead.workflow_instance_id}",
                details=WorkflowInstanceNotFound.LEAD_ID_NOT_INSTANCE_ID,
            )
        enrolments = Enrolments(store)
        elsewhere = [
            row
            for row in await enrolments.find(
                account_group_id=group, workflow_instance_id=given, limit=5
            )
            if row.campaign_id != campaign
        ]
        if elsewhere:
            other = elsewhere[0].campaign_id
            return WorkflowInstanceNotFound(
                f"No workflow instance {given} in campaign {campaign}: it belongs to campaign "
                f"{other} of this account group. Use {base}/{other}/workflow-instances/{given}",
                details=WorkflowInstanceNotFound.INSTANCE_OF_ANOTHER_CAMPAIGN,
            )
        as_lead_elsewhere = [
            row
            for row in await enrolments.find(account_group_id=group, lead_id=given, limit=5)
            if row.campaign_id != campaign
        ]
        if as_lead_elsewhere:
            row = as_lead_elsewhere[0]
            return WorkflowInstanceNotFound(
                f"No workflow instance {given} in campaign {campaign}: {given} is the id of a "
                f"lead, not enrolled in this campaign but in campaign {row.campaign_id} of this "
                f"account group, where its instance id is {row.workflow_instance_id}: "
                f"{base}/{row.campaign_id}/workflow-instances/{row.workflow_instance_id}",
                details=WorkflowInstanceNotFound.LEAD_OF_ANOTHER_CAMPAIGN,
            )
        if await store.get_campaign(group, campaign) is None:
            return WorkflowInstanceNotFound(
                f"No workflow instance {given}: this account group has no campaign {campaign} "
                "(check the campaign id of the path)",
                details=WorkflowInstanceNotFound.NO_SUCH_CAMPAIGN,
            )
        return WorkflowInstanceNotFound()

    async def _exists(self, ref: InstanceRef) -> bool:
        """Whether Temporal knows the instance's workflow (open or closed)."""
        handle = self._client.get_workflow_handle(ref.workflow_id)
        try:
            await self._bounded(handle.describe(rpc_timeout=self._timeout))
        except RPCError as error:
            if error.status == RPCStatusCode.NOT_FOUND:
                return False
            raise
        return True

    async def _not_found_or_closed(self, handle: WorkflowHandle[object, object]) -> ApiError:
        """What a NOT_FOUND to a signal means: the instance is closed (a signal to a closed
        workflow is refused as NOT_FOUND too) or does not exist; `describe` tells them apart."""
        try:
            description = await self._bounded(handle.describe(rpc_timeout=self._timeout))
        except RPCError as error:
            if error.status == RPCStatusCode.NOT_FOUND:
                return WorkflowInstanceNotFound()
            raise
        status = description.status.name.lower() if description.status else "closed"
        return NoPendingApproval(
            ApprovalRefusal.WORKFLOW_CLOSED,
            f"No approval is pending: the workflow instance is {status}",
        )

    async def _bounded(self, call: Awaitable[T]) -> T:
        return await bounded_call(call, self._timeout)


@asynccontextmanager
async def temporal_errors(unavailable_message: str) -> AsyncIterator[None]:
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
            raise WorkflowInstanceNotFound() from error
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
        raise TemporalUnavailable(unavailable_message, details=error.status.name) from error
    except TimeoutError as error:
        logger.warning("Temporal call timed out: %s", error or "no answer in time")
        raise TemporalUnavailable(unavailable_message, details="TimeoutError") from error
    except RuntimeError as error:
        if not _is_connect_failure(error):
            raise  # a bug, not an outage: the 500 envelope, logged with its trace
        logger.warning("Temporal unreachable: %s", error)
        raise TemporalUnavailable(unavailable_message, details="RuntimeError") from error


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


def _is_connect_failure(error: RuntimeError) -> bool:
    """A lazy client that cannot reach Temporal raises a plain `RuntimeError` whose message
    starts "Failed client connect" (temporalio's bridge); any other `RuntimeError` is a bug."""
    return str(error).startswith("Failed client connect")
