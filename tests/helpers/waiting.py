"""Waiting for what another process does (a worker, a timer, visibility), with a useful failure."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


def _truthy(value: object) -> bool:
    return bool(value)


async def assert_eventually(
    probe: Callable[[], Awaitable[T]],
    until: Callable[[T], bool] = _truthy,
    *,
    within: float = 15.0,
    what: str | None = None,
) -> T:
    """Calls `probe` every 50 ms until `until(value)` holds; returns that value.

    Fails with an `AssertionError` naming `what` (or the probe) and the last value seen, so a
    timeout says what the system looked like instead of only "not in time".
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        value = await probe()
        if until(value):
            return value
        if loop.time() > deadline:
            name = what or getattr(probe, "__name__", "condition")
            raise AssertionError(f"{name} did not hold within {within} s; last seen: {value!r}")
        await asyncio.sleep(0.05)
