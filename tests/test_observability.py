"""Traces, metrics and logs, observed through the real API, a real worker and real scrapes."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from prometheus_client.parser import text_string_to_metric_families
from temporalio.client import Client
from temporalio.worker import Replayer

from campaign_engine.logs import JsonFormatter
from campaign_engine.observability import serve_api_metrics, tracing_enabled
from campaign_engine.settings import Settings
from campaign_engine.store import Store
from campaign_engine.temporal import connect
from campaign_engine.temporal_tracing import CampaignTracingInterceptor
from entrypoints.children import die_with_parent
from entrypoints.devserver import free_port
from tests.helpers import (
    Api,
    Campaign,
    approve,
    assert_eventually,
    create_campaign,
    enrol_to_gate,
    handle_of,
    outbox_files,
    running_api,
    worker_process,
)
from worker import build_worker
from workflows.campaign import CampaignWorkflow

APPROVE_ROUTE = (
    "/v1/accounts/{accountGroupId}/campaigns/{campaignId}"
    "/workflow-instances/{workflowInstanceId}/approve"
)
CAMPAIGN_ROUTE = "/v1/accounts/{accountGroupId}/campaigns/{campaignId}"


# --- traces -------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def span_exporter() -> InMemorySpanExporter:
    """The session's tracer provider: a process gets one, so every tracing test shares it.

    From here on the session traces (as a process with `OTEL_*` set does): later tests run
    instrumented too, which is what production runs.
    """
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    assert tracing_enabled(), "another tracer provider was installed first"
    return exporter


@pytest.fixture
def spans(span_exporter: InMemorySpanExporter) -> InMemorySpanExporter:
    span_exporter.clear()
    return span_exporter


def _trace_id(span: ReadableSpan) -> str:
    assert span.context is not None
    return format(span.context.trace_id, "032x")


@pytest.fixture
async def traced_client(spans: InMemorySpanExporter, settings: Settings) -> Client:
    """A client from `campaign_engine.temporal.connect`, as production builds it."""
    return await connect(settings)


@pytest.fixture
async def traced_api(traced_client: Client, settings: Settings) -> AsyncIterator[Api]:
    """API and worker on the traced client."""
    store = await Store.open(settings.resolved_database_url)
    try:
        async with (
            build_worker(traced_client, settings, store),
            running_api(settings, traced_client) as api,
        ):
            yield api
    finally:
        await store.close()


async def test_approve_traces_request_signal_query_and_delivery_in_one_trace(
    traced_api: Api, traced_client: Client, spans: InMemorySpanExporter
) -> None:
    campaign = await create_campaign(traced_api)
    instance_id = await enrol_to_gate(traced_api, campaign)

    response = await approve(traced_api, campaign, instance_id)

    assert response.status_code == 200, response.text
    trace_id = response.json()["traceId"]
    assert response.headers["X-Trace-Id"] == trace_id
    expected = {
        "SignalWorkflow:approve",
        "QueryWorkflow:approval_outcome",
        "HandleSignal:approve",
        "HandleQuery:approval_outcome",
        "StartActivity:deliver_message",
        "RunActivity:deliver_message",
    }

    def in_trace() -> list[ReadableSpan]:
        return [span for span in spans.get_finished_spans() if _trace_id(span) == trace_id]

    async def delivered_in_trace() -> bool:
        return expected <= {span.name for span in in_trace()}

    await assert_eventually(delivered_in_trace)
    requests = [
        span
        for span in in_trace()
        if span.kind == SpanKind.SERVER and span.attributes is not None
        if span.attributes.get("http.route") == APPROVE_ROUTE
    ]
    assert len(requests) == 1
    assert len(outbox_files(traced_api.settings)) == 1
    # The workflow's own trace is the enrolment's; the approval's is another.
    started = [span for span in spans.get_finished_spans() if span.name.startswith("RunWorkflow:")]
    assert started
    assert {_trace_id(span) for span in started} != {trace_id}
    # The traced history replays: the interceptor changes spans and headers, never commands.
    history = await handle_of(traced_client, campaign, instance_id).fetch_history()
    await Replayer(
        workflows=[CampaignWorkflow],
        interceptors=[CampaignTracingInterceptor()],
        data_converter=traced_client.data_converter,
    ).replay_workflow(history)


async def test_request_trace_continues_callers_traceparent_when_tracing(
    traced_api: Api,
) -> None:
    campaign = await create_campaign(traced_api)
    caller_trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"

    response = await traced_api.http.get(
        campaign.url,
        headers={**campaign.auth, "traceparent": f"00-{caller_trace_id}-00f067aa0ba902b7-01"},
    )

    assert response.status_code == 200
    assert response.json()["traceId"] == caller_trace_id


# --- metrics ------------------------------------------------------------------------------------


def _samples(text: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    found: dict[tuple[tuple[str, str], ...], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                found[tuple(sorted(sample.labels.items()))] = sample.value
    return found


@pytest.fixture
def api_metrics_url() -> Iterator[str]:
    port = free_port()
    server = serve_api_metrics("127.0.0.1", port)
    assert server is not None
    yield f"http://127.0.0.1:{port}/metrics"
    server.shutdown()
    server.server_close()


async def test_api_metrics_count_requests_by_route_template_and_status(
    api: Api, campaign: Campaign, api_metrics_url: str
) -> None:
    async with httpx.AsyncClient() as scraper:
        before = (await scraper.get(api_metrics_url)).text
        for _ in range(2):
            assert (await api.http.get(campaign.url, headers=campaign.auth)).status_code == 200
        missing = campaign.url.rsplit("/", 1)[0] + "/" + "0" * 24
        assert (await api.http.get(missing, headers=campaign.auth)).status_code == 404
        assert (await api.http.get("/no/such/route")).status_code == 404
        after = (await scraper.get(api_metrics_url)).text

    def delta(name: str, route: str, status: str) -> float:
        labels = (("method", "GET"), ("route", route), ("status", status))
        return _samples(after, name).get(labels, 0.0) - _samples(before, name).get(labels, 0.0)

    assert delta("campaign_engine_api_requests_total", CAMPAIGN_ROUTE, "200") == 2
    assert delta("campaign_engine_api_requests_total", CAMPAIGN_ROUTE, "404") == 1
    assert delta("campaign_engine_api_requests_total", "unmatched", "404") == 1
    assert delta("campaign_engine_api_request_duration_seconds_count", CAMPAIGN_ROUTE, "200") == 2
    assert "campaign_engine_api_request_duration_seconds_bucket{" in after
    # Ids never become labels: one series per route, not per resource.
    assert campaign.account_group_id not in after
    assert campaign.campaign_id not in after


async def test_worker_metrics_serve_temporal_sdk_metrics(
    settings: Settings, api: Api, campaign: Campaign
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}/metrics"
    async with (
        worker_process(settings, CAMPAIGN_ENGINE_WORKER_METRICS_PORT=str(port)),
        httpx.AsyncClient() as scraper,
    ):
        await enrol_to_gate(api, campaign)
        ours = f'task_queue="{settings.task_queue}"'
        scraped = ""

        async def activity_metrics_served() -> bool:
            nonlocal scraped
            try:
                scraped = (await scraper.get(url)).text
            except httpx.TransportError:
                return False
            return any(
                line.startswith("temporal_activity_execution_latency") and ours in line
                for line in scraped.splitlines()
            )

        await assert_eventually(activity_metrics_served)

        async def approval_metrics() -> dict[str, float]:
            text = (await scraper.get(url)).text
            return {
                line.split("{")[0].split(" ")[0]: float(line.rsplit(" ", 1)[1])
                for line in text.splitlines()
                if line.startswith("campaign_approval_") and not line.startswith("#")
            }

        # The gauge counts the gate open on this worker's queue; the counter saw it open.
        approval = await assert_eventually(
            approval_metrics,
            lambda seen: (
                seen.get("campaign_approval_gates_open") == 1
                and seen.get("campaign_approval_gates_opened", 0) >= 1
            ),
            within=30,
            what="approval metrics",
        )
    assert any(
        line.startswith("temporal_workflow_task_execution_latency") and ours in line
        for line in scraped.splitlines()
    )
    assert approval["campaign_approval_gates_open"] == 1


async def test_api_process_logs_json_and_serves_metrics(settings: Settings) -> None:
    """`campaign-engine api` as deployed: JSON lines on stderr, `/metrics` on its own port."""
    api_port, metrics_port = free_port(), free_port()
    variables = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("CAMPAIGN_ENGINE_", "OTEL_"))
    }
    process = await asyncio.create_subprocess_exec(
        *die_with_parent([str(Path(sys.executable).with_name("campaign-engine")), "api"]),
        env={
            **variables,
            "CAMPAIGN_ENGINE_STATE_DIR": str(settings.state_dir),
            "CAMPAIGN_ENGINE_TEMPORAL_ADDRESS": settings.temporal_address,
            "CAMPAIGN_ENGINE_API_PORT": str(api_port),
            "CAMPAIGN_ENGINE_API_METRICS_PORT": str(metrics_port),
        },
        stderr=asyncio.subprocess.PIPE,
    )
    response: httpx.Response | None = None
    try:
        async with httpx.AsyncClient() as http:

            async def answered() -> bool:
                nonlocal response
                try:
                    response = await http.get(f"http://127.0.0.1:{api_port}/no/such/route")
                except httpx.TransportError:
                    return False
                return True

            await assert_eventually(answered)
            # The request is counted as its middleware finishes, just after the answer went out.
            counted = (
                'campaign_engine_api_requests_total{method="GET",route="unmatched",status="404"}'
            )
            metrics_text = ""

            async def scraped() -> bool:
                nonlocal metrics_text
                metrics_text = (await http.get(f"http://127.0.0.1:{metrics_port}/metrics")).text
                return counted in metrics_text

            await assert_eventually(scraped)
    finally:
        process.terminate()
        _, stderr = await process.communicate()
    assert response is not None and response.status_code == 404
    assert 'campaign_engine_api_requests_total{method="GET",route="unmatched",status="404"}' in (
        metrics_text
    )
    lines = [json.loads(line) for line in stderr.decode().splitlines()]
    # A path that matched no route is logged as `unmatched`, never as sent: it may carry a
    # credential (tests/test_telemetry_secrets.py).
    assert "/no/such/route" not in stderr.decode()
    [request_line] = [line for line in lines if line.get("path") == "unmatched"]
    assert request_line["trace_id"] == response.json()["traceId"]
    assert request_line["status"] == 404


# --- logs ---------------------------------------------------------------------------------------


def _json_lines(logger_name: str) -> Iterator[io.StringIO]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger(logger_name)
    logger.addHandler(handler)
    previous = logger.level
    logger.setLevel(logging.INFO)
    yield stream
    logger.removeHandler(handler)
    logger.setLevel(previous)


@pytest.fixture
def json_log() -> Iterator[io.StringIO]:
    """The API's log lines as the `json` format writes them."""
    yield from _json_lines("campaign_engine.api")


