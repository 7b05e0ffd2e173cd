"""The API's Prometheus metrics: requests and their latency per route template and status.

Labels are route templates (`/v1/accounts/{accountGroupId}/...`), never raw paths: ids would make
a time series per instance. Requests that match no route share the label `unmatched`.
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram

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
