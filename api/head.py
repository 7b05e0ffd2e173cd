"""HEAD on every GET route, as RFC 9110 §9.3.2 asks: GET's status and headers, no body.

FastAPI registers only the methods a route names, so HEAD used to answer 405. Each GET route gets a
twin HEAD route on the same endpoint (same dependencies, so the same checks in the same order);
uvicorn sends no body for HEAD. The twins are separate operations in the OpenAPI document, with
their own operation ids and no response content.
"""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.routing import APIRoute

from api.openapi import operation_id


def add_head_routes(router: APIRouter) -> None:
    """Adds a HEAD twin of every GET route of `router` that has none yet (so it is idempotent).

    Call it before the router is included in an app: FastAPI includes routers as they are then.
    """
    routes = [route for route in router.routes if isinstance(route, APIRoute)]
    has_head = {route.path for route in routes if "HEAD" in (route.methods or set())}
    for route in routes:
        if "GET" not in (route.methods or set()) or route.path in has_head:
            continue
        router.add_api_route(
            route.path.removeprefix(router.prefix),
            route.endpoint,
            methods=["HEAD"],
            response_model=route.response_model,
            status_code=route.status_code,
            tags=list(route.tags),
            summary=f"Headers of: {route.summary or route.name.replace('_', ' ')}",
            description="The same status and headers as GET, without a body (RFC 9110 §9.3.2).",
            responses=dict(route.responses),
            response_description=route.response_description,
            name=f"{route.name}_head",
            operation_id=head_operation_id(operation_id(route)),
            response_class=route.response_class,
        )


def head_operation_id(get_operation_id: str) -> str:
    """`getWorkflowInstance` → `headWorkflowInstance`; any other id gets `Head` appended."""
    if get_operation_id.startswith("get") and get_operation_id[3:4].isupper():
        return "head" + get_operation_id[3:]
    return get_operation_id + "Head"
