"""Per-API-key request budgets through the `limits` library (moving window).

Counters live in memory (one budget per process) or in Redis (one budget shared by every API
process that points at it).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time

from limits import parse
from limits.aio.strategies import MovingWindowRateLimiter
from limits.errors import StorageError
from limits.storage import storage_from_string

from api.errors import RateLimited

logger = logging.getLogger("campaign_engine.api")

_REDIS_SCHEMES = ("redis", "rediss", "redis+unix", "valkey", "valkeys", "valkey+unix")


class KeyRateLimiter:
    """One request budget per API key id, counted in a moving window.

    `rate` is in the `limits` notation (`120/minute`; `ValueError` if unreadable);
    `storage_uri` names where counters live (`memory://`, `redis://host:6379`; the `async+`
    form is used either way); `timeout_seconds` bounds each `hit`'s wait on that storage.
    """

    def __init__(
        self, rate: str, storage_uri: str, timeout_seconds: float, *, what: str = "Rate limit"
    ) -> None:
        """`what` names the budget in the 429's message (`Rate limit`, `Enrolment budget`)."""
        self._item = parse(rate)
        self._what = what
        self._timeout = timeout_seconds
        scheme = storage_uri.removeprefix("async+").partition("://")[0]
        if not storage_uri.startswith("async+"):
            storage_uri = f"async+{storage_uri}"
        options: dict[str, float] = {}
        if scheme in _REDIS_SCHEMES:
            # Without these a Redis that accepts connections but never answers would hold the
            # request until the kernel gives up; the overall bound in `hit` caps the retries too.
            options = {"connect_timeout": timeout_seconds, "stream_timeout": timeout_seconds}
        self._limiter = MovingWindowRateLimiter(
            storage_from_string(storage_uri, wrap_exceptions=True, **options)
        )

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
