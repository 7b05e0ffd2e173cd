"""Recorded histories of every workflow shape replay against today's code.

A change that would make a running instance non-deterministic fails here, in CI, before it is
deployed. Re-record with `make histories` only for a change that is compatible (or patched).

The histories' payloads are encrypted, as in production, under the test key checked in at
`tests/keys.py`; the replayer decrypts them with the same data converter our clients use.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.worker import Replayer

from campaign_engine.codec import ENCODING, data_converter
from campaign_engine.settings import Settings
from tests.keys import TEST_PAYLOAD_KEYS
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
    "sent_in_window",
    "paused_then_resumed",
    "continued_as_new_run1",
    "continued_as_new_run2",
    "continued_as_new_in_delay_run1",
    "continued_as_new_in_delay_run2",
    # Conditional approvals (If-Match): one applied, one refused GATE_CHANGED, one with `*`.
    "gate_changed_then_approved",
}


def test_every_shape_has_a_recorded_history() -> None:
    assert {path.stem for path in HISTORIES} == SHAPES


@pytest.mark.parametrize("path", HISTORIES, ids=[path.stem for path in HISTORIES])
async def test_recorded_history_replays(path: Path) -> None:
    history = WorkflowHistory.from_json(f"recorded-{path.stem}", path.read_text())  # noqa: ASYNC240

    converter = data_converter(Settings(payload_keys=TEST_PAYLOAD_KEYS))
    result = await Replayer(workflows=[CampaignWorkflow], data_converter=converter).replay_workflow(
        history, raise_on_replay_failure=False
    )

    assert result.replay_failure is None, f"{path.name}: {result.replay_failure}"


@pytest.mark.parametrize("path", HISTORIES, ids=[path.stem for path in HISTORIES])
def test_recorded_history_is_encrypted(path: Path) -> None:
    """The started event's input is an encrypted payload: the suite replays what production
    stores, not clear text."""
    history = WorkflowHistory.from_json(f"recorded-{path.stem}", path.read_text())
    started = history.events[0].workflow_execution_started_event_attributes
    [payload] = started.input.payloads
    assert payload.metadata["encoding"] == ENCODING
