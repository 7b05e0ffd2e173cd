"""Dependencies shared by the routes: the key's principal, rate limits, and scoped path ids.

FastAPI resolves a route's dependencies before its own path parameters, and a dependency's
sub-dependencies before the dependency's parameters. The scope dependencies below lean on that
for the documented order: 401 (key) → 429 (rate) → 400 (ids) → 403 (permission, account group);
a client address past its budget of failed authentications is a 429 before its key is checked.
That is why `authenticate` stays a dependency of its own under the scope dependencies: folded
into the dependency that declares the ids, a malformed id would skip it and answer 400 before 401
(FastAPI does not call a dependency whose own parameters fail validation).

Every dependency is an `async def`, even the getters that only read `app.state`: FastAPI runs a
plain `def` dependency in its thread pool, a thread hop per request for each. The approve route's
one getter cost ~150 µs of CPU that way, 40 % of its dependency resolution
(`bench/api_overhead.py`, docs/performance-history.md). `tests/test_dependencies.py` keeps every
route's dependencies and endpoint off the thread pool.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Path, Request, Response
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from temporalio.client import Client

from api.errors import AccountGroupAccessDenied, MissingPermission, Unauthorized
from api.instances import WorkflowInstances
from api.ratelimit import AuthFailureThrottle, KeyRateLimiter
from api.review_queue import PageTokens
from api.schemas import EXAMPLE_ID
from campaign_engine import logs
from campaign_engine.ids import OBJECT_ID_PATTERN, InstanceRef
from campaign_engine.keys import KeyRing, Permission, Principal
from campaign_engine.settings import Settings
from campaign_engine.store import Store
from campaign_engine.webhook_secrets import WebhookSecrets
from inbound.pipeline import InboundPipeline

_bearer = HTTPBearer(auto_error=False, description="`Authorization: Bearer <API key>`")
_api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="The API key.")


async def get_settings(request: Request) -> Settings:
    """The process's settings (set by the app's lifespan)."""
    settings: Settings = request.app.state.settings
    return settings


async def get_webhook_secrets(request: Request) -> WebhookSecrets:
    """The process's sealer of webhook secrets (built by the app's lifespan)."""
    sealer: WebhookSecrets = request.app.state.webhook_secrets
    return sealer


async def get_store(request: Request) -> Store:
    """The process's store (opened by the app's lifespan)."""
    store: Store = request.app.state.store
    return store


async def get_temporal(request: Request) -> Client:
    """The process's Temporal client (lazy: it connects on first use)."""
    client: Client = request.app.state.temporal
    return client


async def get_instances(request: Request) -> WorkflowInstances:
    """The process's calls to workflow instances (`api.instances`)."""
    instances: WorkflowInstances = request.app.state.instances
    return instances


async def get_unsubscribe_key(request: Request) -> bytes:
    """The HMAC key of unsubscribe tokens and suppressed e-mail hashes (`unsubscribe`)."""
    key: bytes = request.app.state.unsubscribe_key
    return key


async def get_page_tokens(request: Request) -> PageTokens:
    """The process's review-queue page token signer (keyed from the key pepper)."""
    tokens: PageTokens = request.app.state.page_tokens
    return tokens


async def get_inbound_pipeline(request: Request) -> InboundPipeline:
    """The process's inbound pipeline (`inbound.pipeline`)."""
    pipeline: InboundPipeline = request.app.state.inbound_pipeline
    return pipeline


SettingsDep = Annotated[Settings, Depends(get_settings)]
UnsubscribeKeyDep = Annotated[bytes, Depends(get_unsubscribe_key)]
PageTokensDep = Annotated[PageTokens, Depends(get_page_tokens)]
StoreDep = Annotated[Store, Depends(get_store)]
WebhookSecretsDep = Annotated[WebhookSecrets, Depends(get_webhook_secrets)]
TemporalDep = Annotated[Client, Depends(get_temporal)]
InstancesDep = Annotated[WorkflowInstances, Depends(get_instances)]
InboundPipelineDep = Annotated[InboundPipeline, Depends(get_inbound_pipeline)]


async def authenticate(
    request: Request,
    response: Response,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    api_key: Annotated[str | None, Depends(_api_key_header)],
) -> Principal:
    """The principal of the request's key (`Authorization: Bearer` or `X-API-Key`), after its
    rate limit: raises `AuthenticationThrottled` (429) when the client's address has spent its
    failed-authentication budget, `Unauthorized` (401, counted against that budget), then
    `RateLimited` (429). Puts the `X-RateLimit-*` headers on the response, the key id on the
    request's log fields."""
    async with failed_authentications_counted(request):
        principal = await _verify_key(request, bearer, api_key)
    request.state.key_id = principal.key_id
    logs.bind(key_id=principal.key_id)
    limiter: KeyRateLimiter = request.app.state.rate_limiter
    headers = await limiter.hit(principal.key_id)
    # On the route's response, and (through request.state) on an error raised after this point.
    response.headers.update(headers)
    request.state.rate_limit_headers = headers
    return principal


def client_address(request: Request) -> str:
    """The client's IP address: the socket's peer, or the address a trusted proxy named
    (`trusted_proxies`: uvicorn's `ProxyHeadersMiddleware` rewrites the peer, `api.create_app`);
    never `X-Forwarded-For` from anyone else."""
    return request.client.host if request.client else "unknown"


