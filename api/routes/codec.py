"""The codec server: Temporal's Web UI and CLI decrypt (and encrypt) payloads through the API.

Temporal's remote codec protocol (docs.temporal.io, "Codec Server"; temporalio/samples-go
`codec-server/README.md`): `POST <endpoint>/decode` and `POST <endpoint>/encode` take and answer
a `Payloads` message in protobuf's JSON form,

    {"payloads": [{"metadata": {"encoding": "<base64>", ...}, "data": "<base64>"}]}

with `Content-Type: application/json`; the caller names its namespace in `X-Namespace`. Our
endpoint is `http://<api>/codec` (`temporal server start-dev --ui-codec-endpoint`, the UI
container's `TEMPORAL_CODEC_ENDPOINT`, the CLI's `--codec-endpoint`). Success answers are that
bare JSON, as the protocol requires, not our envelope; failures are the envelope (the UI and CLI
only look at the status): 400 for a body that is not Payloads JSON, for another namespace, or for
a payload that does not decrypt (`PAYLOAD_DECODE_FAILED`, the message names the key id); 401/403
as everywhere (`payloads:decode` is the permission, for both endpoints).

Scopes (`campaign_engine.codec`): a payload sealed for an account group decodes only for a key
holding that group; one of the deployment scope (mailbox readers, payloads written before scopes)
only for a key of every account group (`keys create --all-account-groups`), a forwarded access
token (the Web UI's operators) or the local dev UI. Otherwise the whole request is a 403
`PAYLOAD_SCOPE_DENIED` naming the payload's group (or `deployment`), checked before anything is
decrypted. Payloads without our encoding come back as they are. `/encode` seals for the key's
account group when it holds exactly one, for the deployment scope for the operators above; a key
of several groups cannot say which and is refused (403 `PAYLOAD_SCOPE_DENIED`, `details`
`ambiguous`).

Who may call: an API key with `payloads:decode` (`Authorization: Bearer <key>` or `X-API-Key`,
the CLI's `--codec-auth 'Bearer <key>'`); with `codec_allow_local_ui_without_key` (on under
`make dev` only) also the dev server's own UI, recognised by its Origin from a loopback peer.
Browsers get CORS answers only for `codec_cors_origins` (and that local UI when it is allowed);
a preflight from any other origin is a 403 envelope.

The endpoints are not in the OpenAPI document: they speak Temporal's protocol, not our API's.
"""

from __future__ import annotations

import binascii
import ipaddress
import logging
from typing import Annotated, Any

import httpx
from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from google.protobuf import json_format
from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from temporalio.api.common.v1 import Payload, Payloads

from api.content_type import JSON_MEDIA_TYPE, is_json
from api.deps import SettingsDep, authenticate, failed_authentications_counted
from api.error_handlers import render
from api.errors import (
    CorsOriginNotAllowed,
    IdentityProviderUnavailable,
    MissingPermission,
    PayloadDecodeFailed,
    PayloadScopeDenied,
    Unauthorized,
    UnsupportedMediaType,
    ValidationFailed,
)
from api.ratelimit import KeyRateLimiter
from campaign_engine import logs
from campaign_engine.access_tokens import AccessTokenVerifier, TokenPrincipal, TokenRejected
from campaign_engine.codec import EncryptionCodec, PayloadKeyError, PayloadScopeError
from campaign_engine.keys import Permission, Principal, parse_key_id
from campaign_engine.settings import Settings

logger = logging.getLogger("campaign_engine.api")

PREFIX = "/codec"
ALLOWED_HEADERS = "Content-Type, X-Namespace, Authorization, X-API-Key"
PREFLIGHT_MAX_AGE_SECONDS = 600


router = APIRouter(prefix=PREFIX, include_in_schema=False)
_bearer = HTTPBearer(auto_error=False)
_api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False)


def local_ui_origins(settings: Settings) -> set[str]:
    """The dev server's own Web UI, as a browser names it in `Origin`."""
    return {
        f"http://{host}:{settings.temporal_ui_port}" for host in ("127.0.0.1", "localhost", "[::1]")
    }


def allowed_origins(settings: Settings) -> set[str]:
    """Origins that get CORS answers from the codec endpoints."""
    origins = set(settings.codec_cors_origins)
    if settings.codec_allow_local_ui_without_key:
        origins |= local_ui_origins(settings)
    return origins


