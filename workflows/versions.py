"""The workflow's patches, one registry entry each: its id, the day it shipped, what it changes and
where it is in its life.

A patch (`workflow.patched`) lets changed workflow code replay the histories of instances that ran
before the change: a run that reaches the patch point for the first time on the new code records
a marker (a `MarkerRecorded` event with the patch id) and takes the new branch; a run whose history
passed that point without the marker replays the old branch. Every patch goes through three
states, each a date on its entry (the UTC day the release carrying the change reached every
worker; when unsure, a later day is the safe side):

- **live** (`shipped`): `if patched(ID): new else: old`.
- **deprecated** (`deprecated`): once no running run may be on the old branch
  (`campaign-engine patches` says so, from visibility). `patched(ID)` then calls
  `workflow.deprecate_patch` and returns True: only the new branch runs, histories with the marker
  still replay, and new runs record a deprecated marker, which code without the call accepts.
- **removed** (`removed`): once no running run may carry the live marker (runs started before the
  deprecation shipped). The `if` and its old branch go; `patched(ID)` returns True without a
  marker. The entry stays, so the id is never used again.

Adding a patch is one entry: `NAME = register(Patch(id=..., shipped=..., change=...))`. Moving it
on is one field: `deprecated=date(...)`, later `removed=date(...)`. The replay suite
(`tests/test_replay.py`) then asks for recorded histories of it (docs/patches.md).

Deterministic and free of I/O: the workflow imports it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date
from enum import StrEnum

from temporalio import workflow


class PatchState(StrEnum):
    """Where a patch is in its life; follows from which of its dates are set."""

    LIVE = "live"
    """Both branches in the code; `patched` says which one this run takes."""
    DEPRECATED = "deprecated"
    """Only the new branch runs; the marker is still recorded (as deprecated) and accepted."""
    REMOVED = "removed"
    """No call to the SDK any more; the entry stays so the id is never reused."""


_ID = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")


@dataclass(frozen=True)
class Patch:
    """One patch of `CampaignWorkflow`."""

    id: str
    """The marker's patch id, as histories hold it: never changed, never reused."""
    shipped: date
    """UTC day the release with the patch reached every worker: runs started later never take
    the old branch."""
    change: str
    """What the new branch does differently, for the operator reading `campaign-engine patches`."""
    deprecated: date | None = None
    """UTC day the release calling `workflow.deprecate_patch` reached every worker: runs started
    later carry no live marker."""
    removed: date | None = None
    """UTC day the release without the patch's branch reached every worker."""

    @property
    def state(self) -> PatchState:
        """Live, deprecated or removed, from the dates that are set."""
        if self.removed is not None:
            return PatchState.REMOVED
        if self.deprecated is not None:
            return PatchState.DEPRECATED
        return PatchState.LIVE

    def check(self) -> None:
        """Raises ValueError for an id histories could not hold or dates out of order."""
        if not _ID.match(self.id):
            raise ValueError(f"patch id {self.id!r}: lowercase words joined by hyphens")
        if not self.change.strip():
            raise ValueError(f"patch {self.id}: say what it changes")
        if self.removed is not None and self.deprecated is None:
            raise ValueError(f"patch {self.id}: deprecated before it is removed")
        if self.deprecated is not None and self.deprecated < self.shipped:
            raise ValueError(f"patch {self.id}: deprecated before it shipped")
        if self.removed is not None and self.deprecated and self.removed < self.deprecated:
            raise ValueError(f"patch {self.id}: removed before it was deprecated")


PATCHES: dict[str, Patch] = {}
"""Every patch, by id, in the order registered (oldest first)."""


def register(patch: Patch) -> str:
    """Adds `patch` to `PATCHES` and returns its id (for the constant the workflow uses).

    Raises ValueError for an id already registered or an entry `Patch.check` refuses.
    """
    patch.check()
    if patch.id in PATCHES:
        raise ValueError(f"patch id {patch.id!r} is registered twice")
    PATCHES[patch.id] = patch
    return patch.id


def patched(patch_id: str) -> bool:
    """Whether this run takes the new branch of `patch_id` (a registered id), by its state.

    Live: `workflow.patched`. Deprecated: `workflow.deprecate_patch`, then True. Removed: True,
    without calling the SDK (its `if` should be gone by then). Raises KeyError for an id not in
    the registry: every patch is registered.
    """
    state = PATCHES[patch_id].state
    if state == PatchState.LIVE:
        return workflow.patched(patch_id)
    if state == PatchState.DEPRECATED:
        workflow.deprecate_patch(patch_id)
    return True


# --- the patches, oldest first (shipped: the day of the commit that added it) --------------------

CANCEL_DELIVERY_ON_STOP = register(
    Patch(
        id="cancel-delivery-on-stop",
        shipped=date(2026, 11, 29),  # a996305
        change="A stop during delivery cancels a delivery that has not handed the message over "
        "yet; before, the stop waited for the send.",
    )
)
GATE_SEARCH_ATTRIBUTES = register(
    Patch(
        id="gate-search-attributes",
        shipped=date(2026, 11, 29),  # 1d3acd8
        change="Each phase change also indexes the gate (GateId, GateOpenedAt, GateExpiresAt) and "
        "the step (LatestStep): more search attributes in each upsert.",
    )
)
APPROVAL_EVENTS = register(
    Patch(
        id="approval-events",
        shipped=date(2026, 11, 29),  # 1d3acd8
        change="A gate's webhook notices carry its gate id, reminders are sent before expiry "
        "(timers) and a resolution notice when it is resolved (an activity).",
    )
)
CARRY_NOTICES = register(
    Patch(
        id="carry-notices",
        shipped=date(2026, 12, 4),  # f71d094
        change="A run that continues as new hands its unfinished webhook notices to the next run "
        "(which sends them) and carries its state as it is then; before, it waited for the "
        "notices (up to an hour of retries) first.",
    )
)
OUT_OF_OFFICE_HOLD = register(
    Patch(
        id="out-of-office-hold",
        shipped=date(2026, 12, 5),
        change="An automatic answer with a return date, in a campaign with `outOfOfficeHold`, "
        "holds the instance's deliveries until then (a timer, deferred `out_of_office`; a "
        "mailbox slot reserved for a send inside the hold is released); before, code that "
        "ignored the option delivered as usual. Checked where the answer is applied.",
    )
)
CANCEL_AS_STOP = register(
    Patch(
        id="cancel-as-stop",
        shipped=date(2026, 12, 5),
        change="A cancellation requested in Temporal (Web UI, `temporal workflow cancel`) is "
        "handled as a stop with reason CANCELED where it lands (a draft under way is cancelled, "
        "a delivery that has not handed over is cancelled, a reserved mailbox slot is released, "
        "the gate's resolution is notified), then the execution closes Canceled; before, the "
        "cancellation was raised wherever the run waited, skipping that bookkeeping. Checked "
        "when the cancellation arrives.",
    )
)
