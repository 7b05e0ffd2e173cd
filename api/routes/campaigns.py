"""Campaign definitions: the steps and templates each enrolled lead runs through."""

from __future__ import annotations

import logging

from fastapi import APIRouter, Response, status

from api.campaigns import (
    campaign_of,
    check_fits_temporal,
    check_send_window,
    check_sender,
    check_templates_render,
    check_threads,
    check_webhook,
    snapshot_of,
)
from api.content_type import JsonBodyRoute
from api.deps import (
    CampaignReader,
    CampaignScope,
    CampaignWriter,
    InstancesDep,
    SettingsDep,
    StoreDep,
    WebhookSecretsDep,
)
from api.errors import (
    ApiError,
    CampaignNotFound,
    CampaignTooLarge,
    RenderBudgetExceeded,
    RenderQueueFull,
    ValidationFailed,
)
from api.openapi import AUTHENTICATED, JSON_BODY, Raises, error_responses
from api.schemas import (
    CampaignBody,
    CampaignStats,
    CampaignStatsSuccessResponse,
    CampaignSuccessResponse,
    OutcomeCounts,
    StepStats,
)
from campaign_engine.campaign_stats import campaign_stats
from workflows.types import CampaignPauseEvent

logger = logging.getLogger("campaign_engine.api")

router = APIRouter(
    prefix="/v1/accounts/{accountGroupId}/campaigns", tags=["campaigns"], route_class=JsonBodyRoute
)


CAMPAIGN_NOT_FOUND = Raises(
    CampaignNotFound, "No campaign with this id in this account group (PUT it first)."
)


@router.put(
    "/{campaignId}",
    summary="Create or replace a campaign",
    responses={
        200: {"description": "The campaign was replaced; running instances keep their version."},
        201: {"model": CampaignSuccessResponse, "description": "The campaign was created."},
        **error_responses(
            *AUTHENTICATED,
            *JSON_BODY,
            Raises(
                ValidationFailed,
                "A check of the campaign as a whole failed, `details` naming the field: a "
                "webhook URL webhooks may not reach (a private or loopback address: "
                "`webhook.url`), a template that does not render for a sample lead "
                "(`steps.0.body`), a threaded first step (`steps.0.thread`), a send window "
                "with an unknown zone, day or holiday calendar or an `end` not after `start` "
                "(`sendWindow.timeZone`, …), a `from` this account group may not send from "
                "(`from`).",
            ),
            RenderBudgetExceeded,
            Raises(
                CampaignTooLarge,
                "Each field is valid but the campaign as a whole would not fit under "
                "Temporal's payload size limit (`details`: `steps`); send fewer or shorter "
                "steps.",
            ),
            RenderQueueFull,
        ),
    },
)
async def put_campaign(
    body: CampaignBody,
    scope: CampaignWriter,
    store: StoreDep,
    settings: SettingsDep,
    webhook_secrets: WebhookSecretsDep,
    response: Response,
) -> CampaignSuccessResponse:
    """Stores the campaign's definition under its id: `201` when it is new, `200` when it
    replaces one. Running instances keep the version they were enrolled with; leads enrolled
    from now on run this one.

    The campaign is checked whole before anything is stored: every template is rendered once
    for a sample lead, and the webhook's destination, the send window, the sender and the size
    are checked. A refused PUT leaves the stored version as it was. The
    answer is the campaign as stored; the webhook's secret is never returned. What a GET
    returns can be sent back as it is: the fields the server sets are ignored.
    """
    check_webhook(body, settings)
    check_threads(body)
    check_send_window(body)
    check_sender(body, settings, scope.account_group_id)
    check_fits_temporal(snapshot_of(body), settings)
    await check_templates_render(body, scope.account_group_id, settings)
    definition = body.model_dump(mode="json", by_alias=True)
    if body.webhook is not None:
        # Sealed with the payload key ring, bound to this campaign: never stored in clear.
        definition["webhook"].pop("secret", None)
        definition["webhook"]["sealedSecret"] = webhook_secrets.seal(
            body.webhook.secret.get_secret_value(),
            account_group_id=scope.account_group_id,
            campaign_id=scope.campaign_id,
        )
    record, created = await store.put_campaign(
        scope.account_group_id, scope.campaign_id, definition
    )
    if created:
        response.status_code = status.HTTP_201_CREATED
    return CampaignSuccessResponse(data=campaign_of(record))


