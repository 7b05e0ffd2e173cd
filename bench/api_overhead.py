"""`python -m bench.api_overhead`: the API's own CPU per approve request, with no Temporal in it.

The real app (`api.create_app` with its lifespan: SQLite store, in-memory rate limiter; logging as
in production but to /dev/null; uvloop, as under uvicorn) is called in process as a bare ASGI app,
with no server and no HTTP client, so the process's CPU time (`time.process_time`, all threads)
per request is what the API itself spends. Requests go one after the other, the event loop turning
between them as a server's does. Scenarios, each `--rounds` rounds of `--n` requests after a
warm-up:

- `forbidden`: approve with a key that lacks `campaigns:execute` → 403. The whole dependency
  chain runs (key, rate limit, path ids, permission) and nothing after it.
- `approved`: approve with a full key, the Temporal calls stubbed out → 200 with its `ETag`. The
  dependency chain, the route and its response: everything the API adds to the SDK's calls.
- `dependencies`: only FastAPI's resolution of the approve route's dependencies (full key, as
  `approved`), called directly: the part of `approved` that the dependency declarations cost,
  without the middleware, routing, route body and response around it.
- `not-found` (only with `--temporal`, which starts a Temporal dev server): approve of an
  instance that does not exist → 404 after a real signal RPC; Temporal's SDK included.

python -m bench.api_overhead [--n 2000] [--rounds 5] [--temporal]
                             [--scenarios forbidden,approved,dependencies]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvloop
from fastapi import FastAPI, Request
from fastapi.dependencies.utils import solve_dependencies
from fastapi.routing import APIRoute
from starlette.types import Message

from api import create_app
from campaign_engine import logs
from campaign_engine.ids import InstanceRef, new_object_id
from campaign_engine.keys import KeyRing, Permission
from campaign_engine.settings import Settings
from entrypoints.devserver import DevServer
from workflows.types import LeadStatus, WorkflowStatus

# Never reached, and a one-second window keeps the in-memory counter list short: a longer one
# would make every hit slower as the run goes on.
BENCH_RATE = "1000000/second"
WARM_UP = 200


def arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line (see the module docstring); `argv` None reads `sys.argv[1:]`."""
    parser = argparse.ArgumentParser(prog="python -m bench.api_overhead", description=__doc__)
    parser.add_argument("--n", type=int, default=2000, help="requests per round")
    parser.add_argument("--rounds", type=int, default=5, help="rounds per scenario")
    parser.add_argument(
        "--scenarios",
        default="forbidden,approved,dependencies",
        help="comma-separated: forbidden, approved, dependencies, not-found (needs --temporal)",
    )
    parser.add_argument(
        "--temporal",
        action="store_true",
        help="start a Temporal dev server (and add the not-found scenario)",
    )
    return parser.parse_args(argv)


@dataclass
class Answer:
    """What the app sent back: the status and the response headers (names lowercased), and the
    request's scope as the app left it (with the matched `route` and `path_params`)."""

    status: int
    headers: dict[str, str]
    scope: dict[str, Any]


def request_scope(method: str, path: str, headers: dict[str, str]) -> dict[str, Any]:
    """The ASGI scope of a request as uvicorn makes it (no query string, no body)."""
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [
            (b"host", b"bench"),
            (b"content-length", b"0"),
            *((name.lower().encode(), value.encode()) for name, value in headers.items()),
        ],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
        "state": {},
    }


async def call(app: FastAPI, method: str, path: str, headers: dict[str, str]) -> Answer:
    """One request through the ASGI app, as uvicorn would make it (no body)."""
    scope = request_scope(method, path, headers)
    answered = asyncio.Event()
    body_sent = False
    status = 0
    response_headers: dict[str, str] = {}

    async def receive() -> Message:
        nonlocal body_sent
        if not body_sent:
            body_sent = True
            return {"type": "http.request", "body": b"", "more_body": False}
        # As uvicorn: a second read waits until the response is done, then sees the disconnect.
        await answered.wait()
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
            response_headers.update(
                (name.decode("latin-1"), value.decode("latin-1"))
                for name, value in message.get("headers", [])
            )
        elif message["type"] == "http.response.body" and not message.get("more_body", False):
            answered.set()

    await app(scope, receive, send)
    return Answer(status, response_headers, scope)