def failed_authentications_counted(request: Request) -> AbstractAsyncContextManager[None]:
    """Around an authentication: 429 first when the client's address has spent its budget of
    failures, and an `Unauthorized` raised inside counted against it (`AuthFailureThrottle`)."""
    throttle: AuthFailureThrottle = request.app.state.auth_failure_throttle
    return throttle.guard(client_address(request))


async def _verify_key(
    request: Request,
    bearer: HTTPAuthorizationCredentials | None,
    api_key: str | None,
) -> Principal:
    key = bearer.credentials if bearer else api_key
    if not key:
        if request.headers.get("Authorization"):
            # Sent, but not as a Bearer token (`Basic …`, `Token …`, a bare `Bearer`).
            raise Unauthorized(
                "The Authorization header must use the Bearer scheme: send "
                "`Authorization: Bearer <key>` or `X-API-Key: <key>`"
            )
        raise Unauthorized(
            "Missing API key: send `Authorization: Bearer <key>` or `X-API-Key: <key>`"
        )
    keyring: KeyRing = request.app.state.keyring
    principal = await keyring.verify(key)
    if principal is None:
        raise Unauthorized()
    return principal


PrincipalDep = Annotated[Principal, Depends(authenticate)]

AccountGroupIdPath = Annotated[
    str,
    Path(
        alias="accountGroupId",
        pattern=OBJECT_ID_PATTERN,
        description="Account group ID that scopes the request.",
        examples=[EXAMPLE_ID],
    ),
]
CampaignIdPath = Annotated[
    str,
    Path(
        alias="campaignId",
        pattern=OBJECT_ID_PATTERN,
        description="Campaign ID that identifies the campaign to read or mutate.",
        examples=[EXAMPLE_ID],
    ),
]
WorkflowInstanceIdPath = Annotated[
    str,
    Path(
        alias="workflowInstanceId",
        pattern=OBJECT_ID_PATTERN,
        description="Unique identifier for the workflow instance.",
        examples=[EXAMPLE_ID],
    ),
]


SCOPE_PERMISSIONS: dict[Callable[..., object], Permission] = {}
"""The permission each scope dependency below checks, by the dependency: the OpenAPI document
names it on every operation that depends on one (`api.openapi`), so it cannot drift from the
check."""


@dataclass(frozen=True)
class AccountScope:
    """A request's verified key and the account group it may act on."""

    principal: Principal
    account_group_id: str


def account_scope(permission: Permission) -> Callable[..., Awaitable[AccountScope]]:
    """A dependency that checks the key, its budget, the account group id, then `permission`
    and the account group, in that order (401 → 429 → 400 → 403)."""

    async def dependency(
        principal: PrincipalDep, account_group_id: AccountGroupIdPath
    ) -> AccountScope:
        logs.bind(account_group_id=account_group_id)
        _authorize(principal, permission, account_group_id)
        return AccountScope(principal, account_group_id)

    SCOPE_PERMISSIONS[dependency] = permission
    return dependency


@dataclass(frozen=True)
class CampaignScope:
    """A request's verified key and the campaign it may act on."""

    principal: Principal
    account_group_id: str
    campaign_id: str


@dataclass(frozen=True)
class InstanceScope(CampaignScope):
    """A request's verified key and the workflow instance it may act on."""

    workflow_instance_id: str

    @property
    def ref(self) -> InstanceRef:
        """The instance, as `WorkflowInstances` takes it."""
        return InstanceRef(self.account_group_id, self.campaign_id, self.workflow_instance_id)


def _authorize(principal: Principal, permission: Permission, account_group_id: str) -> None:
    if permission not in principal.permissions:
        raise MissingPermission(permission.value)
    if account_group_id not in principal.account_groups:
        raise AccountGroupAccessDenied(account_group_id)


def campaign_scope(permission: Permission) -> Callable[..., Awaitable[CampaignScope]]:
    """A dependency that checks the key, its budget, the path ids, then `permission` and the
    account group, in that order (401 → 429 → 400 → 403)."""

    async def dependency(
        principal: PrincipalDep, account_group_id: AccountGroupIdPath, campaign_id: CampaignIdPath
    ) -> CampaignScope:
        logs.bind(account_group_id=account_group_id, campaign_id=campaign_id)
        _authorize(principal, permission, account_group_id)
        return CampaignScope(principal, account_group_id, campaign_id)

    SCOPE_PERMISSIONS[dependency] = permission
    return dependency


def instance_scope(permission: Permission) -> Callable[..., Awaitable[InstanceScope]]:
    """As `campaign_scope`, with the workflow instance id of the path too."""

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

    SCOPE_PERMISSIONS[dependency] = permission
    return dependency


AccountWriter = Annotated[AccountScope, Depends(account_scope(Permission.CAMPAIGNS_WRITE))]
CampaignReader = Annotated[CampaignScope, Depends(campaign_scope(Permission.CAMPAIGNS_READ))]
CampaignWriter = Annotated[CampaignScope, Depends(campaign_scope(Permission.CAMPAIGNS_WRITE))]
CampaignExecutor = Annotated[CampaignScope, Depends(campaign_scope(Permission.CAMPAIGNS_EXECUTE))]
InstanceReader = Annotated[InstanceScope, Depends(instance_scope(Permission.CAMPAIGNS_READ))]
InstanceExecutor = Annotated[InstanceScope, Depends(instance_scope(Permission.CAMPAIGNS_EXECUTE))]
InboundWriter = Annotated[AccountScope, Depends(account_scope(Permission.INBOUND_WRITE))]