def _loopback(host: str | None) -> bool:
    try:
        return host is not None and ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def is_local_ui(request: Request, settings: Settings) -> bool:
    """The local UI's own request, when the setting lets it in without a key.

    Any local process can send that Origin, hence both the loopback peer check and the setting
    being off by default (on under `make dev` only).
    """
    return (
        settings.codec_allow_local_ui_without_key
        and request.headers.get("origin", "").rstrip("/") in local_ui_origins(settings)
        and _loopback(request.client.host if request.client else None)
    )


def token_verifier(request: Request, settings: Settings) -> AccessTokenVerifier | None:
    """The app's verifier of forwarded access tokens, when `codec_oidc_*` is configured."""
    if not (settings.codec_oidc_jwks_url and settings.codec_oidc_issuer):
        return None
    verifier: AccessTokenVerifier | None = getattr(request.app.state, "token_verifier", None)
    if verifier is None:
        verifier = request.app.state.token_verifier = AccessTokenVerifier(
            jwks_url=settings.codec_oidc_jwks_url,
            issuer=settings.codec_oidc_issuer,
            audience=settings.codec_oidc_audience or "",
            scope=settings.codec_oidc_scope,
        )
    return verifier


async def _token_principal(
    request: Request, response: Response, verifier: AccessTokenVerifier, token: str
) -> TokenPrincipal:
    async with failed_authentications_counted(request):
        try:
            principal = await verifier.verify(token)
        except TokenRejected as error:
            if error.missing_scope:
                raise MissingPermission(verifier.scope) from None
            raise Unauthorized(str(error)) from None
        except httpx.HTTPError as error:
            raise IdentityProviderUnavailable(
                f"The identity provider's keys could not be fetched: {type(error).__name__}"
            ) from None
    logs.bind(token_subject=principal.subject)
    limiter: KeyRateLimiter = request.app.state.rate_limiter
    headers = await limiter.hit(f"oidc:{principal.subject}")
    response.headers.update(headers)
    request.state.rate_limit_headers = headers
    return principal


async def codec_caller(
    request: Request,
    response: Response,
    settings: SettingsDep,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    api_key: Annotated[str | None, Depends(_api_key_header)],
) -> Principal | TokenPrincipal | None:
    """Who calls: an API key's principal (401 without a valid key, 403 without
    `payloads:decode`), a forwarded access token's (when `codec_oidc_*` is set: 401 when it does
    not verify, 403 without the scope, 502 when the provider's keys cannot be fetched), or None
    for the local UI when allowed. Then the namespace: only ours is served (400 otherwise)."""
    if is_local_ui(request, settings):
        principal: Principal | TokenPrincipal | None = None
    elif (
        bearer is not None
        and parse_key_id(bearer.credentials) is None
        and (verifier := token_verifier(request, settings)) is not None
    ):
        principal = await _token_principal(request, response, verifier, bearer.credentials)
    else:
        principal = await authenticate(request, response, bearer, api_key)
        if Permission.PAYLOADS_DECODE not in principal.permissions:
            raise MissingPermission(Permission.PAYLOADS_DECODE.value)
    namespace = request.headers.get("x-namespace")
    # The client's namespace: the settings' may be overridden by TEMPORAL_NAMESPACE or a profile.
    served: str = request.app.state.temporal.namespace
    if namespace is not None and namespace != served:
        raise ValidationFailed(
            f"This codec serves namespace {served!r} only, not {namespace!r}",
            details="X-Namespace",
        )
    return principal


CallerDep = Annotated[Principal | TokenPrincipal | None, Depends(codec_caller)]


async def get_codec(request: Request) -> EncryptionCodec:
    """The app's codec (`app.state.codec`), the one the API's own Temporal client encrypts with."""
    codec: EncryptionCodec = request.app.state.codec
    return codec


CodecDep = Annotated[EncryptionCodec, Depends(get_codec)]


async def _payloads_of(request: Request) -> list[Payload]:
    content_type = request.headers.get("content-type")
    if content_type is not None and not is_json(content_type):
        raise UnsupportedMediaType(
            f"Codec requests are Payloads JSON: send `Content-Type: {JSON_MEDIA_TYPE}`",
            details=JSON_MEDIA_TYPE,
        )
    try:
        parsed = json_format.Parse(await request.body(), Payloads())
    except (json_format.ParseError, binascii.Error, UnicodeDecodeError, ValueError) as error:
        raise ValidationFailed(
            f'Body is not Payloads JSON ({{"payloads": [{{"metadata": {{}}, "data": ""}}]}}): '
            f"{error}",
            details="body",
        ) from None
    return list(parsed.payloads)


