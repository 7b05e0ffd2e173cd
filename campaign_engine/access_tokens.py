"""Access tokens that a Temporal Web UI with its own login forwards to the codec endpoints.

A UI configured with OIDC sign-in and `TEMPORAL_CODEC_PASS_ACCESS_TOKEN=true` sends the signed-in
user's access token as `Authorization: Bearer <JWT>` with every codec request. With
`codec_oidc_jwks_url`, `codec_oidc_issuer` and `codec_oidc_audience` set, the codec server accepts
such a token when its signature verifies against the identity provider's published keys (JWKS,
RFC 7517), its `iss` and `aud` are the configured ones, it has not expired (`exp`, `nbf`; RFC 7519)
and it grants `codec_oidc_scope` (default `payloads:decode`) in `scope`/`scp` (RFC 8693 §4.2: a
space-separated string) or in a `permissions` or `roles` list (as Auth0, Keycloak and Entra put
them). Only asymmetric algorithms are accepted, so a token can never be signed with a public key
taken for an HMAC secret.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

import httpx
import jwt

# RS*/PS*/ES*/EdDSA: signatures an IdP makes with a private key we never hold.
ALGORITHMS = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA"]
JWKS_TIMEOUT_SECONDS = 5.0
# The key set is cached; a token naming an unknown key id refreshes it at most this often, so a
# stream of forged key ids cannot make us hammer the identity provider.
JWKS_REFRESH_SECONDS = 60.0


class TokenRejected(Exception):
    """The token does not verify (signature, issuer, audience, lifetime) or lacks the scope.

    `missing_scope` tells the two apart: a valid token without the scope is a 403, anything else a
    401. The message says why, never the token.
    """

    def __init__(self, message: str, *, missing_scope: bool = False) -> None:
        super().__init__(message)
        self.missing_scope = missing_scope


@dataclass(frozen=True)
class TokenPrincipal:
    """Who a verified token speaks for: its `sub` (for logs and the rate limit)."""

    subject: str


class AccessTokenVerifier:
    """Verifies bearer JWTs against one identity provider's JWKS. See the module docstring."""

    def __init__(self, *, jwks_url: str, issuer: str, audience: str, scope: str) -> None:
        self._jwks_url = jwks_url
        self._issuer = issuer
        self._audience = audience
        self._scope = scope
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched_at = -JWKS_REFRESH_SECONDS
        self._lock = asyncio.Lock()

    @property
    def scope(self) -> str:
        """What a token must grant."""
        return self._scope

    async def verify(self, token: str) -> TokenPrincipal:
        """The token's principal. Raises TokenRejected; httpx.HTTPError when the JWKS cannot be
        fetched (the caller answers 502: the provider is down, the token may be fine)."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise TokenRejected("not a JWT") from None
        key = await self._key(str(header.get("kid", "")))
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=ALGORITHMS,
                audience=self._audience,
                issuer=self._issuer,
                options={"require": ["exp", "iss", "aud", "sub"]},
            )
        except jwt.PyJWTError as error:
            raise TokenRejected(f"access token rejected: {error}") from None
        if self._scope not in _granted(claims):
            raise TokenRejected(f"access token does not grant {self._scope}", missing_scope=True)
        return TokenPrincipal(subject=str(claims["sub"]))

    async def _key(self, key_id: str) -> jwt.PyJWK:
        if key_id not in self._keys:
            async with self._lock:
                if (
                    key_id not in self._keys
                    and time.monotonic() - self._fetched_at >= JWKS_REFRESH_SECONDS
                ):
                    await self._fetch()
        key = self._keys.get(key_id)
        if key is None:
            raise TokenRejected(f"access token signed with unknown key id {key_id!r}")
        return key

    async def _fetch(self) -> None:
        self._fetched_at = time.monotonic()
        async with httpx.AsyncClient(timeout=JWKS_TIMEOUT_SECONDS) as http:
            response = await http.get(self._jwks_url)
            response.raise_for_status()
        keys: dict[str, jwt.PyJWK] = {}
        for entry in response.json().get("keys", []):
            try:
                key = jwt.PyJWK.from_dict(entry)
            except jwt.PyJWTError:
                continue  # a key type or algorithm we do not use
            if key.key_id:
                keys[key.key_id] = key
        self._keys = keys


def _granted(claims: dict[str, Any]) -> set[str]:
    granted: set[str] = set()
    for name in ("scope", "scp", "permissions", "roles"):
        value = claims.get(name)
        if isinstance(value, str):
            granted.update(value.split())
        elif isinstance(value, list):
            granted.update(str(item) for item in value)
    return granted
