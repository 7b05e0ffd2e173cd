"""Per-API-key request budgets through the `limits` library (moving window)."""

from __future__ import annotations

import math
import time

from limits import parse
from limits.aio.strategies import MovingWindowRateLimiter
from limits.storage import storage_from_string

from api.errors import RateLimited


class KeyRateLimiter:
    def __init__(self, rate: str, storage_uri: str) -> None:
        self._item = parse(rate)
        if not storage_uri.startswith("async+"):
            storage_uri = f"async+{storage_uri}"
        self._limiter = MovingWindowRateLimiter(storage_from_string(storage_uri))

    async def hit(self, key_id: str) -> None:
        """Counts one request against the key's budget; raises `RateLimited` once it is spent."""
        if await self._limiter.hit(self._item, key_id):
            return
        stats = await self._limiter.get_window_stats(self._item, key_id)
        retry_after = max(1, math.ceil(stats.reset_time - time.time()))
        raise RateLimited(
            f"Rate limit of {self._item} per API key exceeded; retry in {retry_after} s",
            headers={
                "Retry-After": str(retry_after),
                "X-RateLimit-Limit": str(self._item.amount),
                "X-RateLimit-Remaining": str(stats.remaining),
                "X-RateLimit-Reset": str(math.ceil(stats.reset_time)),
            },
        )
