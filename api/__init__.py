"""The REST API: campaigns, enrolment, lead status and the approval endpoint."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi_offline import FastAPIOffline
from temporalio.client import Client
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from activities import templates
from api import error_handlers
from api.bodylimit import BodyLimitMiddleware, PathLimit
from api.head import add_head_routes
from api.instances import WorkflowInstances
from api.openapi import document_the_envelope, operation_id
from api.ratelimit import AuthFailureThrottle, KeyRateLimiter, rate_limit_storage
from api.review_queue import PageTokens
from api.routes import (
    campaigns,
    codec,
    enrolment_batches,
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
from campaign_engine.observability import export_pending_spans, tracing_enabled
from campaign_engine.settings import Settings
from campaign_engine.store import Store
from campaign_engine.temporal import connect
from campaign_engine.unsubscribe import load_unsubscribe_key
from campaign_engine.webhook_secrets import WebhookSecrets
from inbound.pipeline import InboundPipeline, PipelineSettings

CREDENTIAL_HEADERS = ("authorization", "x-api-key", "cookie", "set-cookie", "proxy-authorization")
"""Request and response headers that carry credentials: redacted in captured span attributes."""


def create_app(settings: Settings, *, temporal: Client | None = None) -> FastAPI:
    """The ASGI app. Without `temporal`, it connects lazily: it starts while Temporal is down."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        webhook_secrets = WebhookSecrets.for_settings(settings)
        store = await Store.open(settings.resolved_database_url, webhook_secrets=webhook_secrets)
        client = temporal or await connect(settings, lazy=True)
        app.state.settings = settings
        app.state.store = store
        app.state.webhook_secrets = webhook_secrets
        app.state.keyring = KeyRing(
            store, load_pepper(settings), cache_seconds=settings.api_key_cache_seconds
        )
        app.state.unsubscribe_key = load_unsubscribe_key(settings)
        app.state.page_tokens = PageTokens(load_pepper(settings))
        limits_storage = rate_limit_storage(
            settings.resolved_rate_limit_storage_uri, settings.rate_limit_storage_timeout_seconds
        )
        app.state.rate_limiter = KeyRateLimiter(
            settings.rate_limit, limits_storage, settings.rate_limit_storage_timeout_seconds
        )
        app.state.auth_failure_throttle = AuthFailureThrottle(
            settings.auth_failure_limit,
            limits_storage,
            settings.rate_limit_storage_timeout_seconds,
        )
        app.state.enrolment_limiter = KeyRateLimiter(
            settings.enrolment_rate_limit,
            # Its own counters: it is keyed by key id too.
            rate_limit_storage(
                settings.resolved_rate_limit_storage_uri,
                settings.rate_limit_storage_timeout_seconds,
            ),
            settings.rate_limit_storage_timeout_seconds,
            what="Enrolment budget",
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
            # The last requests' spans, before uvicorn ends the process by the signal it handled.
            export_pending_spans()

    # FastAPI's own app, with `/docs` (Swagger UI) and `/redoc` loading their scripts and styles
    # from the installed `fastapi_offline` package (`/static-offline-docs/`), not a CDN: they
    # render on a machine without internet (tests/test_offline_docs.py).
    app = FastAPIOffline(
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
        path_limits=[
            PathLimit(
                inbound.PATH_PATTERN,
                settings.inbound_max_message_bytes,
                "CAMPAIGN_ENGINE_INBOUND_MAX_MESSAGE_BYTES",
            )
        ],
    )
    app.add_middleware(codec.CodecCorsMiddleware, settings=settings)
    app.add_middleware(TraceMiddleware)
    if settings.trusted_proxies:
        # The client address (failed-authentication budget, the codec's loopback check) is the
        # one a trusted proxy names in `X-Forwarded-For`, read right to left past trusted hops;
        # from any other peer the header is ignored. The server itself reads no proxy headers
        # (`entrypoints.servers.http_server`). Outermost: every layer sees the client's address.
        app.add_middleware(ProxyHeadersMiddleware, trusted_hosts=settings.trusted_proxies)
    if tracing_enabled():
        # Imported only when tracing: the instrumentation costs nothing when it is off.
        from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

        # A span per request (outermost, so TraceMiddleware reads its trace id); no extra spans
        # per ASGI message.
        from opentelemetry.util.http import (
            OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SANITIZE_FIELDS,
            get_custom_headers,
        )

        # Headers are captured only when `OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_*` asks; the
        # ones carrying credentials are then always redacted, besides any the operator names.
        FastAPIInstrumentor.instrument_app(
            app,
            exclude_spans=["receive", "send"],
            http_capture_headers_sanitize_fields=[
                *CREDENTIAL_HEADERS,
                *get_custom_headers(OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SANITIZE_FIELDS),
            ],
        )
    error_handlers.install(app)
    for router in (
        health.router,
        campaigns.router,
        # Before the instance routes: `…/batch` is not the instance id `batch`.
        enrolment_batches.router,
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
