"""The API's Prometheus metrics: requests and their latency per route template and status.

Labels are route templates (`/v1/accounts/{accountGroupId}/...`), never raw paths: ids would make
a time series per instance. Requests that match no route share the label `unmatched`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from prometheus_client import Counter, Histogram

if TYPE_CHECKING:
    from inbound.pipeline import Outcome

UNMATCHED_ROUTE = "unmatched"

REQUESTS = Counter(
    "campaign_engine_api_requests",
    "API requests answered, by method, route template and status code.",
    ["method", "route", "status"],
)
REQUEST_DURATION = Histogram(
    "campaign_engine_api_request_duration_seconds",
    "Time to answer an API request, by method, route template and status code.",
    ["method", "route", "status"],
    # Approvals wait on Temporal (a signal and a query, ~50 ms) and up to the RPC timeout (5 s).
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)


def observe_request(method: str, route: str | None, status: int, duration_seconds: float) -> None:
    """Counts one answered request and its duration in seconds; a `route` of None (no route
    matched) is labelled `unmatched`."""
    labels = (method, route or UNMATCHED_ROUTE, str(status))
    REQUESTS.labels(*labels).inc()
    REQUEST_DURATION.labels(*labels).observe(duration_seconds)


INBOUND_MESSAGES = Counter(
    "campaign_inbound_messages",
    "Inbound messages applied, by source, classification, what matched them and the action.",
    ["source", "classification", "matched_by", "action"],
)


def count_inbound(source: str, outcome: Outcome) -> None:
    """Counts one inbound message the pipeline applied (not a repeat); `matched_by` is
    `none:<reason>` for one that matched nothing. The worker's IMAP reader counts the same
    metric through Temporal's meter."""
    matched_by = (
        outcome.matched.matched_by.value
        if outcome.matched is not None
        else f"none:{outcome.no_match.value if outcome.no_match else 'unknown'}"
    )
    INBOUND_MESSAGES.labels(
        source, outcome.classification.value, matched_by, outcome.action.value
    ).inc()
