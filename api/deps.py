"""Dependencies shared by the routes: the key's principal, rate limits, and scoped path ids.

FastAPI resolves a route's dependencies before its own path parameters, and a dependency's
sub-dependencies before the dependency's parameters. The scope dependencies below lean on that
for the documented order: 401 (key) → 429 (rate) → 400 (ids) → 403 (permission, account group).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Path, Request, Response
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from temporalio.client import Client

from api.errors import Forbidden, Unauthorized
from api.ratelimit import KeyRateLimiter
from campaign_engine import logs
from campaign_engine.ids import OBJECT_ID_PATTERN
from campaign_engine.keys import KeyRing, Permission, Principal
from campaign_engine.settings import Settings
from campaign_engine.store import Store

_bearer = HTTPBearer(auto_error=False, description="`Authorization: Bearer <API key>`")
_api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="The API key.")


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_store(request: Request) -> Store:
    store: Store = request.app.state.store
    return store


def get_temporal(request: Request) -> Client:
    client: Client = request.app.state.temporal
    return client


SettingsDep = Annotated[Settings, Depends(get_settings)]
StoreDep = Annotated[Store, Depends(get_store)]
TemporalDep = Annotated[Client, Depends(get_temporal)]


async def authenticate(
    request: Request,
    response: Response,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    api_key: Annotated[str | None, Depends(_api_key_header)],
) -> Principal:
    key = bearer.credentials if bearer else api_key
    if not key:
        raise Unauthorized(
            "Missing API key: send `Authorization: Bearer <key>` or `X-API-Key: <key>`",
            headers={"WWW-Authenticate": "Bearer"},
        )
    keyring: KeyRing = request.app.state.keyring
    principal = await keyring.verify(key)
    if principal is None:
        raise Unauthorized("Invalid or revoked API key", headers={"WWW-Authenticate": "Bearer"})
    request.state.key_id = principal.key_id
    logs.bind(key_id=principal.key_id)
    limiter: KeyRateLimiter = request.app.state.rate_limiter
    headers = await limiter.hit(principal.key_id)
    # On the route's response, and (through request.state) on an error raised after this point.
    response.headers.update(headers)
    request.state.rate_limit_headers = headers
    return principal


PrincipalDep = Annotated[Principal, Depends(authenticate)]

AccountGroupIdPath = Annotated[
    str,
    Path(
        alias="accountGroupId",
        pattern=OBJECT_ID_PATTERN,
        description="Account group ID that scopes the request.",
    ),
]
CampaignIdPath = Annotated[
    str,
    Path(
        alias="campaignId",
        pattern=OBJECT_ID_PATTERN,
        description="Campaign ID that identifies the campaign to read or mutate.",
    ),
]
WorkflowInstanceIdPath = Annotated[
    str,
    Path(
        alias="workflowInstanceId",
        pattern=OBJECT_ID_PATTERN,
        description="Unique identifier for the workflow instance.",
    ),
]


@dataclass(frozen=True)
class CampaignScope:
    principal: Principal
    account_group_id: str
    campaign_id: str


@dataclass(frozen=True)
class InstanceScope(CampaignScope):
    workflow_instance_id: str


def _authorize(principal: Principal, permission: Permission, account_group_id: str) -> None:
    if permission not in principal.permissions:
        raise Forbidden(
            f"API key lacks the {permission.value} permission",
            code="MISSING_PERMISSION",
            details=permission.value,
        )
    if account_group_id not in principal.account_groups:
        raise Forbidden(
            f"API key has no access to account group {account_group_id}",
            code="ACCOUNT_GROUP_ACCESS_DENIED",
            details=account_group_id,
        )


def campaign_scope(permission: Permission) -> Callable[..., Awaitable[CampaignScope]]:
    async def dependency(
        principal: PrincipalDep, account_group_id: AccountGroupIdPath, campaign_id: CampaignIdPath
    ) -> CampaignScope:
        logs.bind(account_group_id=account_group_id, campaign_id=campaign_id)
        _authorize(principal, permission, account_group_id)
        return CampaignScope(principal, account_group_id, campaign_id)

    return dependency


def instance_scope(permission: Permission) -> Callable[..., Awaitable[InstanceScope]]:
    async def dependency(
        principal: PrincipalDep,
        account_group_id: AccountGroupIdPath,
        campaign_id: CampaignIdPath,
        workflow_instance_id: WorkflowInstanceIdPath,
    ) -> InstanceScope:
        logs.bind(
            account_group_id=account_group_id,
            campaign_id=campaign_id,
            workflow_instance_id=workflow_instance_id,
        )
        _authorize(principal, permission, account_group_id)
        return InstanceScope(principal, account_group_id, campaign_id, workflow_instance_id)

    return dependency