@pytest.fixture
def workflow_json_log() -> Iterator[io.StringIO]:
    """The workflows' log lines (the SDK's workflow logger) as the `json` format writes them."""
    yield from _json_lines("temporalio.workflow")


@pytest.mark.usefixtures("worker")
async def test_request_log_line_carries_trace_key_and_ids_never_the_key(
    api: Api, campaign: Campaign, json_log: io.StringIO
) -> None:
    instance_id = await enrol_to_gate(api, campaign)

    response = await approve(api, campaign, instance_id)

    assert response.status_code == 200, response.text
    lines = [json.loads(line) for line in json_log.getvalue().splitlines()]
    approvals = [line for line in lines if line.get("path") == APPROVE_ROUTE]
    assert len(approvals) == 1
    entry = approvals[0]
    assert entry["trace_id"] == response.json()["traceId"]
    assert entry["key_id"] == campaign.key.id
    assert entry["account_group_id"] == campaign.account_group_id
    assert entry["campaign_id"] == campaign.campaign_id
    assert entry["workflow_instance_id"] == instance_id
    assert entry["method"] == "POST"
    assert entry["status"] == 200
    assert entry["duration_ms"] >= 0
    assert entry["level"] == "INFO"
    assert entry["logger"] == "campaign_engine.api"
    assert entry["message"] == f"POST {APPROVE_ROUTE} 200"
    assert entry["timestamp"].endswith("+00:00")
    assert campaign.key.key not in json_log.getvalue()


@pytest.mark.usefixtures("worker")
async def test_workflow_log_line_carries_instance_ids(
    api: Api, campaign: Campaign, temporal: Client, workflow_json_log: io.StringIO
) -> None:
    instance_id = await enrol_to_gate(api, campaign)

    await handle_of(temporal, campaign, instance_id).signal("no_such_signal")

    entries: list[dict[str, object]] = []

    async def logged() -> bool:
        entries[:] = [
            entry
            for entry in map(json.loads, workflow_json_log.getvalue().splitlines())
            if "ignored unknown signal" in str(entry["message"])
        ]
        return bool(entries)

    await assert_eventually(logged)
    entry = entries[0]
    assert entry["level"] == "WARNING"
    assert entry["account_group_id"] == campaign.account_group_id
    assert entry["campaign_id"] == campaign.campaign_id
    assert entry["workflow_instance_id"] == instance_id
    assert str(entry["workflow_id"]).endswith(instance_id)
