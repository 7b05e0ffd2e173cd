"""Suppressions: unsubscribes that reached a caller through another channel."""

from __future__ import annotations

from fastapi import APIRouter, Response, status

from api.content_type import JsonBodyRoute
from api.deps import AccountWriter, InstancesDep, StoreDep, UnsubscribeKeyDep
from api.openapi import AUTHENTICATED, JSON_BODY, error_responses
from api.schemas import Suppression, SuppressionBody, SuppressionSuccessResponse
from api.suppressions import suppress
from campaign_engine import unsubscribe

router = APIRouter(
    route_class=JsonBodyRoute,
    prefix="/v1/accounts/{accountGroupId}/suppressions",
    tags=["suppressions"],
)

API_SOURCE = "api"


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    summary="Suppress a lead in the account group",
    responses={
        200: {
            "model": SuppressionSuccessResponse,
            "description": "The lead was suppressed already; the first record stays",
        },
        201: {"description": "The suppression was recorded now."},
        **error_responses(*AUTHENTICATED, *JSON_BODY),
    },
)
async def add_suppression(
    body: SuppressionBody,
    scope: AccountWriter,
    response: Response,
    store: StoreDep,
    instances: InstancesDep,
    key: UnsubscribeKeyDep,
) -> SuppressionSuccessResponse:
    """Records that a lead unsubscribed through another channel: `201` when recorded now, `200`
    when it was suppressed already (the first record stays). Its open instances get
    `lead_unsubscribed` (who: the key id); later enrolments in any campaign of the group are
    `409 LEAD_SUPPRESSED`, and no message waiting at a gate is sent. The address, when given,
    is stored only as a keyed hash. Operators lift suppressions with `campaign-engine
    suppressions lift`."""
    email_hash = unsubscribe.email_hash(key, body.email) if body.email else None
    done = await suppress(
        store,
        instances,
        account_group_id=scope.account_group_id,
        lead_id=body.lead_id,
        email_hash=email_hash,
        source=API_SOURCE,
        decided_by=scope.principal.key_id,
        note=body.note,
    )
    if not done.created:
        response.status_code = status.HTTP_200_OK
    row = done.row
    return SuppressionSuccessResponse(
        data=Suppression(
            account_group_id=row.account_group_id,
            lead_id=row.lead_id,
            has_email=row.email_hash is not None,
            source=row.source,
            decided_by=row.decided_by,
            note=row.note,
            created_at=row.created_at,
            open_instances_signalled=done.signalled,
        )
    )
