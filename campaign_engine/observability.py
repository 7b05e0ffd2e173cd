"""Traces (OpenTelemetry, from the standard `OTEL_*` variables) and Prometheus `/metrics` endpoints.

Tracing is off unless the environment asks for an exporter: then no tracer provider is installed,
the API is not instrumented and Temporal clients get no tracing interceptor, so it costs nothing.
"""

from __future__ import annotations

import errno
import logging
import os
from collections.abc import Callable
from importlib.metadata import entry_points
from wsgiref.simple_server import WSGIServer

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from prometheus_client import start_http_server
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig

from campaign_engine.ports import PortInUse

logger = logging.getLogger(__name__)


def _traces_exporters() -> list[str]:
    """Exporter names from `OTEL_TRACES_EXPORTER`; an OTLP endpoint alone means `otlp`."""
    if os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return []
    names = [
        name.strip().lower()
        for name in os.environ.get("OTEL_TRACES_EXPORTER", "").split(",")
        if name.strip()
    ]
    if not names and (
        os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    ):
        names = ["otlp"]
    return [name for name in names if name != "none"]


def _load_exporter(name: str) -> SpanExporter:
    # `otlp` is OTLP over HTTP/protobuf here (port 4318): its exporter needs no gRPC stack. Other
    # installed exporters are found by their entry point name, as `opentelemetry-instrument` does.
    if name == "otlp":
        protocol = os.environ.get(
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
            os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
        )
        name = "otlp_proto_grpc" if protocol == "grpc" else "otlp_proto_http"
    found = entry_points(group="opentelemetry_traces_exporter", name=name)
    if not found:
        raise ValueError(f"OTEL_TRACES_EXPORTER: no span exporter named {name!r} is installed")
    factory: Callable[[], SpanExporter] = next(iter(found)).load()
    return factory()


def configure_tracing(default_service_name: str) -> bool:
    """Installs the process's tracer provider when `OTEL_*` asks for an exporter; True if so.

    `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_TRACES_SAMPLER` and the exporters' own
    variables (`OTEL_EXPORTER_OTLP_ENDPOINT`, headers, timeouts) are read by the SDK itself.
    """
    names = _traces_exporters()
    if not names:
        return False
    attributes = (
        {} if os.environ.get("OTEL_SERVICE_NAME") else {"service.name": default_service_name}
    )
    provider = TracerProvider(resource=Resource.create(attributes))
    for name in names:
        provider.add_span_processor(BatchSpanProcessor(_load_exporter(name)))
    trace.set_tracer_provider(provider)
    logger.info("tracing on: exporting spans to %s", ", ".join(names))
    return True


def flush_tracing() -> None:
    """Exports buffered spans now; for a process about to leave without finalization."""
    provider = trace.get_tracer_provider()
    if isinstance(provider, TracerProvider):
        provider.shutdown()


def export_pending_spans(timeout_millis: int = 5_000) -> None:
    """Exports the spans still buffered by the batch processors, keeping the provider running.

    For a server about to stop: uvicorn re-raises the SIGTERM it handled once it has shut down,
    so the process ends by the signal and neither `atexit` nor code after `Server.run` exports
    what the last requests recorded (seen: only the first batch of the API's spans reached
    the exporter). Its app's shutdown is the last place that runs.
    """
    provider = trace.get_tracer_provider()
    if isinstance(provider, TracerProvider):
        provider.force_flush(timeout_millis)


def tracing_enabled() -> bool:
    """Whether this process records spans (an SDK tracer provider is installed)."""
    return isinstance(trace.get_tracer_provider(), TracerProvider)


def serve_api_metrics(host: str, port: int | None) -> WSGIServer | None:
    """Serves the process's Prometheus registry on `http://host:port/metrics` (0/None: off).

    From a daemon thread: it never holds up the event loop, and dies with the process. Raises
    `PortInUse` when the port is taken.
    """
    if not port:
        return None
    try:
        server, _ = start_http_server(port, addr=host)
    except OSError as error:
        if error.errno != errno.EADDRINUSE:
            raise
        raise PortInUse(
            host, port, "CAMPAIGN_ENGINE_API_METRICS_PORT", zero_means="serve no metrics"
        ) from error
    logger.info("API metrics on http://%s:%d/metrics", host, port)
    return server


def worker_runtime(host: str, port: int | None) -> Runtime | None:
    """A Temporal runtime serving the SDK's metrics on `http://host:port/metrics` (0/None: none).

    Build it once per process: the runtime owns the port. Raises `PortInUse` when it is taken.
    """
    if not port:
        return None
    try:
        runtime = Runtime(
            telemetry=TelemetryConfig(metrics=PrometheusConfig(bind_address=f"{host}:{port}"))
        )
    except ValueError as error:
        # The SDK's core reports a failed bind as a ValueError carrying the OS error's text.
        if "Address already in use" not in str(error):
            raise
        raise PortInUse(
            host, port, "CAMPAIGN_ENGINE_WORKER_METRICS_PORT", zero_means="serve no metrics"
        ) from error
    logger.info("worker metrics on http://%s:%d/metrics", host, port)
    return runtime