@router.get(
    "/{campaignId}/stats",
    summary="Read a campaign's numbers",
    response_description="The campaign's numbers, in all and per step.",
    responses=error_responses(*AUTHENTICATED, CAMPAIGN_NOT_FOUND),
)
async def get_campaign_stats(
    scope: CampaignReader, store: StoreDep
) -> CampaignStatsSuccessResponse:
    """Counts leads enrolled, sent, replied, auto-replied, bounced, complained and
    unsubscribed, with rates, in all and per step, from the engine's own store (the delivery
    ledger and the inbound message log), current to the request."""
    record = await store.get_campaign(scope.account_group_id, scope.campaign_id)
    if record is None:
        raise CampaignNotFound()
    numbers = await campaign_stats(store, scope.account_group_id, scope.campaign_id)
    order = [step.get("id") for step in record.definition.get("steps", [])]
    step_ids = [step for step in order if step in numbers.steps] + sorted(
        set(numbers.steps) - set(order)
    )
    return CampaignStatsSuccessResponse(
        data=CampaignStats(
            campaign_id=scope.campaign_id,
            enrolled=numbers.enrolled,
            total=OutcomeCounts.of(numbers.total),
            steps=[
                StepStats(step_id=step_id, **OutcomeCounts.of(numbers.steps[step_id]).__dict__)
                for step_id in step_ids
            ],
        )
    )


@router.get(
    "/{campaignId}",
    summary="Read a campaign",
    response_description="The campaign as stored.",
    responses=error_responses(*AUTHENTICATED, CAMPAIGN_NOT_FOUND),
)
async def get_campaign(scope: CampaignReader, store: StoreDep) -> CampaignSuccessResponse:
    """Returns the campaign as stored: its definition as the PUT accepted it (the webhook
    without its secret), its ids, when it was created and last replaced, and whether it is
    paused."""
    record = await store.get_campaign(scope.account_group_id, scope.campaign_id)
    if record is None:
        raise CampaignNotFound()
    return CampaignSuccessResponse(data=campaign_of(record))


async def _set_paused(
    scope: CampaignScope, store: StoreDep, instances: InstancesDep, *, paused: bool
) -> CampaignSuccessResponse:
    """Records the pause (or its end) in the store, then tells the running instances in one
    batch signal. The store is what holds deliveries back (read before every hand-over), so a
    failed signal is logged, not raised: the pause holds, and held deliveries find the resume
    within `workflows.campaign.PAUSE_RECHECK`."""
    key_id = scope.principal.key_id
    record = await store.set_campaign_paused(
        scope.account_group_id, scope.campaign_id, paused_by=key_id if paused else None
    )
    if record is None:
        raise CampaignNotFound()
    signal = "campaign_paused" if paused else "campaign_resumed"
    at = record.paused_at if paused else record.updated_at
    event = CampaignPauseEvent(decided_by=key_id, at=at.isoformat() if at else "")
    try:
        job = await instances.signal_campaign(
            scope.account_group_id, scope.campaign_id, signal, event
        )
        logger.info("campaign %s: %s sent to its instances (%s)", scope.campaign_id, signal, job)
    except ApiError as error:
        logger.warning(
            "campaign %s: %s recorded, but its instances could not be signalled (%s)",
            scope.campaign_id,
            signal,
            error.message,
        )
    return CampaignSuccessResponse(data=campaign_of(record))


@router.post(
    "/{campaignId}/pause",
    summary="Pause a campaign",
    response_description="The campaign, paused (`paused: true`).",
    responses=error_responses(*AUTHENTICATED, CAMPAIGN_NOT_FOUND),
)
async def pause_campaign(
    scope: CampaignWriter, store: StoreDep, instances: InstancesDep
) -> CampaignSuccessResponse:
    """Stops the campaign's messages from going out; idempotent (pausing a paused campaign
    answers the same).

    From the 200 on, no message of the campaign is handed over (the flag is read from the store
    right before each hand-over); gates stay approvable, enrolments are accepted, and approved
    messages wait, `workflowStatus` `pending`. The campaign reads back `paused: true`.
    """
    return await _set_paused(scope, store, instances, paused=True)


@router.post(
    "/{campaignId}/resume",
    summary="Resume a paused campaign",
    response_description="The campaign, running (`paused: false`).",
    responses=error_responses(*AUTHENTICATED, CAMPAIGN_NOT_FOUND),
)
async def resume_campaign(
    scope: CampaignWriter, store: StoreDep, instances: InstancesDep
) -> CampaignSuccessResponse:
    """Lets the campaign's messages go out again; idempotent (resuming a running campaign
    answers the same).

    Held messages go out again, each taking its mailbox slot (so a mailbox's cap and spacing
    spread them over the window) and only inside the lead's send window.
    """
    return await _set_paused(scope, store, instances, paused=False)
