"""Campaign definitions: the steps and templates each enrolled lead runs through."""

from __future__ import annotations

from fastapi import APIRouter, Response, status

from api.campaigns import (
    campaign_of,
    check_fits_temporal,
    check_templates_render,
    check_webhook,
    snapshot_of,
)
from api.content_type import JsonBodyRoute
from api.deps import CampaignReader, CampaignWriter, SettingsDep, StoreDep
from api.errors import CampaignNotFound
from api.openapi import BODY_ERROR_RESPONSES, ERROR_RESPONSES
from api.schemas import CampaignBody, CampaignSuccessResponse

router = APIRouter(
    prefix="/v1/accounts/{accountGroupId}/campaigns", tags=["campaigns"], route_class=JsonBodyRoute
)


@router.put(
    "/{campaignId}",
    responses={**BODY_ERROR_RESPONSES, 201: {"model": CampaignSuccessResponse}},
)
async def put_campaign(
    body: CampaignBody,
    scope: CampaignWriter,
    store: StoreDep,
    settings: SettingsDep,
    response: Response,
) -> CampaignSuccessResponse:
    """Create or replace a campaign (`campaigns:write`): 201 created, 200 replaced.

    Running instances keep the version they were enrolled with. The campaign is checked once,
    here (`api.campaigns`): webhook destination and templates 400 naming the field, size 413.
    """
    check_webhook(body, settings)
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
async def get_campaign(scope: CampaignReader, store: StoreDep) -> CampaignSuccessResponse:
    """Read a campaign's definition (`campaigns:read`); 404 `CAMPAIGN_NOT_FOUND`."""
    record = await store.get_campaign(scope.account_group_id, scope.campaign_id)
    if record is None:
        raise CampaignNotFound()
    return CampaignSuccessResponse(data=campaign_of(record))
