"""The REST API: campaigns, enrolment, lead status and the approval endpoint."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from temporalio.client import Client

from activities import templates
from api import error_handlers
from api.bodylimit import BodyLimitMiddleware
from api.head import add_head_routes
from api.instances import WorkflowInstances
from api.openapi import document_the_envelope, operation_id
from api.ratelimit import KeyRateLimiter
from api.review_queue import PageTokens
from api.routes import (
    campaigns,
    codec,
    health,
    inbound,
    suppressions,
    unsubscribe,
    workflow_instances,
)
from api.schemas import MAX_REQUEST_BODY_BYTES
from api.tracing import TraceMiddleware
from campaign_engine.codec import EncryptionCodec, codec_for
from campaign_engine.keys import KeyRing, load_pepper
from campaign_engine.observability import tracing_enabled
from campaign_engine.settings import Settings
from campaign_engine.store import Store
from campaign_engine.temporal import connect
from campaign_engine.unsubscribe import load_unsubscribe_key
from inbound.pipeline import InboundPipeline, PipelineSettings


def create_app(settings: Settings, *, temporal: Client | None = None) -> FastAPI:
    """The ASGI app. Without `temporal`, it connects lazily: it starts while Temporal is down."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        store = await Store.open(settings.resolved_database_url)
        client = temporal or await connect(settings, lazy=True)
        app.state.settings = settings
        app.state.store = store
        app.state.keyring = KeyRing(
            store, load_pepper(settings), cache_seconds=settings.api_key_cache_seconds
        )
        app.state.unsubscribe_key = load_unsubscribe_key(settings)
        app.state.page_tokens = PageTokens(load_pepper(settings))
        app.state.rate_limiter = KeyRateLimiter(
            settings.rate_limit,
            settings.resolved_rate_limit_storage_uri,
            settings.rate_limit_storage_timeout_seconds,
        )
        app.state.temporal = client
        # The codec server decrypts with the very codec this process's client encrypts with.
        client_codec = client.data_converter.payload_codec
        app.state.codec = (
            client_codec if isinstance(client_codec, EncryptionCodec) else codec_for(settings)
        )
        app.state.instances = WorkflowInstances(
            client, settings.task_queue, settings.temporal_rpc_timeout_seconds
        )
        app.state.inbound_pipeline = InboundPipeline(
            store,
            client,
            app.state.unsubscribe_key,
            PipelineSettings.from_settings(settings),
        )
        try:
            with templates.render_pool_held():
                yield
        finally:
            await store.close()

    app = FastAPI(
        title="Campaign engine",
        version="0.1.0",
        description="Per-lead outreach campaigns as durable Temporal workflows.",
        lifespan=lifespan,
        # A trailing slash gets the envelope (404), not a bare 307 before authentication.
        redirect_slashes=False,
        # A body without `Content-Type` is read as JSON (a declared non-JSON type is a 415:
        # api/content_type.py), so its errors describe the JSON, not a missing header.
        strict_content_type=False,
        # Short, stable operation ids for generated clients (api/openapi.py).
        generate_unique_id_function=operation_id,
    )
    app.add_middleware(
        BodyLimitMiddleware,
        max_bytes=MAX_REQUEST_BODY_BYTES,
        # Raw inbound mail is bounded by its own setting (25 MB at most), not the JSON limit.
        path_limits=[(inbound.PATH_PATTERN, settings.inbound_max_message_bytes)],
    )
    app.add_middleware(codec.CodecCorsMiddleware, settings=settings)
    app.add_middleware(TraceMiddleware)
    if tracing_enabled():
        # Imported only when tracing: the instrumentation costs nothing when it is off.
        from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

        # A span per request (outermost, so TraceMiddleware reads its trace id); no extra spans
        # per ASGI message.
        FastAPIInstrumentor.instrument_app(app, exclude_spans=["receive", "send"])
    error_handlers.install(app)
    for router in (
        health.router,
        campaigns.router,
        workflow_instances.router,
        suppressions.router,
        unsubscribe.router,
        inbound.router,
    ):
        add_head_routes(router)
        app.include_router(router)
    app.include_router(codec.router)
    document_the_envelope(app)
    return app
