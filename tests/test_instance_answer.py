"""The instance GET says what was sent when and what comes next: `lastDelivery` (step,
Message-ID, outcome, when), `nextStep` (step, what it waits for, when it is due) and, for a
failed instance, `failure`. Read from the `lead_status` query (`workflows.status.next_step`)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from temporalio.worker import Worker

from campaign_engine.ids import new_object_id
from tests.helpers import (
    Api,
    Campaign,
    approve_ok,
    create_campaign,
    enrol_to_gate,
    instance_data,
    message_id_of,
)
from tests.helpers.waiting import assert_eventually
from workflows import status
from workflows.types import (
    CampaignInput,
    CampaignSnapshot,
    CampaignState,
    CampaignStep,
    Deferral,
    Lead,
    NextStep,
    NextStepWait,
    Phase,
    ResumeAt,
    ScheduledDelivery,
)

THREE_STEPS: dict[str, Any] = {
    "name": "Three steps",
    "steps": [
        {"id": "intro", "subject": "Hi", "body": "Hello", "delay": "PT2H"},
        {"id": "nudge", "subject": "Again", "body": "Hello again", "delay": "P1D"},
        {"id": "last", "subject": "Last", "body": "Goodbye"},
    ],
}


def _at(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


async def test_after_a_delivery_the_instance_says_what_was_sent_and_what_is_next(
    api: Api, worker: Worker
) -> None:
    campaign = await create_campaign(api, THREE_STEPS)
    instance_id = await enrol_to_gate(api, campaign)

    at_gate = await instance_data(api, campaign, instance_id)
    assert at_gate["lastDelivery"] is None
    assert at_gate["nextStep"] == {"stepId": "intro", "waitingFor": "approval", "dueAt": None}
    assert at_gate["failure"] is None

    await approve_ok(api, campaign, instance_id)

    async def delivered() -> dict[str, Any]:
        data = await instance_data(api, campaign, instance_id)
        next_step = data["nextStep"] or {}
        return data if next_step.get("waitingFor") == "delay" and next_step["dueAt"] else {}

    data = await assert_eventually(delivered)

    last = data["lastDelivery"]
    assert last["stepId"] == "intro"
    assert last["messageId"] == message_id_of(campaign, instance_id, "intro")
    assert last["outcome"] == "sent"
    sent_at = _at(last["sentAt"])
    assert sent_at <= datetime.now(UTC)
    next_step = data["nextStep"]
    assert next_step["stepId"] == "nudge"
    # The delay counts from the delivery: due two hours after it (the same workflow time, or
    # the few milliseconds of workflow time between the record and the timer).
    assert timedelta(hours=2) <= _at(next_step["dueAt"]) - sent_at < timedelta(hours=2, minutes=1)
    assert data["delivery"] is None  # nothing under way: `lastDelivery` says what was done
    assert data["leadStatus"]["latestStep"] == "intro"


async def test_the_answer_fields_are_camel_case_and_documented(
    api: Api, campaign: Campaign
) -> None:
    schema = (await api.http.get("/openapi.json")).json()["components"]["schemas"]
    instance = schema["WorkflowInstance"]["properties"]
    for name in ("lastDelivery", "nextStep", "failure"):
        assert name in instance
    assert set(schema["LastDelivery"]["properties"]) == {
        "stepId",
        "messageId",
        "outcome",
        "sentAt",
    }
    assert set(schema["NextStep"]["properties"]) == {"stepId", "waitingFor", "dueAt"}
    assert set(schema["InstanceFailure"]["properties"]) == {
        "stepId",
        "errorType",
        "message",
        "attempt",
    }


# --- next_step, from the state alone ------------------------------------------------------------

_STEPS = [
    CampaignStep(id=step, subject="s", body="b", requires_approval=True)
    for step in ("intro", "nudge", "last")
]
_INPUT = CampaignInput(
    account_group_id=new_object_id(),
    campaign_id=new_object_id(),
    workflow_instance_id=new_object_id(),
    lead=Lead(id=new_object_id(), email="ada@example.com"),
    campaign=CampaignSnapshot(name="c", steps=_STEPS),
)
_NOON = datetime(2026, 12, 1, 12, tzinfo=UTC)


def _state(**fields: Any) -> CampaignState:
    return CampaignState(**fields)


def test_next_step_of_each_phase() -> None:
    cases: list[tuple[CampaignState, NextStep | None]] = [
        (_state(), NextStep("intro", NextStepWait.DRAFT)),
        (
            _state(phase=Phase.AWAITING_APPROVAL, at=ResumeAt.GATE, step_index=1),
            NextStep("nudge", NextStepWait.APPROVAL),
        ),
        (
            _state(phase=Phase.DELIVERING, at=ResumeAt.DELIVERY),
            NextStep("intro", NextStepWait.DELIVERY),
        ),
        (
            _state(
                phase=Phase.SCHEDULED,
                at=ResumeAt.DELIVERY,
                scheduled=ScheduledDelivery("intro", Deferral.OUTSIDE_WINDOW, _NOON),
            ),
            NextStep("intro", NextStepWait.SEND_TIME, _NOON),
        ),
        (
            _state(phase=Phase.DELAYING, at=ResumeAt.DELAY, delay_until=_NOON),
            NextStep("nudge", NextStepWait.DELAY, _NOON),
        ),
        # delivered, the delay's end not known yet (business days are an activity)
        (_state(phase=Phase.DELIVERING, at=ResumeAt.DELAY), NextStep("nudge", NextStepWait.DELAY)),
        # the last step delivered: nothing comes next
        (_state(phase=Phase.DELIVERING, at=ResumeAt.DELAY, step_index=2), None),
        (_state(phase=Phase.COMPLETED, at=ResumeAt.DELAY, step_index=2), None),
        (_state(phase=Phase.STOPPED, at=ResumeAt.GATE), None),
        (_state(phase=Phase.FAILED), None),
    ]
    for state, expected in cases:
        assert status.next_step(state, _INPUT) == expected, state
        assert status.lead_status(state, _INPUT).next_step == expected
