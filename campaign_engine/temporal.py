"""The one place that builds a Temporal client, for the API, the worker and the CLI."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import timedelta

from temporalio.client import Client, Interceptor
from temporalio.runtime import Runtime

from campaign_engine.codec import data_converter
from campaign_engine.observability import tracing_enabled
from campaign_engine.settings import Settings
from campaign_engine.temporal_tracing import CampaignTracingInterceptor

logger = logging.getLogger(__name__)


async def connect(
    settings: Settings, *, lazy: bool = False, runtime: Runtime | None = None
) -> Client:
    """Connects to the configured namespace.

    `lazy` defers the connection to the first call: the API then starts (and answers 502) while
    Temporal is down instead of refusing to start. `runtime` carries the worker's metrics.
    When the process traces, the client (and every worker built from it) propagates the trace
    through signals, queries, starts, the workflow and its activities. Every payload it writes is
    encrypted, and every one it reads decrypted, under the settings' payload key ring
    (`campaign_engine.codec`); a malformed ring raises `campaign_engine.codec.KeyRingError`.
    """
    interceptors: list[Interceptor] = [CampaignTracingInterceptor()] if tracing_enabled() else []
    return await Client.connect(
        settings.temporal_address,
        namespace=settings.temporal_namespace,
        lazy=lazy,
        connect_timeout=timedelta(seconds=settings.temporal_rpc_timeout_seconds),
        interceptors=interceptors,
        runtime=runtime,
        data_converter=data_converter(settings),
    )


async def connect_with_retry(
    settings: Settings, stop: asyncio.Event, *, runtime: Runtime | None = None
) -> Client | None:
    """Waits for Temporal instead of crashing; None when asked to stop first."""
    delay = 0.5
    while not stop.is_set():
        try:
            return await connect(settings, runtime=runtime)
        except RuntimeError as error:
            logger.warning(
                "Temporal at %s not reachable (%s); retrying in %.1f s",
                settings.temporal_address,
                error,
                delay,
            )
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), delay)
        delay = min(delay * 2, 10.0)
    return None
