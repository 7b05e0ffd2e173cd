"""`make soak`: enrolments and approvals, duplicates and stale ones mixed in, against one API and
two workers; then every instance is accounted for and no message went out twice.

python -m bench.soak [--duration 60] [--enrollers 4] [--approvers 8]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from activities.campaign import message_id_for
from bench.stack import Stack, lead_body, running_stack
from campaign_engine.ids import workflow_id_for
from devsupport.servers import SmtpSink


@dataclass
class Tally:
    """What a soak saw: answers counted by action, status and error code, the instances enrolled
    and approved, and the problems found (none, for a pass)."""

    statuses: Counter[str] = field(default_factory=Counter)
    """"<action> <status> <error code>" → how many."""
    enrolled: list[str] = field(default_factory=list)
    approved: set[str] = field(default_factory=set)
    """Instances whose approval answered 200: they must complete and deliver once."""
    unconfirmed: set[str] = field(default_factory=set)
    """Instances whose approval answered 502: approved or not, but never twice."""
    problems: list[str] = field(default_factory=list)

    def note(self, action: str, status: int, body: dict[str, Any]) -> None:
        """Counts one answer; a 5xx other than 502 is a problem (a 502 leaves the outcome
        open, and `account` checks it by the instance's state)."""
        code = (body.get("error") or {}).get("code") or ""
        self.statuses[f"{action} {status} {code}".strip()] += 1
        if status >= 500 and status != 502:
            self.problems.append(f"{action} answered {status}: {body}")


async def approve(stack: Stack, tally: Tally, instance_id: str, kind: str) -> None:
    """Approves once and tallies the answer under `approve/{kind}`; a second 200 for one
    instance is a problem."""
    response = await stack.http.post(
        f"{stack.campaign_url}/workflow-instances/{instance_id}/approve", headers=stack.auth
    )
    tally.note(f"approve/{kind}", response.status_code, response.json())
    if response.status_code == 200:
        if instance_id in tally.approved:
            tally.problems.append(f"{instance_id} approved twice")
        tally.approved.add(instance_id)
    elif response.status_code == 502:
        tally.unconfirmed.add(instance_id)


async def enroller(stack: Stack, tally: Tally, until: float, rng: random.Random) -> None:
    """Enrols fresh leads until `until` (`time.monotonic()`), one in ten of them twice, as a
    retried request would."""
    while time.monotonic() < until:
        body = lead_body()
        response = await stack.http.post(
            f"{stack.campaign_url}/workflow-instances", json=body, headers=stack.auth
        )
        tally.note("enrol", response.status_code, response.json())
        if response.status_code == 201:
            tally.enrolled.append(response.json()["data"]["workflowInstanceId"])
            if rng.random() < 0.1:
                # A retried enrolment: the same lead again must find the first instance.
                again = await stack.http.post(
                    f"{stack.campaign_url}/workflow-instances", json=body, headers=stack.auth
                )
                tally.note("enrol/duplicate", again.status_code, again.json())


async def approver(stack: Stack, tally: Tally, until: float, rng: random.Random) -> None:
    """Approves random enrolled instances until `until` (`time.monotonic()`): first
    approvals, two at once on the same gate, and stale ones on gates already approved."""
    while time.monotonic() < until:
        if not tally.enrolled:
            await asyncio.sleep(0.05)
            continue
        instance_id = rng.choice(tally.enrolled)
        roll = rng.random()
        if instance_id in tally.approved or instance_id in tally.unconfirmed:
            # Past its gate already: a stale approval, answered 409.
            await approve(stack, tally, instance_id, "stale")
        elif roll < 0.3:
            # Two callers approve the same gate at once: exactly one may win.
            await asyncio.gather(
                approve(stack, tally, instance_id, "racing"),
                approve(stack, tally, instance_id, "racing"),
            )
        elif roll < 0.8:
            await approve(stack, tally, instance_id, "first")
        else:
            await asyncio.sleep(0.01)


async def settle(stack: Stack, tally: Tally, within: float) -> dict[str, dict[str, Any]]:
    """Waits for approved instances to finish; returns every instance's final lead status."""
    deadline = time.monotonic() + within
    final: dict[str, dict[str, Any]] = {}
    pending = list(tally.enrolled)
    while pending:
        still: list[str] = []
        for instance_id in pending:
            response = await stack.http.get(
                f"{stack.campaign_url}/workflow-instances/{instance_id}", headers=stack.auth
            )
            if response.status_code != 200:
                still.append(instance_id)
                continue
            status: dict[str, Any] = response.json()["data"]["leadStatus"]
            final[instance_id] = status
            settled = status["workflowStatus"] == "completed" or (
                instance_id not in tally.approved and status["hasPendingApproval"]
            )
            if not settled:
                still.append(instance_id)
        pending = still
        if pending and time.monotonic() > deadline:
            tally.problems.append(f"{len(pending)} instances never settled: {pending[:5]}")
            break
        if pending:
            await asyncio.sleep(0.5)
    return final


def account(stack: Stack, tally: Tally, smtp: SmtpSink, final: dict[str, dict[str, Any]]) -> None:
    """Checks the end state: every 200 approval completed, nothing completed unapproved, and
    each completed instance's Message-ID arrived exactly once (nothing else arrived)."""
    delivered = Counter(str(message["Message-ID"]) for message in smtp.received())
    for message_id, count in delivered.items():
        if count > 1:
            tally.problems.append(f"{message_id} delivered {count} times")
    expected: set[str] = set()
    for instance_id in tally.enrolled:
        status = final.get(instance_id, {})
        completed = status.get("workflowStatus") == "completed"
        message_id = message_id_for(
            workflow_id_for(stack.account_group_id, stack.campaign_id, instance_id), "intro"
        )
        if instance_id in tally.approved and not completed:
            tally.problems.append(f"{instance_id} approved (200) but {status}")
        if instance_id not in tally.approved | tally.unconfirmed and completed:
            tally.problems.append(f"{instance_id} completed without an approval")
        if completed:
            expected.add(message_id)
    if set(delivered) != expected:
        tally.problems.append(
            f"deliveries differ from completed instances: "
            f"{len(set(delivered) - expected)} unexpected, {len(expected - set(delivered))} missing"
        )


async def soak(duration: float, enrollers: int = 4, approvers: int = 8, seed: int = 1) -> Tally:
    """Runs the soak on a private stack (one API, two workers, SMTP delivery to a sink): load
    for `duration` seconds, then waits for instances to settle and accounts for them."""
    smtp = SmtpSink()
    smtp.start()
    tally = Tally()
    try:
        with tempfile.TemporaryDirectory(prefix="campaign-engine-soak-") as state_dir:
            async with running_stack(
                Path(state_dir), workers=2, delivery="smtp", smtp_port=smtp.port
            ) as stack:
                until = time.monotonic() + duration
                rng = random.Random(seed)
                await asyncio.gather(
                    *(enroller(stack, tally, until, rng) for _ in range(enrollers)),
                    *(approver(stack, tally, until, rng) for _ in range(approvers)),
                )
                final = await settle(stack, tally, within=60 + duration)
                account(stack, tally, smtp, final)
                tally.statuses["instances completed"] = sum(
                    1 for s in final.values() if s["workflowStatus"] == "completed"
                )
                tally.statuses["instances waiting at their gate"] = sum(
                    1 for s in final.values() if s["hasPendingApproval"]
                )
                tally.statuses["messages delivered"] = len(smtp.received())
    finally:
        smtp.stop()
    return tally


def report(tally: Tally) -> str:
    """The tally as text: the counts, then each problem, or "no problems"."""
    lines = [f"{count:>7}  {what}" for what, count in sorted(tally.statuses.items())]
    lines.append(f"{len(tally.enrolled):>7}  instances enrolled")
    lines.append(f"{len(tally.approved):>7}  approvals answered 200")
    lines.append(f"{len(tally.unconfirmed):>7}  approvals answered 502 (outcome checked by state)")
    lines += [f"PROBLEM: {problem}" for problem in tally.problems] or ["no problems"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """`python -m bench.soak`: runs a soak and prints its report; exit status 1 on any problem."""
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__)
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of load")
    parser.add_argument("--enrollers", type=int, default=4)
    parser.add_argument("--approvers", type=int, default=8)
    args = parser.parse_args(argv)
    tally = asyncio.run(soak(args.duration, args.enrollers, args.approvers))
    print(report(tally))
    return 1 if tally.problems else 0


if __name__ == "__main__":
    sys.exit(main())