def _answer(payloads: list[Payload]) -> JSONResponse:
    body: dict[str, Any] = {"payloads": [json_format.MessageToDict(p) for p in payloads]}
    return JSONResponse(body)


def account_groups_of(caller: Principal | TokenPrincipal | None) -> frozenset[str] | None:
    """The account groups whose payloads `caller` may decode; None: every group's and the
    deployment scope's (a key of every account group, a forwarded token, the local dev UI)."""
    if isinstance(caller, Principal) and not caller.all_account_groups:
        return caller.account_groups
    return None


@router.post("/decode")
async def decode(request: Request, caller: CallerDep, codec: CodecDep) -> JSONResponse:
    """Decrypts each payload the caller's account groups cover; unencrypted ones come back
    unchanged. One payload outside them refuses the whole request (403), before decrypting."""
    payloads = await _payloads_of(request)
    groups = account_groups_of(caller)
    try:
        decoded = [codec.decrypt_for(payload, groups) for payload in payloads]
    except PayloadScopeError as error:
        scope = error.account_group or "deployment"
        logger.warning("codec: a payload of scope %s refused to a caller without it", scope)
        raise PayloadScopeDenied(str(error), scope) from None
    except PayloadKeyError as error:
        logger.warning("codec: cannot decode a payload under key id %r: %s", error.key_id, error)
        raise PayloadDecodeFailed(str(error), error.key_id) from None
    return _answer(decoded)


@router.post("/encode")
async def encode(request: Request, caller: CallerDep, codec: CodecDep) -> JSONResponse:
    """Encrypts each payload under the ring's first key (the UI's "send a signal" input):
    sealed for the key's one account group, or for the deployment scope for a caller of every
    group; a key of several groups is refused (403 `PAYLOAD_SCOPE_DENIED`, `ambiguous`)."""
    groups = account_groups_of(caller)
    if groups is None:
        scoped = codec.for_account_group(None)
    elif len(groups) == 1:
        scoped = codec.for_account_group(next(iter(groups)))
    else:
        raise PayloadScopeDenied(
            "This key holds several account groups: the codec cannot tell which group's key "
            "to seal with. Encode with a key of one account group (or an operator's key of "
            "every account group)",
            "ambiguous",
        )
    return _answer(await scoped.encode(await _payloads_of(request)))


class CodecCorsMiddleware:
    """CORS for the codec endpoints only, and only for the configured origins.

    A preflight (`OPTIONS` with `Origin` and `Access-Control-Request-Method`) from an allowed
    origin is answered 204 with the methods and headers the UI sends (Content-Type, X-Namespace,
    Authorization when it forwards a token); from any other origin, a 403 envelope without CORS
    headers, so the browser stops there. Answers to allowed origins' requests carry
    `Access-Control-Allow-Origin` (errors too, so the UI can read them). The rest of the API
    answers no CORS at all.
    """

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.origins = allowed_origins(settings)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """ASGI entry: passes non-codec paths through untouched; answers codec preflights itself;
        adds `Access-Control-Allow-Origin` to codec answers for allowed origins."""
        if scope["type"] != "http" or not str(scope["path"]).startswith(PREFIX + "/"):
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        origin = headers.get("origin", "").rstrip("/")
        allowed = origin in self.origins
        if scope["method"] == "OPTIONS" and origin and "access-control-request-method" in headers:
            await self._preflight(origin, allowed, scope, receive, send)
            return
        if not allowed:
            await self.app(scope, receive, send)
            return

        async def send_with_cors(message: Message) -> None:
            if message["type"] == "http.response.start":
                response_headers = MutableHeaders(scope=message)
                response_headers["Access-Control-Allow-Origin"] = origin
                response_headers["Access-Control-Allow-Credentials"] = "true"
                response_headers.add_vary_header("Origin")
            await send(message)

        await self.app(scope, receive, send_with_cors)

    async def _preflight(
        self, origin: str, allowed: bool, scope: Scope, receive: Receive, send: Send
    ) -> None:
        if not allowed:
            refused = render(CorsOriginNotAllowed(origin))
            refused.headers["Vary"] = "Origin"
            await refused(scope, receive, send)
            return
        answer = Response(
            status_code=204,
            headers={
                "Access-Control-Allow-Origin": origin,
                "Access-Control-Allow-Methods": "POST, OPTIONS",
                "Access-Control-Allow-Headers": ALLOWED_HEADERS,
                "Access-Control-Allow-Credentials": "true",
                "Access-Control-Max-Age": str(PREFLIGHT_MAX_AGE_SECONDS),
                "Vary": "Origin",
            },
        )
        await answer(scope, receive, send)