class NoTemporal:
    """Stands in for `WorkflowInstances` in the `approved` scenario: every approve succeeds at
    once, as a waiting instance's would, with no SDK call."""

    async def approve(
        self, ref: InstanceRef, decided_by: str, if_match: list[str] | None = None
    ) -> tuple[LeadStatus, str | None]:
        """The approved instance's status (no gate left open) and the approved gate's id."""
        status = LeadStatus(
            lead_id="lead-1",
            workflow_status=WorkflowStatus.RUNNING,
            workflow_instance_id=ref.workflow_instance_id,
            latest_step="intro",
        )
        return status, "gate-1"


@dataclass
class Scenario:
    """One kind of approve request and what every answer to it must be (the bench fails rather
    than measure a path other than the one it names)."""

    name: str
    path: str
    headers: dict[str, str]
    status: int
    required_headers: tuple[str, ...]


@dataclass
class Result:
    """A scenario's CPU per request over its rounds, in microseconds."""

    name: str
    status: int
    per_round_us: list[float]

    def line(self) -> str:
        """One line of the report: median and minimum of the rounds, then every round."""
        rounds = " ".join(f"{value:.0f}" for value in self.per_round_us)
        median = statistics.median(self.per_round_us)
        return (
            f"{self.name:<10} {self.status or '---'}  median {median:7.1f} µs"
            f"  min {min(self.per_round_us):7.1f} µs  (rounds: {rounds})"
        )


async def timed(one: Callable[[], Awaitable[None]], n: int, rounds: int) -> list[float]:
    """`one` `WARM_UP` times, then `rounds` rounds of `n`: CPU µs of the whole process per call,
    per round. The event loop runs between calls, as a server's does between requests, so work a
    request leaves scheduled (the in-memory rate limiter's expiry task) is counted too."""
    for _ in range(WARM_UP):
        await one()
        await asyncio.sleep(0)
    per_round: list[float] = []
    for _ in range(rounds):
        started = time.process_time()
        for _ in range(n):
            await one()
            await asyncio.sleep(0)
        per_round.append((time.process_time() - started) / n * 1e6)
    return per_round


async def measure(app: FastAPI, scenario: Scenario, n: int, rounds: int) -> Result:
    """The scenario's request through the whole app, timed by `timed`; `RuntimeError` as soon as
    an answer is not the scenario's status and headers."""

    async def one() -> None:
        answer = await call(app, "POST", scenario.path, scenario.headers)
        missing = [name for name in scenario.required_headers if name not in answer.headers]
        if answer.status != scenario.status or missing:
            raise RuntimeError(
                f"{scenario.name}: expected {scenario.status} with {scenario.required_headers}, "
                f"got {answer.status} {answer.headers}"
            )

    return Result(scenario.name, scenario.status, await timed(one, n, rounds))


async def measure_dependencies(app: FastAPI, scenario: Scenario, n: int, rounds: int) -> Result:
    """As `measure`, but each request only has its route's dependencies resolved, by FastAPI's
    own `solve_dependencies` as its request handler calls it (the route found by one request
    through the app first)."""
    first = await call(app, "POST", scenario.path, scenario.headers)
    route = first.scope.get("route")
    if first.status != scenario.status or not isinstance(route, APIRoute):
        raise RuntimeError(f"{scenario.name}: expected {scenario.status}, got {first.status}")
    path_params = first.scope["path_params"]

    async def one() -> None:
        async with AsyncExitStack() as stack:
            scope = request_scope("POST", scenario.path, scenario.headers)
            scope.update(
                app=app,
                route=route,
                path_params=path_params,
                fastapi_inner_astack=stack,
                fastapi_function_astack=stack,
            )
            solved = await solve_dependencies(
                request=Request(scope),
                dependant=route.dependant,
                dependency_overrides_provider=route.dependency_overrides_provider,
                async_exit_stack=stack,
                embed_body_fields=False,
            )
        if solved.errors:
            raise RuntimeError(f"{scenario.name}: dependencies failed: {solved.errors}")

    return Result(scenario.name, 0, await timed(one, n, rounds))


