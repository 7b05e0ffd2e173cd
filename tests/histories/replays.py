"""The recorded histories replayed: which patch markers they hold, which branch of each patch their
code took, and whether every patch has the histories it needs.

A patch (`workflows/versions.py`) needs, while live, a history that took its new branch (its marker
is in it) and one that took its old branch (the code reached its patch point and found no marker:
recorded with the code before the patch); once deprecated, a history with its live marker (runs
from before the deprecation, which the deprecated code must replay) and one with its deprecated
marker (runs after, which must still replay once it is removed).
`python -m tests.histories.replays` prints that coverage, history by history.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from temporalio.client import WorkflowHistory
from temporalio.worker import Replayer
from temporalio.worker._workflow_instance import _WorkflowInstanceImpl

from campaign_engine.codec import data_converter
from campaign_engine.key_usage import PATCH_MARKER
from campaign_engine.settings import Settings
from tests.histories import histories, name_of
from tests.keys import TEST_PAYLOAD_KEYS
from workflows.campaign import CampaignWorkflow
from workflows.mailbox_reader import MailboxReaderWorkflow
from workflows.versions import PATCHES, Patch, PatchState

PATCH_DATA = "patch-data"
"""The detail of a patch marker that holds `{"id": ..., "deprecated": ...}` (the SDK core's)."""


def load(path: Path) -> WorkflowHistory:
    """The history in `path` (its payloads still encrypted)."""
    return WorkflowHistory.from_json(f"recorded-{name_of(path)}", path.read_text())


@dataclass(frozen=True)
class Marker:
    """A patch marker in a history: `workflow.patched` (live) or `workflow.deprecate_patch`."""

    patch_id: str
    deprecated: bool


def markers(history: WorkflowHistory) -> list[Marker]:
    """The patch markers of `history`, in order (the SDK core writes them in clear)."""
    found = []
    for event in history.events:
        if not event.HasField("marker_recorded_event_attributes"):
            continue
        attributes = event.marker_recorded_event_attributes
        if attributes.marker_name != PATCH_MARKER:
            continue
        [payload] = attributes.details[PATCH_DATA].payloads
        data = json.loads(payload.data)
        found.append(Marker(data["id"], bool(data.get("deprecated"))))
    return found


@dataclass(frozen=True)
class PatchCall:
    """One `workflow.patched` / `workflow.deprecate_patch` call the workflow made while replaying.

    `taken` is what the SDK decided: True when the history holds the marker (the new branch),
    False when it does not (a live patch's old branch).
    """

    patch_id: str
    deprecated: bool
    taken: bool


@contextlib.contextmanager
def patch_calls_observed() -> Iterator[list[PatchCall]]:
    """Records every patch call of every workflow replayed meanwhile, in the list yielded.

    The SDK has no public hook for this, so the instance's `workflow_patch` (which both
    `workflow.patched` and `workflow.deprecate_patch` call) is wrapped, untouched in what it
    does. Should the SDK rename it, this fails at once, not silently.
    """
    original = _WorkflowInstanceImpl.workflow_patch
    calls: list[PatchCall] = []

    def observed(self: _WorkflowInstanceImpl, id: str, *, deprecated: bool, **rest: Any) -> bool:
        taken = original(self, id, deprecated=deprecated, **rest)
        calls.append(PatchCall(id, deprecated, taken))
        return taken

    _WorkflowInstanceImpl.workflow_patch = observed  # type: ignore[method-assign]
    try:
        yield calls
    finally:
        _WorkflowInstanceImpl.workflow_patch = original  # type: ignore[method-assign]


@dataclass
class Replayed:
    """One history replayed against today's code."""

    path: Path
    failure: Exception | None
    markers: list[Marker]
    calls: list[PatchCall]

    @property
    def name(self) -> str:
        """`<release>/<stem>`."""
        return name_of(self.path)

    def took_old_branch(self, patch_id: str) -> bool:
        """The code reached the patch point without finding the marker (live: the old branch)."""
        return any(call.patch_id == patch_id and not call.taken for call in self.calls)

    def has_marker(self, patch_id: str, *, deprecated: bool) -> bool:
        """The history holds a (deprecated, or live) marker of `patch_id`."""
        return Marker(patch_id, deprecated) in self.markers

    def retirement(self, patches: dict[str, Patch] = PATCHES) -> str | None:
        """Why this history may legitimately no longer replay, if it may: it holds the live
        marker of a removed patch, or reached a deprecated patch's point without its marker (so
        it may have taken the old branch, which is gone). Such a history stands for runs
        `campaign-engine patches` found none of: retire it (`git rm`)."""
        for marker in self.markers:
            patch = patches.get(marker.patch_id)
            if patch and patch.state == PatchState.REMOVED and not marker.deprecated:
                return f"it holds the live marker of removed patch {patch.id}"
        for call in self.calls:
            patch = patches.get(call.patch_id)
            if patch and patch.state != PatchState.LIVE and not call.taken:
                return f"it reached deprecated patch {patch.id} without its marker (old branch)"
        return None


async def replay(paths: Iterable[Path]) -> list[Replayed]:
    """Replays each history against today's `CampaignWorkflow` and `MailboxReaderWorkflow`,
    decrypting with the test keys, and notes its markers and the patch calls the code made."""
    converter = data_converter(Settings(payload_keys=TEST_PAYLOAD_KEYS))
    replayer = Replayer(
        workflows=[CampaignWorkflow, MailboxReaderWorkflow], data_converter=converter
    )
    results = []
    with patch_calls_observed() as calls:
        for path in paths:
            calls.clear()
            history = load(path)
            result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
            results.append(Replayed(path, result.replay_failure, markers(history), list(calls)))
    return results


@dataclass
class Coverage:
    """Which histories cover one patch's branches."""

    patch: Patch
    live_marker: list[str] = field(default_factory=list)
    """Histories that took the new branch while the patch was live (its marker)."""
    deprecated_marker: list[str] = field(default_factory=list)
    """Histories recorded once it was deprecated (its deprecated marker)."""
    old_branch: list[str] = field(default_factory=list)
    """Histories whose run reached the patch point without the marker."""
    without_marker: list[str] = field(default_factory=list)
    """Histories without any marker of it (the old branch, or never at the patch point)."""

    @property
    def missing(self) -> list[str]:
        """What the replay suite lacks for this patch, in words; empty when covered."""
        state = self.patch.state
        needs: list[tuple[list[str], str]] = []
        if state == PatchState.LIVE:
            needs = [
                (self.live_marker, "a history with its marker (the new branch)"),
                (self.old_branch, "a history without its marker, recorded with the code before it"),
            ]
        elif state == PatchState.DEPRECATED:
            needs = [
                (self.live_marker, "a history with its live marker (recorded while it was live)"),
                (self.deprecated_marker, "a history with its deprecated marker (current code)"),
            ]
        return [need for found, need in needs if not found]


def coverage(replayed: Sequence[Replayed], patches: Iterable[Patch]) -> list[Coverage]:
    """For each patch, the histories of `replayed` that cover its branches."""
    result = []
    for patch in patches:
        covered = Coverage(patch)
        for history in replayed:
            if history.has_marker(patch.id, deprecated=False):
                covered.live_marker.append(history.name)
            if history.has_marker(patch.id, deprecated=True):
                covered.deprecated_marker.append(history.name)
            if history.took_old_branch(patch.id):
                covered.old_branch.append(history.name)
            if not any(marker.patch_id == patch.id for marker in history.markers):
                covered.without_marker.append(history.name)
        result.append(covered)
    return result


def report(covered: Sequence[Coverage]) -> str:
    """A table of `covered`, then what is missing, for a person."""
    lines = [
        f"{'patch':<28}{'state':<12}{'live marker':>12}{'deprecated':>12}{'old branch':>12}"
        f"{'no marker':>11}"
    ]
    for item in covered:
        lines.append(
            f"{item.patch.id:<28}{item.patch.state.value:<12}{len(item.live_marker):>12}"
            f"{len(item.deprecated_marker):>12}{len(item.old_branch):>12}"
            f"{len(item.without_marker):>11}"
        )
    for item in covered:
        lines += [f"{item.patch.id} needs {need}" for need in item.missing]
    return "\n".join(lines)


async def _main() -> int:
    replayed = await replay(histories())
    covered = coverage(replayed, PATCHES.values())
    print(report(covered))
    for history in replayed:
        for patch_id in sorted({call.patch_id for call in history.calls}):
            branch = "old" if history.took_old_branch(patch_id) else "new"
            print(f"  {history.name}: {patch_id} {branch} branch")
    return 1 if any(item.missing for item in covered) else 0


if __name__ == "__main__":
    # `python -m tests.histories.replays`: which histories cover which patch's branches.
    sys.exit(asyncio.run(_main()))
