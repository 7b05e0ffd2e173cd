"""Liveness and readiness probes for orchestrators and load balancers; no API key needed."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from datetime import timedelta

from fastapi import APIRouter

from api.deps import SettingsDep, StoreDep, TemporalDep
from api.errors import NotReady
from api.openapi import error_responses
from api.schemas import (
    Health,
    HealthSuccessResponse,
    Readiness,
    ReadinessSuccessResponse,
)

router = APIRouter(tags=["health"])
logger = logging.getLogger("campaign_engine.api")


@router.get(
    "/healthz", summary="Liveness probe", response_description="The process is up and serving."
)
async def get_health() -> HealthSuccessResponse:
    """Answers `200` while the process is up and serving. Checks nothing else: a restart would
    not fix Temporal (`/readyz` checks it)."""
    return HealthSuccessResponse(data=Health())


@router.get(
    "/readyz",
    summary="Readiness probe",
    response_description="Temporal and the store answered: this process can serve.",
    responses=error_responses(NotReady),
)
async def get_readiness(
    settings: SettingsDep, store: StoreDep, temporal: TemporalDep
) -> ReadinessSuccessResponse:
    """Answers `200` when this process can serve: Temporal answers its health check and the
    store answers a query, each within `CAMPAIGN_ENGINE_READINESS_TIMEOUT_SECONDS`."""
    timeout = settings.readiness_timeout_seconds
    checks = {
        "temporal": temporal.service_client.check_health(timeout=timedelta(seconds=timeout)),
        "store": store.ping(),
    }
    # check_health bounds its RPC, but a lazy client connects first: wait_for bounds both.
    results = await asyncio.gather(
        *(_check(name, asyncio.wait_for(call, timeout)) for name, call in checks.items())
    )
    down = [name for name, up in zip(checks, results, strict=True) if not up]
    if down:
        raise NotReady(down)
    return ReadinessSuccessResponse(data=Readiness(checks=dict.fromkeys(checks, "ok")))


async def _check(name: str, call: Awaitable[object]) -> bool:
    try:
        result = await call
    except Exception as error:
        logger.warning("readiness: %s down (%s)", name, repr(error))
        return False
    # check_health answers False for a server that says it is not serving.
    return result is not False
