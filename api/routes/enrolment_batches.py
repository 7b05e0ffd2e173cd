"""Bulk enrolment: `POST …/workflow-instances/batch`, up to 1,000 leads in one request.

What a sales team's list import needs (issue 20): one campaign snapshot and one suppression
lookup per batch, the enrolment rows in a few inserts, the instances started concurrently, and
an answer per row in the request's order. A bad row never fails the batch (it is answered
`invalid` with the field and the reason); re-posting the same batch enrols nobody twice (each
instance id is derived from the lead, so a second start is `already_enrolled`).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from fastapi import APIRouter, Request
from fastapi.exceptions import HTTPException
from pydantic import TypeAdapter, ValidationError

from api.campaigns import campaign_of, check_fits_temporal, snapshot_of
from api.content_type import JsonBodyRoute
from api.deps import (
    CampaignExecutor,
    InstancesDep,
    SettingsDep,
    StoreDep,
    UnsubscribeKeyDep,
)
from api.enrolment import enrolment_row, sending_mailbox, start_instance
from api.error_handlers import validation_failed
from api.errors import (
    ApiError,
    CampaignNotFound,
    CampaignTooLarge,
    LeadAlreadyEnrolled,
    RateLimited,
    ValidationFailed,
)
from api.openapi import AUTHENTICATED, JSON_BODY, Raises, error_responses
from api.ratelimit import KeyRateLimiter
from api.schemas import (
    EnrolmentBatch,
    EnrolmentBatchBody,
    EnrolmentBatchCounts,
    EnrolmentBatchRow,
    EnrolmentBatchSuccessResponse,
    LeadBody,
)
from campaign_engine import unsubscribe
from campaign_engine.enrolments import Enrolments

router = APIRouter(
    route_class=JsonBodyRoute,
    prefix="/v1/accounts/{accountGroupId}/campaigns/{campaignId}/workflow-instances",
    tags=["workflow instances"],
)

START_CONCURRENCY = 32
"""Instances started at once per batch: enough to keep the dev server's two cores busy, few
enough that one batch does not starve other requests of Temporal connections."""

_LEAD = TypeAdapter(LeadBody)


@dataclass
class _Valid:
    index: int
    lead: LeadBody
    email_hash: str


def _invalid(index: int, raw: object, error: ValidationError) -> EnrolmentBatchRow:
    """The `invalid` answer of a row: its first problem's field and reason."""
    lead_id = raw.get("id") if isinstance(raw, dict) else None
    if isinstance(raw, dict) and set(raw) == {"lead"}:
        # The single enrolment's body shape, one level too deep.
        return EnrolmentBatchRow(
            index=index,
            lead_id=None,
            outcome="invalid",
            field="lead",
            reason='a row is the lead itself ({"id": …, "email": …}), not {"lead": {…}}',
        )
    problem = validation_failed(error.errors(), LeadBody)
    field = (problem.details or "body").split(", ")[0]
    reason = (problem.message or "is invalid").split("; ")[0].removeprefix(f"{field}: ")
    if field == "body":
        field = "lead"  # the row itself: not an object
    return EnrolmentBatchRow(
        index=index,
        lead_id=lead_id if isinstance(lead_id, str) and len(lead_id) <= 64 else None,
        outcome="invalid",
        field=field,
        reason=reason,
    )


@router.api_route(
    "/batch", methods=["GET", "HEAD", "PUT", "PATCH", "DELETE"], include_in_schema=False
)
async def other_methods_on_the_batch() -> None:
    """405 (with `Allow: POST`, from the envelope's handler) for every other method: without
    this route `GET …/batch` would reach the instance GET as the instance id `batch`."""
    raise HTTPException(405)


