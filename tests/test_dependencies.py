"""Route declarations as they cost per request: nothing a route depends on runs in a thread.

FastAPI runs a plain `def` dependency or endpoint in its thread pool, a thread hop per request
each: ~150 µs of CPU for the approve route's one getter, 40 % of its dependency resolution
(`bench/api_overhead.py`, docs/performance-history.md).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from typing import Any

from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute, iter_route_contexts

from api import create_app
from campaign_engine.settings import Settings


def is_async(call: Callable[..., Any] | None) -> bool:
    # Security schemes (HTTPBearer, APIKeyHeader) are instances with an async `__call__`.
    return inspect.iscoroutinefunction(call) or inspect.iscoroutinefunction(
        getattr(call, "__call__", None)  # noqa: B004 (the method itself, not callability)
    )


def dependencies(dependant: Dependant) -> Iterator[Dependant]:
    for sub in dependant.dependencies:
        yield sub
        yield from dependencies(sub)


def test_no_route_dependency_or_endpoint_runs_in_the_thread_pool() -> None:
    routes = [
        context.original_route
        for context in iter_route_contexts(create_app(Settings()).routes)
        if isinstance(context.original_route, APIRoute)
    ]
    in_threads = {
        f"{sorted(route.methods or ())} {route.path}": sorted(
            {
                getattr(sub.call, "__name__", type(sub.call).__name__)
                for sub in dependencies(route.dependant)
                if not is_async(sub.call)
            }
            | ({"(endpoint)"} if not is_async(route.endpoint) else set())
        )
        for route in routes
    }

    assert len(routes) > 20
    assert {route: calls for route, calls in in_threads.items() if calls} == {}
