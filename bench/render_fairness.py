"""`python -m bench.render_fairness`: a one-step PUT of one account group while two other groups'
25-step PUTs are checked (issue 24, item 3), on a private stack (`bench.stack`).

Each of the neighbours' templates (subject and body of every step) renders within its own 1 s
deadline (`HEAVY`: 700 `str.count` over 100,000 characters); the
victim's campaign is one step of `Hi {{ lead.firstName }}`. Per round, the victim's PUT is timed
alone, then again while the two neighbours' PUTs are in flight (sent first, the victim's
`--head-start` seconds later, so their renders are queued when it arrives). Prints, per
scenario, the victim's median and worst latency and what the neighbours got (status, latency).

To compare with a build without fair rendering, run the same file against that tree's code:
`PYTHONPATH=/path/to/old/tree python -m bench.render_fairness` from this tree (the stack's API
process inherits `PYTHONPATH`). `--render-budget-seconds` sets `CAMPAIGN_ENGINE_RENDER_BUDGET_
SECONDS` for the API (a large value shows fairness alone, without the per-PUT budget).

python -m bench.render_fairness [--rounds 3] [--head-start 0.5] [--render-budget-seconds S]
                                [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bench.measure import write_json
from bench.stack import Stack, running_stack
from campaign_engine.ids import new_object_id
from campaign_engine.keys import KeyRing, Permission, load_pepper
from campaign_engine.store import Store

HEAVY = (
    "{% set s = lead.company * 500 %}{% for a in range(700) %}"
    '{% if s.count("zq") > 0 %}{% endif %}{% endfor %}Hi {{ lead.firstName }}'
)
"""A template within its budget: ~0.07 s of CPU for the worst-case lead (0.2-0.4 s of wall-clock
time on a busy 2-core machine), 3.5 s for the 50 of a neighbour's PUT, within the default render
budget of 5 s."""
NEIGHBOUR_STEPS = 25
DRAIN_SECONDS = 2.0
"""Pause before each round: longer than a render's deadline, so no render of the last round's
refused PUTs still runs when the victim is timed alone."""

VICTIM_CAMPAIGN: dict[str, Any] = {
    "name": "Victim",
    "steps": [{"id": "intro", "subject": "Hello", "body": "Hi {{ lead.firstName }}"}],
}
NEIGHBOUR_CAMPAIGN: dict[str, Any] = {
    "name": "Neighbour",
    "steps": [
        {"id": f"s{index}", "subject": HEAVY, "body": HEAVY, "delay": 0}
        for index in range(NEIGHBOUR_STEPS)
    ],
}


async def _key_for(stack: Stack, groups: list[str]) -> str:
    store = await Store.open(stack.settings.resolved_database_url)
    try:
        ring = KeyRing(store, load_pepper(stack.settings))
        issued = await ring.issue("render-fairness", groups, list(Permission))
    finally:
        await store.close()
    return issued.key


async def _put(
    http: httpx.AsyncClient, key: str, group: str, body: dict[str, Any]
) -> tuple[int, float, str, str]:
    """PUTs a new campaign of `group`: (status, seconds, error code and message or "")."""
    started = time.perf_counter()
    response = await http.put(
        f"/v1/accounts/{group}/campaigns/{new_object_id()}",
        json=body,
        headers={"Authorization": f"Bearer {key}"},
    )
    elapsed = time.perf_counter() - started
    error = response.json().get("error") or {}
    return (
        response.status_code,
        elapsed,
        str(error.get("code") or ""),
        str(error.get("message") or "")[:160],
    )


async def _round(
    http: httpx.AsyncClient, key: str, groups: list[str], head_start: float
) -> dict[str, Any]:
    victim_group, *neighbour_groups = groups
    # Renders of a refused PUT end by their own deadline, after its answer: let them.
    await asyncio.sleep(DRAIN_SECONDS)
    alone = await _put(http, key, victim_group, VICTIM_CAMPAIGN)
    neighbours = [
        asyncio.create_task(_put(http, key, group, NEIGHBOUR_CAMPAIGN))
        for group in neighbour_groups
    ]
    await asyncio.sleep(head_start)
    victim = await _put(http, key, victim_group, VICTIM_CAMPAIGN)
    neighbours_done_first = sum(task.done() for task in neighbours)
    answered = await asyncio.gather(*neighbours)
    return {
        "alone": alone,
        "with_neighbours": victim,
        "neighbours": answered,
        "neighbours_done_before_victim": neighbours_done_first,
    }


async def measure(rounds: int, head_start: float) -> dict[str, Any]:
    """Runs `rounds` rounds on a fresh stack (no worker: a PUT needs none)."""
    with tempfile.TemporaryDirectory(prefix="bench-render-") as state:
        async with running_stack(Path(state), workers=0) as stack:
            groups = [new_object_id() for _ in range(3)]
            key = await _key_for(stack, groups)
            await _put(stack.http, key, groups[0], VICTIM_CAMPAIGN)  # warm-up
            results = [await _round(stack.http, key, groups, head_start) for _ in range(rounds)]
    alone = [r["alone"][1] for r in results]
    loaded = [r["with_neighbours"][1] for r in results]
    return {
        "rounds": results,
        "victim_alone_median_s": statistics.median(alone),
        "victim_alone_max_s": max(alone),
        "victim_with_neighbours_median_s": statistics.median(loaded),
        "victim_with_neighbours_max_s": max(loaded),
        "victim_statuses": sorted({r["with_neighbours"][0] for r in results}),
        "refusals": sorted(
            {message for r in results for _, _, _, message in r["neighbours"] if message}
        ),
        "neighbour_outcomes": sorted(
            {f"{status} {code}".strip() for r in results for status, _, code, _ in r["neighbours"]}
        ),
        "neighbour_median_s": statistics.median(
            seconds for r in results for _, seconds, _, _ in r["neighbours"]
        ),
    }


def main() -> None:
    """Parses the arguments, measures, prints the figures (and writes them with `--json`)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--head-start", type=float, default=0.5)
    parser.add_argument("--render-budget-seconds", type=float, default=None)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    if args.render_budget_seconds is not None:
        os.environ["CAMPAIGN_ENGINE_RENDER_BUDGET_SECONDS"] = str(args.render_budget_seconds)
    figures = asyncio.run(measure(args.rounds, args.head_start))
    print(
        f"victim PUT alone:           median {figures['victim_alone_median_s']:.3f} s, "
        f"max {figures['victim_alone_max_s']:.3f} s"
    )
    print(
        f"victim PUT with neighbours: median {figures['victim_with_neighbours_median_s']:.3f} s, "
        f"max {figures['victim_with_neighbours_max_s']:.3f} s, "
        f"statuses {figures['victim_statuses']}"
    )
    print(
        f"neighbours' 25-step PUTs:   median {figures['neighbour_median_s']:.3f} s, "
        f"answered {figures['neighbour_outcomes']}"
    )
    for message in figures["refusals"]:
        print(f"  a neighbour was refused: {message}")
    if args.json is not None:
        write_json(args.json, figures)


if __name__ == "__main__":
    main()
