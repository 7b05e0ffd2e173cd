"""Bulk enrolment: leads through `POST …/workflow-instances/batch`, and on to their first gate.

Two figures of issue 20 (`make bench` writes them into `var/bench/latest.json`):

- `bulk_enrol_per_s`: leads accepted per second, the batches (1,000 rows each by default) posted
  one after the other, as `campaign-engine leads import` sends them: rows answered `enrolled`
  over the time from the first request to the last answer;
- `gates_per_s`: the same leads over the time from the first request until visibility counts
  every one of them waiting at its first gate (`HasPendingApproval`), the stack's worker(s)
  running the instances meanwhile. Visibility is polled every 0.5 s and trails by up to about
  a second, so a short run reads low: use a few thousand leads.

The leads go to a campaign of their own (the one-gate definition), so earlier enrolments of the
same stack do not count. CPU per lead of each process role over the whole time to the gates is
reported beside them.

Alone, on a private stack of its own (a short check):

python -m bench.bulk_enrol [--leads 3000] [--batch 1000] [--workers 1]
                           [--out var/bench/bulk_enrol.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.measure import write_json
from bench.stack import ONE_GATE_CAMPAIGN, Stack, cpu_seconds, running_stack
from campaign_engine.ids import new_object_id

DEFAULT_LEADS = 3000
BATCH_ROWS = 1000


def _leads(count: int) -> list[dict[str, str]]:
    return [
        {
            "id": new_object_id(),
            "email": f"lead{index}@example.com",
            "firstName": "Ada",
            "lastName": "Lovelace",
            "company": "Analytical Engines",
        }
        for index in range(count)
    ]


def _cpu(stack: Stack) -> dict[str, float]:
    pids = {
        "dev_server": [stack.server.pid] if stack.server.pid else [],
        "worker": [worker.pid for worker in stack.workers],
        "api": [stack.api.pid],
    }
    return {name: sum(cpu_seconds(pid) for pid in ids) for name, ids in pids.items()}


async def bulk_enrolment(stack: Stack, leads: int, batch: int = BATCH_ROWS) -> dict[str, Any]:
    """Enrols `leads` new leads in a new campaign of the stack's account group, `batch` rows per
    request, one request after the other; waits until all wait at their gates.

    Returns `bulk_enrol_per_s`, `gates_per_s` (module docstring), the seconds of each, the
    seconds per batch and CPU ms per lead by role (until the gates, and while accepting).
    `RuntimeError` when a batch is not answered 200 with every row `enrolled`; `TimeoutError`
    when the gates are not all reached within `60 + leads / 5` seconds.
    """
    campaign_id = new_object_id()
    campaign_url = f"/v1/accounts/{stack.account_group_id}/campaigns/{campaign_id}"
    created = await stack.http.put(campaign_url, json=ONE_GATE_CAMPAIGN, headers=stack.auth)
    if created.status_code != 201:
        raise RuntimeError(f"campaign not created: {created.status_code} {created.text}")
    rows = _leads(leads)
    batch_seconds: list[float] = []
    before = _cpu(stack)
    started = time.perf_counter()
    for start in range(0, leads, batch):
        chunk = rows[start : start + batch]
        sent = time.perf_counter()
        response = await stack.http.post(
            f"{campaign_url}/workflow-instances/batch",
            json={"leads": chunk},
            headers=stack.auth,
            timeout=600,
        )
        batch_seconds.append(time.perf_counter() - sent)
        if response.status_code != 200:
            raise RuntimeError(f"batch answered {response.status_code}: {response.text[:500]}")
        counts = response.json()["data"]["counts"]
        if counts["enrolled"] != len(chunk):
            raise RuntimeError(f"batch of {len(chunk)} answered {counts}")
    accepted = time.perf_counter() - started
    while_accepting = _cpu(stack)
    query = f"HasPendingApproval = true AND CampaignId = '{campaign_id}'"
    deadline = started + 60 + leads / 5
    while (await stack.temporal.count_workflows(query)).count < leads:
        if time.perf_counter() > deadline:
            raise TimeoutError(f"fewer than {leads} of the bulk leads at their gates in time")
        await asyncio.sleep(0.5)
    at_gates = time.perf_counter() - started
    after = _cpu(stack)
    return {
        "bulk_enrol_per_s": leads / accepted,
        "gates_per_s": leads / at_gates,
        "leads": leads,
        "batch_rows": batch,
        "accepted_seconds": accepted,
        "seconds_to_gates": at_gates,
        "batch_seconds": batch_seconds,
        "cpu_ms_per_lead": {name: (after[name] - before[name]) * 1000 / leads for name in after},
        # The part spent while the batches were answered (the starts, and what the worker did
        # with the first instances meanwhile).
        "cpu_ms_per_lead_accepting": {
            name: (while_accepting[name] - before[name]) * 1000 / leads for name in after
        },
    }


def line(figures: dict[str, Any]) -> str:
    """One line for a bench's table."""
    cpu = ", ".join(f"{name} {ms:.1f} ms" for name, ms in figures["cpu_ms_per_lead"].items())
    return (
        f"bulk enrolment ({figures['leads']} leads, {figures['batch_rows']} per batch): "
        f"{figures['bulk_enrol_per_s']:.1f} accepted/s, {figures['gates_per_s']:.1f} at their "
        f"gates/s; CPU per lead: {cpu}"
    )


def main(argv: list[str] | None = None) -> int:
    """`python -m bench.bulk_enrol`: the two figures on a private stack; writes `--out`."""
    parser = argparse.ArgumentParser(prog="python -m bench.bulk_enrol", description=__doc__)
    parser.add_argument("--leads", type=int, default=DEFAULT_LEADS)
    parser.add_argument("--batch", type=int, default=BATCH_ROWS, help="rows per request")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("var/bench/bulk_enrol.json"))
    args = parser.parse_args(argv)

    async def measure() -> dict[str, Any]:
        with tempfile.TemporaryDirectory(prefix="campaign-engine-bench-") as state_dir:
            async with running_stack(Path(state_dir), workers=args.workers) as stack:
                return await bulk_enrolment(stack, args.leads, args.batch)

    figures = asyncio.run(measure())
    print(json.dumps(figures), file=sys.stderr)
    print(line(figures))
    write_json(args.out, figures)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
