"""`campaign-engine patches`: for each patch in `workflows/versions.py`, whether a running instance
may still need what the code keeps for it, from Temporal's visibility, and what a developer does
next. It reads; it changes neither code nor instances.

A run counts by its own start time (a continue-as-new starts a new run, which takes every patch's
new branch). The SDK core upserts `TemporalChangeVersion`, the ids of every patch the run has met,
live or deprecated, the first time it meets one; visibility cannot tell the two apart. A
continue-as-new does not carry it over: each run lists its own.

- A **live** patch's old branch can go (deprecate it) once no running run started before the day
  after it shipped lacks its marker: such a run may have passed the patch point on the old code.
  (One still short of the patch point counts too, to be safe; it takes the new branch when it gets
  there, and stops counting.)
- A **deprecated** patch can be removed once no running run started before the day after its
  deprecation carries its marker: that marker may be the live one, which code without the call
  cannot replay. Runs started later carry the deprecated marker, which it can.

Visibility lags the runs by a second or so; the verdict is only as right as the registry's dates
(the day each release reached every worker).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from enum import StrEnum
from typing import Any

from temporalio.client import Client
from temporalio.common import SearchAttributeKey

from workflows.types import WORKFLOW_TYPE
from workflows.versions import Patch, PatchState

PATCH_IDS = SearchAttributeKey.for_keyword_list("TemporalChangeVersion")
"""The ids of the patches a run has met (written by the SDK core, not by us)."""
EXAMPLES = 5
SCANNED_FOR_EXAMPLES = 1000
"""Runs looked at, at most, to find example workflow ids without a marker."""
REGISTRY = "workflows/versions.py"


class Verdict(StrEnum):
    """What the code may do with a patch now."""

    KEEP = "keep"
    """Running runs may still need what the code keeps for it: leave it as it is."""
    DEPRECATE = "deprecate"
    """Live, and no running run can be on its old branch."""
    REMOVE = "remove"
    """Deprecated, and no running run can hold its live marker."""
    REMOVED = "removed"
    """Gone from the code already; nothing to check."""


ACTIONABLE = frozenset({Verdict.DEPRECATE, Verdict.REMOVE})
"""Verdicts that ask a developer to change the code."""


def cutoff_of(day: date) -> datetime:
    """The start of the UTC day after `day`: a release that reached every worker on `day` may
    have done so at any time of it, so runs started before this may predate it."""
    return datetime.combine(day + timedelta(days=1), time(), UTC)


def _visibility_time(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class PatchStatus:
    """One patch, as visibility sees the running runs."""

    patch: Patch
    cutoff: datetime | None = None
    """Runs started before this may need the code kept for the patch (None: removed)."""
    started_before: int = 0
    """Running runs started before `cutoff`."""
    marked_before: int = 0
    """Of those, the ones whose `TemporalChangeVersion` lists the patch."""
    marked: int = 0
    """Running runs whose `TemporalChangeVersion` lists the patch, whenever started."""
    examples: list[str] = field(default_factory=list)
    """Workflow ids of runs that hold the patch back."""

    @property
    def holding_back(self) -> int:
        """Running runs that may still need what the code keeps for the patch."""
        state = self.patch.state
        if state == PatchState.LIVE:
            return self.started_before - self.marked_before
        if state == PatchState.DEPRECATED:
            return self.marked_before
        return 0

    @property
    def verdict(self) -> Verdict:
        """What the code may do with the patch now."""
        state = self.patch.state
        if state == PatchState.REMOVED:
            return Verdict.REMOVED
        if self.holding_back:
            return Verdict.KEEP
        return Verdict.DEPRECATE if state == PatchState.LIVE else Verdict.REMOVE

    def findings(self) -> str:
        """What visibility showed, in a sentence."""
        patch, cutoff = self.patch, self.cutoff
        if patch.state == PatchState.REMOVED or cutoff is None:
            return f"Removed on {patch.removed}: the code no longer calls it."
        before = f"started before {cutoff:%Y-%m-%d %H:%M} UTC"
        if patch.state == PatchState.LIVE:
            if self.holding_back:
                return (
                    f"{self.holding_back} running run(s) {before} lack its marker: they may be on "
                    f"its old branch ({self.marked_before} such run(s) carry it)."
                )
            return (
                f"No running run {before} lacks its marker ({self.marked_before} carry it): none "
                "can be on its old branch."
            )
        if self.holding_back:
            return (
                f"{self.holding_back} running run(s) {before} carry its marker, which may be the "
                "live one."
            )
        return (
            f"No running run {before} carries its marker ({self.marked} later run(s) carry the "
            "deprecated one)."
        )

    def next_step(self, today: date) -> str:
        """What a developer does next, in a sentence or three."""
        patch = self.patch
        on = f"date({today.year}, {today.month}, {today.day})"
        if self.verdict == Verdict.DEPRECATE:
            return (
                f"Deprecate it: in {REGISTRY} give its entry `deprecated={on}` (the UTC day the "
                f"release with it reaches every worker; the workflow must call "
                f"`versions.patched({patch.id!r})`), record that release's histories "
                "(`make histories`), and `git rm` the histories tests/test_replay.py then names "
                "as retired (they took the old branch)."
            )
        if self.verdict == Verdict.REMOVE:
            return (
                f"Remove it: in {REGISTRY} give its entry `removed={on}` (the day that release "
                f"reaches every worker; the entry stays), delete its `if patched({patch.id!r})` "
                "and the old branch, and `git rm` the histories tests/test_replay.py then names as "
                "retired (they hold its live marker)."
            )
        if self.verdict == Verdict.KEEP:
            return "Nothing yet: check again once those runs have ended."
        return "Nothing: the entry stays so that its id is never used again."

    def as_json(self, today: date) -> dict[str, Any]:
        """This status for scripts (`--json`)."""
        patch = self.patch
        return {
            "id": patch.id,
            "state": patch.state.value,
            "shipped": patch.shipped.isoformat(),
            "deprecated": patch.deprecated.isoformat() if patch.deprecated else None,
            "removed": patch.removed.isoformat() if patch.removed else None,
            "change": patch.change,
            "cutoff": _visibility_time(self.cutoff) if self.cutoff else None,
            "runningStartedBefore": self.started_before,
            "carryingMarkerStartedBefore": self.marked_before,
            "carryingMarker": self.marked,
            "holdingBack": self.holding_back,
            "examples": self.examples,
            "verdict": self.verdict.value,
            "next": self.next_step(today),
        }


async def check(
    client: Client, patches: Iterable[Patch], *, scope: str | None = None
) -> list[PatchStatus]:
    """Asks visibility, for each patch not removed, about the running `CampaignWorkflow` runs.

    `scope`: a visibility filter ANDed to every query (e.g. `CampaignId = '...'`), to look at
    part of the namespace. Temporal's RPC errors propagate.
    """
    running = f"WorkflowType = '{WORKFLOW_TYPE}' AND ExecutionStatus = 'Running'"
    if scope:
        running += f" AND ({scope})"
    statuses = []
    for patch in patches:
        status = PatchStatus(patch)
        statuses.append(status)
        if patch.state == PatchState.REMOVED:
            continue
        # Live: runs from before it shipped; deprecated: runs from before the deprecation.
        status.cutoff = cutoff_of(patch.deprecated or patch.shipped)
        before = f"{running} AND StartTime < '{_visibility_time(status.cutoff)}'"
        marked = f"{PATCH_IDS.name} = '{patch.id}'"
        status.started_before = (await client.count_workflows(before)).count
        status.marked_before = (await client.count_workflows(f"{before} AND {marked}")).count
        status.marked = (await client.count_workflows(f"{running} AND {marked}")).count
        if status.holding_back:
            status.examples = await _examples(client, patch, before, marked)
    return statuses


async def _examples(client: Client, patch: Patch, before: str, marked: str) -> list[str]:
    """Workflow ids of runs holding `patch` back: for a live one, runs started before its cut-off
    without its marker (looked for among the first `SCANNED_FOR_EXAMPLES`); for a deprecated one,
    those with it."""
    found: list[str] = []
    if patch.state == PatchState.DEPRECATED:
        async for execution in client.list_workflows(f"{before} AND {marked}", limit=EXAMPLES):
            found.append(execution.id)
        return found
    async for execution in client.list_workflows(before, limit=SCANNED_FOR_EXAMPLES):
        if patch.id not in (execution.typed_search_attributes.get(PATCH_IDS) or []):
            found.append(execution.id)
            if len(found) == EXAMPLES:
                break
    return found


def report(statuses: list[PatchStatus], *, namespace: str, now: datetime, address: str = "") -> str:
    """The statuses for a person: per patch its state, what visibility showed, what to do.
    `address` names the Temporal frontend asked (the verdicts hold for that namespace only)."""
    where = f" at {address}" if address else ""
    lines = [
        f"Patches of {WORKFLOW_TYPE}, running runs in namespace {namespace!r}{where} as visibility "
        f"showed them at {now:%Y-%m-%d %H:%M} UTC (a verdict holds only for the namespace your "
        "production workers run in):"
    ]
    for status in statuses:
        patch = status.patch
        since = {
            PatchState.LIVE: patch.shipped,
            PatchState.DEPRECATED: patch.deprecated,
            PatchState.REMOVED: patch.removed,
        }[patch.state]
        lines += [
            "",
            f"{patch.id}: {patch.state.value} since {since} -> {status.verdict.value}",
            f"  {patch.change}",
            f"  {status.findings()}",
        ]
        if status.examples:
            lines.append(f"  For example (of the runs found): {', '.join(status.examples)}")
        lines.append(f"  Next: {status.next_step(now.date())}")
    return "\n".join(lines)
