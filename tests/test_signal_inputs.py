"""Operator signals are never dropped, whatever their input (issue 8, item 4).

The inputs are sent the way operators send them: with the `temporal` CLI of the README, so the
payloads are exactly what the CLI encodes.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from temporalio.client import Client
from temporalio.worker import Worker

from campaign_engine.ids import workflow_id_for
from campaign_engine.keys import ALL_ACCOUNT_GROUPS, Permission
from entrypoints.devserver import DevServer
from tests.helpers import (
    Api,
    Campaign,
    approve,
    current_details,
    enrol_to_gate,
    handle_of,
    outbox_files,
    wait_for_status,
)
from workflows.campaign import CampaignWorkflow
from workflows.signal_inputs import MAX_TEXT_CHARS, decode
from workflows.types import LeadEvent, StopRequest


async def cli_signal(
    server: DevServer,
    campaign: Campaign,
    instance_id: str,
    name: str,
    *inputs: str,
    flags: tuple[str, ...] = (),
) -> None:
    """`temporal workflow signal …` as the README shows it (plus `flags`, e.g. the codec's);
    asserts the CLI said success."""
    workflow_id = workflow_id_for(campaign.account_group_id, campaign.campaign_id, instance_id)
    arguments = [
        "workflow", "signal", "--address", server.address,
        "--workflow-id", workflow_id, "--name", name,
    ]  # fmt: skip
    for value in inputs:
        arguments += ["--input", value]
    arguments += flags
    process = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).with_name("temporal")),
        *arguments,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await process.communicate()
    assert process.returncode == 0, err.decode()


# (signal, CLI inputs, stop reason, who, note or reason, problems expected)
CASES: list[tuple[str, list[str], str, str, str, bool]] = [
    # The issue's inputs: a null field, and a bare string where an object was expected.
    (
        "lead_unsubscribed",
        ['{"reported_by":"crm","note":null}'],
        "LEAD_UNSUBSCRIBED",
        "crm",
        "",
        False,
    ),
    (
        "stop",
        ['"paused for the holidays"'],
        "STOPPED_BY_OPERATOR",
        "operator",
        "paused for the holidays",
        False,
    ),
    (
        "stop",
        ['{"reason": null, "stopped_by": null}'],
        "STOPPED_BY_OPERATOR",
        "operator",
        "",
        False,
    ),
    # More of the same kinds: camelCase, a number, extra fields, extra inputs, garbage.
    (
        "lead_replied",
        ['{"decidedBy": "crm", "note": "call me"}'],
        "LEAD_REPLIED",
        "crm",
        "call me",
        False,
    ),
    ("lead_replied", ['{"reported_by": 7, "note": true}'], "LEAD_REPLIED", "7", "true", False),
    ("discard", ['{"by": "ops", "colour": "red"}'], "CONTENT_DISCARDED", "ops", "", True),
    ("stop", ["42"], "STOPPED_BY_OPERATOR", "operator", "", True),
    ("stop", ['["a", "b"]'], "STOPPED_BY_OPERATOR", "operator", "", True),
    ("stop", ['"first"', '"second"'], "STOPPED_BY_OPERATOR", "operator", "first", True),
    ("lead_unsubscribed", ['{"note": {"nested": 1}}'], "LEAD_UNSUBSCRIBED", "operator", "", True),
    ("lead_unsubscribed", ["null"], "LEAD_UNSUBSCRIBED", "operator", "", False),
    ("lead_unsubscribed", [], "LEAD_UNSUBSCRIBED", "operator", "", False),
]


@pytest.mark.parametrize(("signal", "inputs", "reason", "who", "note", "problems"), CASES)
async def test_operator_signal_applies_whatever_its_input(
    api: Api,
    campaign: Campaign,
    worker: Worker,
    temporal: Client,
    temporal_server: DevServer,
    signal: str,
    inputs: list[str],
    reason: str,
    who: str,
    note: str,
    problems: bool,
) -> None:
    instance_id = await enrol_to_gate(api, campaign)

    await cli_signal(temporal_server, campaign, instance_id, signal, *inputs)

    status = await wait_for_status(api, campaign, instance_id, workflowStatus="stopped")
    assert status["workflowStopReason"] == reason
    handle = handle_of(temporal, campaign, instance_id)
    result = await handle.query(CampaignWorkflow.lead_status)
    assert result.stop is not None
    assert (result.stop.decided_by, result.stop.note) == (who, note)
    # Stopped means stopped: the gate that was open approves nothing now, and nothing is sent.
    refused = await approve(api, campaign, instance_id)
    assert refused.status_code == 409
    assert refused.json()["error"]["details"] == "WORKFLOW_CLOSED"
    assert outbox_files(api.settings) == []
    details = await current_details(handle)
    if problems:
        assert result.signal_input_problems, result
        assert f"`{signal}`" in result.signal_input_problems[-1]
        assert "**Signal input not understood**" in details
    else:
        assert result.signal_input_problems == []
        assert "not understood" not in details


async def test_a_not_understood_input_is_recorded_even_at_an_open_gate(
    api: Api, campaign: Campaign, worker: Worker, temporal: Client, temporal_server: DevServer
) -> None:
    # An approve typed by hand with a wrong shape still approves; what was ignored is recorded.
    # (Under the strict payload codec an approve must be encrypted: through the codec endpoint,
    # with an operator's key; a plain one is refused, tests/test_codec_scopes.py.)
    instance_id = await enrol_to_gate(api, campaign)
    operator = await api.issue_key([ALL_ACCOUNT_GROUPS], [Permission.PAYLOADS_DECODE])
    codec = (
        "--codec-endpoint",
        f"{api.http.base_url}/codec",
        "--codec-auth",
        f"Bearer {operator.key}",
    )

    await cli_signal(
        temporal_server, campaign, instance_id, "approve", '{"approver": "ops"}', flags=codec
    )

    await wait_for_status(api, campaign, instance_id, hasPendingApproval=False)
    result = await handle_of(temporal, campaign, instance_id).query(CampaignWorkflow.lead_status)
    [decision] = result.gate_decisions
    assert (decision.decision, decision.decided_by) == ("approved", "operator")
    [problem] = result.signal_input_problems
    assert problem.startswith("`approve` at ")
    assert problem.endswith(": unknown field(s) ignored: approver")


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=8,
)
field_names = st.sampled_from(
    ["note", "reason", "decided_by", "decidedBy", "reported_by", "stopped_by", "by", "x"]
)


@settings(max_examples=300, deadline=None)
@given(
    inputs=st.lists(json_values | st.dictionaries(field_names, json_values, max_size=4), max_size=3)
)
def test_decoding_never_fails_and_always_yields_text(inputs: list[Any]) -> None:
    for cls, text_field in ((LeadEvent, "note"), (StopRequest, "reason")):
        decoded = decode(cls, tuple(inputs), text_field=text_field, aliases={"by": "decided_by"})
        for value in vars(decoded.value).values():
            assert isinstance(value, str)
            assert len(value) <= MAX_TEXT_CHARS
        if len(inputs) > 1:
            assert decoded.problems
