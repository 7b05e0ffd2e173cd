"""Request budgets through the `limits` library (moving window): per API key, and failed
authentications per client address.

Counters live in memory (one budget per process) or in Redis (one budget shared by every API
process that points at it); both budgets share the one storage.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from limits import parse
from limits.aio.storage import Storage
from limits.aio.strategies import MovingWindowRateLimiter
from limits.errors import StorageError
from limits.storage import storage_from_string

from api.errors import AuthenticationThrottled, RateLimited, Unauthorized

logger = logging.getLogger("campaign_engine.api")

_REDIS_SCHEMES = ("redis", "rediss", "redis+unix", "valkey", "valkeys", "valkey+unix")


def rate_limit_storage(storage_uri: str, timeout_seconds: float) -> Storage:
    """The async `limits` storage named by `storage_uri` (`memory://`, `redis://host:6379`; the
    `async+` form is used either way), its calls bounded by `timeout_seconds` where the storage
    is a server."""
    scheme = storage_uri.removeprefix("async+").partition("://")[0]
    if not storage_uri.startswith("async+"):
        storage_uri = f"async+{storage_uri}"
    options: dict[str, float] = {}
    if scheme in _REDIS_SCHEMES:
        # Without these a Redis that accepts connections but never answers would hold the
        # request until the kernel gives up; the overall bound in `hit` caps the retries too.
        options = {"connect_timeout": timeout_seconds, "stream_timeout": timeout_seconds}
    storage = storage_from_string(storage_uri, wrap_exceptions=True, **options)
    assert isinstance(storage, Storage)
    return storage


class KeyRateLimiter:
    """One request budget per API key id, counted in a moving window.

    `rate` is in the `limits` notation (`120/minute`; `ValueError` if unreadable);
    `storage` is where counters live (`rate_limit_storage`); `timeout_seconds` bounds each
    `hit`'s wait on that storage.
    """

    def __init__(
        self, rate: str, storage: Storage, timeout_seconds: float, *, what: str = "Rate limit"
    ) -> None:
        """`what` names the budget in the 429's message (`Rate limit`, `Enrolment budget`)."""
        self._item = parse(rate)
        self._what = what
        self._timeout = timeout_seconds
        self._limiter = MovingWindowRateLimiter(storage)

    async def hit(self, key_id: str, cost: int = 1) -> dict[str, str]:
        """Counts `cost` (one request, or a batch's rows) against the key's budget and returns
        its `X-RateLimit-*` headers; a hit that would overspend counts nothing.

        Raises `RateLimited` once the budget is spent. When the storage is down or slow the
        request is let through without headers: a rate-limit outage must not take the whole API
        down with it (Temporal and the store carry the work; this only guards it).
        """
        try:
            async with asyncio.timeout(self._timeout):
                allowed = await self._limiter.hit(self._item, key_id, cost=cost)
                stats = await self._limiter.get_window_stats(self._item, key_id)
        except (StorageError, TimeoutError) as error:
            logger.warning(
                "rate-limit storage unavailable (%s); request let through unlimited",
                error or type(error).__name__,
                extra={"key_id": key_id},
            )
            return {}
        headers = {
            "X-RateLimit-Limit": str(self._item.amount),
            "X-RateLimit-Remaining": str(stats.remaining),
            "X-RateLimit-Reset": str(math.ceil(stats.reset_time)),
        }
        if allowed:
            return headers
        retry_after = max(1, math.ceil(stats.reset_time - time.time()))
        raise RateLimited(
            f"{self._what} of {self._item} per API key exceeded; retry in {retry_after} s",
            headers={"Retry-After": str(retry_after), **headers},
        )


class AuthFailureThrottle:
    """A budget of failed authentications per client address, counted in a moving window.

    Every `401` a request earns (no key, a wrong, unknown or revoked key, an access token that
    does not verify) spends one unit of its client address's budget; once it is spent, every
    request from that address that needs authentication is refused with `429` and
    `Retry-After` *before* its credential is looked at — a right key included, or the throttle
    would still tell a guesser when it hit. The address is the socket's peer unless a trusted
    proxy rewrote it (`trusted_proxies`, uvicorn's `ProxyHeadersMiddleware`, `api.create_app`).

    `rate` in the `limits` notation (`60/minute`); `storage` shared with `KeyRateLimiter`
    (Redis: one budget per address across every API process); `timeout_seconds` bounds each
    wait on it. A storage outage lets requests through, as for the key budget.
    """

    def __init__(self, rate: str, storage: Storage, timeout_seconds: float) -> None:
        self._item = parse(rate)
        self._timeout = timeout_seconds
        self._limiter = MovingWindowRateLimiter(storage)

    @staticmethod
    def _key(address: str) -> str:
        # Apart from key ids (hex) in the same storage.
        return f"auth-failures/{address}"

    async def check(self, address: str) -> None:
        """Raises `AuthenticationThrottled` (429, `Retry-After`) when `address` has no failures
        left in the window; counts nothing."""
        key = self._key(address)
        try:
            async with asyncio.timeout(self._timeout):
                if await self._limiter.test(self._item, key):
                    return
                stats = await self._limiter.get_window_stats(self._item, key)
        except (StorageError, TimeoutError) as error:
            logger.warning(
                "rate-limit storage unavailable (%s); authentication not throttled",
                error or type(error).__name__,
            )
            return
        retry_after = max(1, math.ceil(stats.reset_time - time.time()))
        raise AuthenticationThrottled(
            f"Too many failed authentications from this address (more than {self._item}); "
            f"retry in {retry_after} s",
            headers={"Retry-After": str(retry_after)},
        )

    async def record_failure(self, address: str) -> None:
        """Spends one failure of `address`'s budget."""
        try:
            async with asyncio.timeout(self._timeout):
                await self._limiter.hit(self._item, self._key(address))
        except (StorageError, TimeoutError) as error:
            logger.warning(
                "rate-limit storage unavailable (%s); failed authentication not counted",
                error or type(error).__name__,
            )

    @asynccontextmanager
    async def guard(self, address: str) -> AsyncIterator[None]:
        """Around an authentication: `check` first (429 when throttled), then an `Unauthorized`
        raised inside is counted against `address` on its way out."""
        await self.check(address)
        try:
            yield
        except Unauthorized:
            await self.record_failure(address)
            raise
