"""Campaign definitions: the steps and templates each enrolled lead runs through."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Response, status

from activities import egress, templates
from api.content_type import JsonBodyRoute
from api.deps import CampaignScope, SettingsDep, StoreDep, campaign_scope
from api.errors import (
    BODY_ERROR_RESPONSES,
    ERROR_RESPONSES,
    CampaignTooLarge,
    NotFound,
    ValidationFailed,
    validation_failed,
)
from api.payload_limits import PayloadBudgetExceeded, check_campaign_size
from api.schemas import (
    MAX_BODY_CHARS,
    MAX_STEPS,
    MAX_SUBJECT_CHARS,
    Campaign,
    CampaignBody,
    CampaignSuccessResponse,
)
from campaign_engine.keys import Permission
from campaign_engine.settings import Settings
from campaign_engine.store import CampaignRecord
from workflows.types import CampaignSnapshot, CampaignStep

router = APIRouter(
    prefix="/v1/accounts/{accountGroupId}/campaigns", tags=["campaigns"], route_class=JsonBodyRoute
)


def campaign_of(record: CampaignRecord) -> Campaign:
    webhook = record.definition.get("webhook")
    return Campaign.model_validate(
        {
            **record.definition,
            # The signing secret stays in the store: never in a response.
            "webhook": {"url": webhook["url"]} if webhook else None,
            "accountGroupId": record.account_group_id,
            "campaignId": record.campaign_id,
            "createdAt": record.created_at,
            "updatedAt": record.updated_at,
        }
    )


def snapshot_of(campaign: CampaignBody) -> CampaignSnapshot:
    """What an instance runs on: the campaign as the workflow's plain types (no secret)."""
    return CampaignSnapshot(
        name=campaign.name,
        steps=[
            CampaignStep(
                id=step.id,
                subject=step.subject,
                body=step.body,
                requires_approval=step.requires_approval,
                delay_seconds=step.delay.total_seconds(),
            )
            for step in campaign.steps
        ],
        approval_timeout_seconds=(
            campaign.approval_timeout.total_seconds() if campaign.approval_timeout else None
        ),
        webhook_url=str(campaign.webhook.url) if campaign.webhook else None,
    )


def check_fits_temporal(snapshot: CampaignSnapshot, settings: Settings) -> None:
    """Raises `CampaignTooLarge` (413) unless every instance of the campaign fits under
    Temporal's payload size limit (`api.payload_limits`)."""
    try:
        check_campaign_size(
            snapshot,
            limit_bytes=settings.temporal_blob_size_limit_bytes,
            max_steps=MAX_STEPS,
            max_subject_chars=MAX_SUBJECT_CHARS,
            max_body_chars=MAX_BODY_CHARS,
        )
    except PayloadBudgetExceeded as error:
        raise CampaignTooLarge(
            f"The campaign is too large: {error}. Shorten or remove steps.", details="steps"
        ) from error


async def check_templates_render(body: CampaignBody) -> None:
    """Renders every template once, for the worst-case lead, in the render pool; raises the
    400 that names each template that does not render within its budget."""
    checks = [
        check
        for index, step in enumerate(body.steps)
        for check in (
            templates.TemplateCheck(f"steps.{index}.subject", step.subject, MAX_SUBJECT_CHARS),
            templates.TemplateCheck(f"steps.{index}.body", step.body, MAX_BODY_CHARS),
        )
    ]
    failures = await templates.check_templates(checks)
    if failures:
        raise validation_failed(
            [
                {"loc": ("body", *field.split(".")), "msg": f"template does not render: {why}"}
                for field, why in failures.items()
            ]
        )


@router.put(
    "/{campaignId}",
    responses={**BODY_ERROR_RESPONSES, 201: {"model": CampaignSuccessResponse}},
)
async def put_campaign(
    body: CampaignBody,
    scope: Annotated[CampaignScope, Depends(campaign_scope(Permission.CAMPAIGNS_WRITE))],
    store: StoreDep,
    settings: SettingsDep,
    response: Response,
) -> CampaignSuccessResponse:
    """Create or replace a campaign; running instances keep the version they were enrolled with.

    The campaign is checked once, here: its webhook's destination (400), its size against
    Temporal's payload limit (413), then each template rendered for a lead with every field at
    its longest (400 naming the field). The store keeps what was accepted; reads and enrolments
    never render it again.
    """
    if body.webhook is not None:
        try:
            egress.check_url(
                str(body.webhook.url), allow_private=settings.webhook_allow_private_addresses
            )
        except egress.DestinationRefused as error:
            raise ValidationFailed(
                f"webhook.url: not a destination webhooks may reach: {error}",
                details="webhook.url",
            ) from error
    check_fits_temporal(snapshot_of(body), settings)
    await check_templates_render(body)
    definition = body.model_dump(mode="json", by_alias=True)
    if body.webhook is not None:
        definition["webhook"]["secret"] = body.webhook.secret.get_secret_value()
    record, created = await store.put_campaign(
        scope.account_group_id, scope.campaign_id, definition
    )
    if created:
        response.status_code = status.HTTP_201_CREATED
    return CampaignSuccessResponse(data=campaign_of(record))


@router.get("/{campaignId}", responses=ERROR_RESPONSES)
async def get_campaign(
    scope: Annotated[CampaignScope, Depends(campaign_scope(Permission.CAMPAIGNS_READ))],
    store: StoreDep,
) -> CampaignSuccessResponse:
    """Read a campaign's definition."""
    record = await store.get_campaign(scope.account_group_id, scope.campaign_id)
    if record is None:
        raise NotFound("No such campaign", code="CAMPAIGN_NOT_FOUND")
    return CampaignSuccessResponse(data=campaign_of(record))
