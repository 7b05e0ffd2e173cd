"""Campaign definitions: the steps and templates each enrolled lead runs through."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Response, status

from activities import egress
from api.content_type import JsonBodyRoute
from api.deps import CampaignScope, SettingsDep, StoreDep, campaign_scope
from api.errors import BODY_ERROR_RESPONSES, ERROR_RESPONSES, NotFound, ValidationFailed
from api.schemas import Campaign, CampaignBody, CampaignSuccessResponse
from campaign_engine.keys import Permission
from campaign_engine.store import CampaignRecord

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
    """Create or replace a campaign; running instances keep the version they were enrolled with."""
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
