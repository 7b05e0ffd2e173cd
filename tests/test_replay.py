"""Recorded histories of every workflow shape replay against today's code.

A change that would make a running instance non-deterministic fails here, in CI, before it is
deployed. Re-record with `make histories` only for a change that is compatible (or patched).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.worker import Replayer

from workflows.campaign import CampaignWorkflow

HISTORIES = sorted((Path(__file__).parent / "histories").glob("*.json"))
SHAPES = {
    "gate_approved",
    "gate_expired",
    "discarded",
    "replied_during_delay",
    "delivery_failed",
    "stopped_during_delivery",
    # Recorded with the code before the `cancel-delivery-on-stop` patch (commit 08cf317), which
    # waited for the send: `make histories` cannot re-record it, and must not.
    "stopped_during_delivery_unpatched",
    "notified_then_approved",
    "continued_as_new_run1",
    "continued_as_new_run2",
    "continued_as_new_in_delay_run1",
    "continued_as_new_in_delay_run2",
}


def test_every_shape_has_a_recorded_history() -> None:
    assert {path.stem for path in HISTORIES} == SHAPES


@pytest.mark.parametrize("path", HISTORIES, ids=[path.stem for path in HISTORIES])
async def test_recorded_history_replays(path: Path) -> None:
    history = WorkflowHistory.from_json(f"recorded-{path.stem}", path.read_text())  # noqa: ASYNC240

    result = await Replayer(workflows=[CampaignWorkflow]).replay_workflow(
        history, raise_on_replay_failure=False
    )

    assert result.replay_failure is None, f"{path.name}: {result.replay_failure}"