@asynccontextmanager
async def temporal_address(start: bool) -> AsyncIterator[str]:
    """A dev server's address when `start`, else an address nothing listens on (the client is
    lazy, so only a route that calls Temporal would notice)."""
    if not start:
        yield "127.0.0.1:1"
        return
    server = DevServer()
    await server.start()
    try:
        yield server.address
    finally:
        await server.stop()


def quiet_production_logging(settings: Settings) -> None:
    """The API's logging as `campaign-engine api` sets it up (JSON lines at INFO), written to
    /dev/null: the per-request log line is part of what a request costs."""
    logs.configure(settings.log_level, "json")
    devnull = open("/dev/null", "w")  # noqa: SIM115 (open for the process's lifetime)
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.StreamHandler):
            handler.setStream(devnull)


async def run(args: argparse.Namespace) -> list[Result]:
    """Builds the app on a temporary state dir, issues the keys and runs the chosen scenarios."""
    names = [name for name in args.scenarios.split(",") if name]
    if args.temporal and "not-found" not in names:
        names.append("not-found")
    if "not-found" in names and not args.temporal:
        raise SystemExit("the not-found scenario needs --temporal")
    with tempfile.TemporaryDirectory() as state_dir:
        async with temporal_address(args.temporal) as address:
            settings = Settings(
                state_dir=Path(state_dir),
                temporal_address=address,
                rate_limit=BENCH_RATE,
                api_metrics_port=0,
                worker_metrics_port=0,
            )
            quiet_production_logging(settings)
            app = create_app(settings)
            async with app.router.lifespan_context(app):
                keyring: KeyRing = app.state.keyring
                account_group_id, campaign_id = new_object_id(), new_object_id()
                full = await keyring.issue("bench", [account_group_id], list(Permission))
                reader = await keyring.issue(
                    "bench reader", [account_group_id], [Permission.CAMPAIGNS_READ]
                )
                path = (
                    f"/v1/accounts/{account_group_id}/campaigns/{campaign_id}"
                    f"/workflow-instances/{new_object_id()}/approve"
                )
                rate_headers = ("x-ratelimit-limit", "x-ratelimit-remaining", "x-trace-id")
                scenarios = {
                    "forbidden": Scenario(
                        "forbidden",
                        path,
                        {"Authorization": f"Bearer {reader.key}"},
                        403,
                        rate_headers,
                    ),
                    "approved": Scenario(
                        "approved",
                        path,
                        {"Authorization": f"Bearer {full.key}"},
                        200,
                        (*rate_headers, "etag"),
                    ),
                    "dependencies": Scenario(
                        "deps only",
                        path,
                        {"Authorization": f"Bearer {full.key}"},
                        200,
                        (),
                    ),
                    "not-found": Scenario(
                        "not-found",
                        path,
                        {"Authorization": f"Bearer {full.key}"},
                        404,
                        rate_headers,
                    ),
                }
                results = []
                real_instances = app.state.instances
                for name in names:
                    stubbed = name in ("approved", "dependencies")
                    app.state.instances = NoTemporal() if stubbed else real_instances
                    how = measure_dependencies if name == "dependencies" else measure
                    results.append(await how(app, scenarios[name], args.n, args.rounds))
                app.state.instances = real_instances
    return results


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point: prints CPU µs per request for each scenario."""
    args = arguments(argv)
    # The event loop the API runs on: uvicorn's `loop="auto"` picks uvloop when it is installed.
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        results = runner.run(run(args))
    print(f"CPU per approve request ({args.rounds} rounds of {args.n}, process_time):")
    for result in results:
        print(result.line())


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main(sys.argv[1:])
