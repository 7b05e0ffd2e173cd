"""Recorded histories of every release replay against today's code, and every patch has histories
of both its branches.

A change that would make a running instance non-deterministic fails here, in CI, before it is
deployed. The histories live in one folder per release (`tests/histories/<YYYY-MM-DD>/`); a
release's folder is frozen, so the instances each release left running stay covered. Record the
current release's with `make histories` (see `tests/histories/record.py`).

The histories' payloads are encrypted, as in production, under the test key checked in at
`tests/keys.py`; the replayer decrypts them with the same data converter our clients use.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from campaign_engine.codec import ENCODING
from tests import histories as folders
from tests.histories import replays
from tests.histories.record import SHAPES
from workflows.versions import PATCHES, PatchState

HISTORIES = folders.histories()
NAMES = [folders.name_of(path) for path in HISTORIES]
PATCHES_IN_CODE = [patch for patch in PATCHES.values() if patch.state != PatchState.REMOVED]


@pytest.fixture(scope="module")
async def replayed() -> dict[str, replays.Replayed]:
    """Every history replayed once (with the patch calls its code made), by `<release>/<stem>`."""
    return {history.name: history for history in await replays.replay(HISTORIES)}


def test_histories_live_in_release_folders() -> None:
    root = folders.ROOT
    assert sorted(path.name for path in root.glob("*.json")) == []
    found = {p.name for p in root.iterdir() if p.is_dir() and p.name != "__pycache__"}
    assert found == set(folders.releases())
    assert found, "no release folder"


def test_every_history_is_of_a_shape_and_every_shape_is_recorded() -> None:
    """File names are `<shape>`, `<shape>_run<n>` (continue-as-new) or `<shape>_<note>` (e.g. the
    code it was recorded with); every shape the recorder knows has a history in some release."""

    def of(stem: str, shape: str) -> bool:
        return stem == shape or stem.startswith(f"{shape}_")

    stems = {path.stem for path in HISTORIES}
    strays = {stem for stem in stems if not any(of(stem, shape) for shape in SHAPES)}
    unrecorded = {shape for shape in SHAPES if not any(of(stem, shape) for stem in stems)}

    assert strays == set()
    assert unrecorded == set()


@pytest.mark.parametrize("name", NAMES)
def test_recorded_history_replays(name: str, replayed: dict[str, replays.Replayed]) -> None:
    history = replayed[name]
    retirement = history.retirement()
    hint = (
        f"\nIt may be retired: {retirement}. If `campaign-engine patches` found no running run "
        "that could be in its state, `git rm` it."
        if retirement
        else ""
    )

    assert history.failure is None, f"{name}: {history.failure}{hint}"


@pytest.mark.parametrize("path", HISTORIES, ids=NAMES)
def test_recorded_history_is_encrypted(path: Path) -> None:
    """The started event's input is an encrypted payload: the suite replays what production
    stores, not clear text."""
    history = replays.load(path)
    started = history.events[0].workflow_execution_started_event_attributes
    [payload] = started.input.payloads
    assert payload.metadata["encoding"] == ENCODING


@pytest.mark.parametrize("patch_id", [patch.id for patch in PATCHES_IN_CODE])
def test_every_patch_has_histories_of_both_its_branches(
    patch_id: str, replayed: dict[str, replays.Replayed]
) -> None:
    """Live: a history with its marker and one whose run reached the patch point without it
    (recorded with the code before the patch). Deprecated: one with its live marker and one with
    its deprecated marker. `python -m tests.histories.replays` shows the table."""
    [covered] = replays.coverage(list(replayed.values()), [PATCHES[patch_id]])

    assert covered.missing == [], (
        f"{patch_id}: record {' and '.join(covered.missing)} (docs/patches.md)"
    )


def test_every_marker_names_a_registered_patch(replayed: dict[str, replays.Replayed]) -> None:
    unknown = {
        name: marker.patch_id
        for name, history in replayed.items()
        for marker in history.markers
        if marker.patch_id not in PATCHES
    }

    assert unknown == {}


def test_a_marker_is_what_the_code_found(replayed: dict[str, replays.Replayed]) -> None:
    """The observed patch calls agree with the markers: the code took a patch's new branch
    exactly where the history holds its marker (so the coverage above reads the code right)."""
    disagreeing = [
        (name, call.patch_id)
        for name, history in replayed.items()
        for call in history.calls
        if call.taken != any(marker.patch_id == call.patch_id for marker in history.markers)
    ]

    assert disagreeing == []