@router.post(
    "/batch",
    summary="Enrol up to 1,000 leads in a campaign",
    response_description="One result per row, in the request's order, and counts per outcome.",
    responses=error_responses(
        *AUTHENTICATED,
        *JSON_BODY,
        Raises(
            ValidationFailed,
            "The batch as a whole is invalid: `leads` is not a list, is empty or has over "
            "1,000 rows (`details`: `leads`); nobody was enrolled. A bad row is never a 400.",
        ),
        Raises(CampaignNotFound, "No campaign with this id in this account group."),
        Raises(
            CampaignTooLarge,
            "The stored campaign would not fit under Temporal's payload size limit; PUT a "
            "shorter one.",
        ),
        Raises(
            RateLimited,
            "The rows would overspend the key's enrolment budget "
            "(`CAMPAIGN_ENGINE_ENROLMENT_RATE_LIMIT`, 20,000 rows a minute by default); "
            "nobody was enrolled. Retry after `Retry-After` seconds, or send fewer rows.",
        ),
    ),
)
async def enrol_leads(
    body: EnrolmentBatchBody,
    scope: CampaignExecutor,
    request: Request,
    store: StoreDep,
    settings: SettingsDep,
    instances: InstancesDep,
    unsubscribe_key: UnsubscribeKeyDep,
) -> EnrolmentBatchSuccessResponse:
    """Enrols up to 1,000 leads at once, as `POST …/workflow-instances` does each: `200` with
    one result per row, in order (`enrolled`, `already_enrolled`, `suppressed`, `invalid` with
    the field and reason, `failed` when Temporal did not answer for that row), and counts per
    outcome.

    A bad row never fails the batch; a bad batch (not a list, empty, over 1,000 rows, over the
    body limit) is a `400`/`413` envelope and enrols nobody. Re-posting the same batch enrols
    nobody twice. The request counts one against the key's request budget
    (`CAMPAIGN_ENGINE_RATE_LIMIT`) and its rows against the key's enrolment budget
    (`CAMPAIGN_ENGINE_ENROLMENT_RATE_LIMIT`, 20,000 a minute by default): `429` with
    `Retry-After` when the rows would overspend it, and then nothing is enrolled.
    """
    record = await store.get_campaign(scope.account_group_id, scope.campaign_id)
    if record is None:
        raise CampaignNotFound()
    snapshot = snapshot_of(campaign_of(record))
    check_fits_temporal(snapshot, settings)
    limiter: KeyRateLimiter = request.app.state.enrolment_limiter
    await limiter.hit(scope.principal.key_id, cost=len(body.leads))

    results: dict[int, EnrolmentBatchRow] = {}
    valid: list[_Valid] = []
    first_row_of: dict[str, int] = {}
    for index, raw in enumerate(body.leads):
        try:
            lead = _LEAD.validate_python(raw)
        except ValidationError as error:
            results[index] = _invalid(index, raw, error)
            continue
        if lead.id in first_row_of:
            results[index] = EnrolmentBatchRow(
                index=index,
                lead_id=lead.id,
                outcome="invalid",
                field="id",
                reason=f"the same lead id is row {first_row_of[lead.id]} of this batch",
            )
            continue
        first_row_of[lead.id] = index
        valid.append(_Valid(index, lead, unsubscribe.email_hash(unsubscribe_key, lead.email)))

    suppressed = await store.suppressed_among(
        scope.account_group_id,
        [row.lead.id for row in valid],
        [row.email_hash for row in valid],
    )
    to_start: list[_Valid] = []
    for row in valid:
        source = suppressed.get(row.lead.id) or suppressed.get(row.email_hash)
        if source is not None:
            results[row.index] = EnrolmentBatchRow(
                index=row.index, lead_id=row.lead.id, outcome="suppressed", reason=source
            )
        else:
            to_start.append(row)

    mailbox = sending_mailbox(settings, snapshot)
    rows = {
        row.index: enrolment_row(
            scope,
            row.lead,
            email_hash=row.email_hash,
            unsubscribe_key=unsubscribe_key,
            mailbox=mailbox,
        )
        for row in to_start
    }
    # Before the starts, as for one enrolment: inbound matching by address must know them.
    await Enrolments(store).record_many(
        scope.account_group_id, scope.campaign_id, list(rows.values())
    )

    slots = asyncio.Semaphore(START_CONCURRENCY)

    async def start(row: _Valid) -> EnrolmentBatchRow:
        instance_id = rows[row.index].workflow_instance_id
        lead = row.lead
        async with slots:
            try:
                await start_instance(instances, scope, lead, snapshot)
            except LeadAlreadyEnrolled:
                return EnrolmentBatchRow(
                    index=row.index,
                    lead_id=lead.id,
                    outcome="already_enrolled",
                    workflow_instance_id=instance_id,
                )
            except ApiError as error:
                return EnrolmentBatchRow(
                    index=row.index, lead_id=lead.id, outcome="failed", reason=error.code
                )
        return EnrolmentBatchRow(
            index=row.index, lead_id=lead.id, outcome="enrolled", workflow_instance_id=instance_id
        )

    for result in await asyncio.gather(*(start(row) for row in to_start)):
        results[result.index] = result
    ordered = [results[index] for index in range(len(body.leads))]
    counts = EnrolmentBatchCounts()
    for result in ordered:
        setattr(counts, result.outcome, getattr(counts, result.outcome) + 1)
    return EnrolmentBatchSuccessResponse(data=EnrolmentBatch(results=ordered, counts=counts))
