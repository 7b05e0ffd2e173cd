"""Signals around continue-as-new: none lost, no approval undone (issue 23's reproductions).

The real `CampaignWorkflow` on the dev server with a webhook receiver that fails (503), so the
first gate's `approval.resolved` notice is being retried when the run is due to continue as new:
at the second step's gate, in the first step's delay, or while the first step's approved message
waits for its send window. Code before the state refactor waited for that notice (about an hour
of retries) before continuing, and carried the state it had captured *before* waiting: a `stop`
handled in that window was lost, an `approve` answered 200 and was undone by the next run. Now
the run continues at once, handing the notice to the next run, and carries its state as it is.

Each case sends one signal (the operators' stops, the inbound pipeline's `inbound_message`, an
approval, a pause and a resume) right when the run is due to continue as new (the history has passed
`continue_as_new_after_events`) and asserts what a user relies on: stopped means stopped, a 200
means approved, a pause shows.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from temporalio.client import Client, WorkflowHandle
from temporalio.worker import Worker

from api.campaigns import campaign_of, snapshot_of
from api.instances import WorkflowInstances
from campaign_engine.ids import workflow_id_for
from devsupport.servers import WebhookReceiver
from tests.helpers import (
    Api,
    Campaign,
    approve,
    assert_eventually,
    lead,
    outbox_files,
    resumed_at,
)
from workflows.campaign import CampaignWorkflow
from workflows.types import (
    CampaignPauseEvent,
    DiscardRequest,
    InboundEvent,
    Lead,
    LeadEvent,
    LeadStatus,
    ResumeAt,
    StopReason,
    StopRequest,
    WorkflowStatus,
)

CONTINUE_AS_NEW_AFTER = 100
"""History events before a run is due to continue as new: above the length any scenario here
reaches at its wait (at most about 70), so the run is due only once nudged there."""
SECRET = "window-test-signing-secret"
DAYS = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    return {"webhook_allow_private_addresses": True}


def _definition(phase: str, url: str) -> dict[str, Any]:
    intro: dict[str, Any] = {"id": "intro", "subject": "Hi", "body": "Hello"}
    definition: dict[str, Any] = {
        "name": f"Window at the {phase}",
        "approvalTimeout": "P7D",
        "webhook": {"url": url, "secret": SECRET},
        "steps": [intro, {"id": "follow-up", "subject": "Again", "body": "Hello again"}],
    }
    if phase == "delay":
        intro["delay"] = "P1D"
    if phase == "scheduled":
        # Closed today (UTC), so the approved message waits for tomorrow's window.
        today = DAYS[datetime.now(UTC).weekday()]
        definition["sendWindow"] = {
            "days": [d for d in DAYS if d != today],
            "start": "09:00",
            "end": "17:00",
            "timeZone": "UTC",
        }
    return definition


def _resolved_events(receiver: WebhookReceiver) -> list[tuple[str, str]]:
    return [
        (payload["event"], payload["stepId"])
        for payload in (json.loads(request.body) for request in receiver.requests)
    ]


class Window:
    """One instance brought to the moment its run is due to continue as new."""

    def __init__(self, api: Api, campaign: Campaign, temporal: Client) -> None:
        self.api, self.campaign, self.temporal = api, campaign, temporal
        self.instance_id = ""
        self.handle: WorkflowHandle[Any, Any] | None = None
        self.first_run = ""

    @property
    def workflow(self) -> WorkflowHandle[Any, Any]:
        assert self.handle is not None
        return self.handle

    async def status(self) -> LeadStatus:
        status: LeadStatus = await self.workflow.query(CampaignWorkflow.lead_status)
        return status

    async def open(self, phase: str, receiver: WebhookReceiver) -> None:
        """Enrols a lead, approves its first gate while notices fail, and waits at `phase`
        (`gate`: the second step's; `delay`: after the first; `scheduled`: the first message
        waiting for its window) with the run due to continue as new."""
        put = await self.api.http.put(
            self.campaign.url, json=_definition(phase, receiver.url), headers=self.campaign.auth
        )
        assert put.status_code == 200, put.text
        record = await self.api.store.get_campaign(
            self.campaign.account_group_id, self.campaign.campaign_id
        )
        assert record is not None
        enrolled = lead()
        started = await WorkflowInstances(self.temporal, self.api.settings.task_queue, 10).enrol(
            self.campaign.account_group_id,
            self.campaign.campaign_id,
            Lead(id=enrolled["id"], email=enrolled["email"]),
            snapshot_of(campaign_of(record)),
            continue_as_new_after_events=CONTINUE_AS_NEW_AFTER,
        )
        self.instance_id = started.workflow_instance_id
        self.handle = self.temporal.get_workflow_handle(
            workflow_id_for(
                self.campaign.account_group_id, self.campaign.campaign_id, self.instance_id
            )
        )
        await assert_eventually(lambda: self._is(has_pending_approval=True))
        await assert_eventually(lambda: _async(bool(receiver.requests)))
        receiver.status = 503  # from here on every notice fails and is retried
        approved = await approve(self.api, self.campaign, self.instance_id)
        assert approved.status_code == 200, approved.text
        if phase == "gate":
            await assert_eventually(
                lambda: self._is(has_pending_approval=True, latest_step="follow-up")
            )
        elif phase == "delay":
            await assert_eventually(
                lambda: self._is(workflow_status=WorkflowStatus.PENDING, has_pending_approval=False)
            )
        else:
            await assert_eventually(self._scheduled)
        self.first_run = (await self.workflow.describe()).run_id
        await self._nudge_until_due(self.first_run)

    async def ended(self, workflow_status: WorkflowStatus) -> LeadStatus:
        """The status once the instance reached `workflow_status` (its run may still be
        finishing notices the failing receiver refuses: it closes only once they are done)."""
        await assert_eventually(lambda: self._is(workflow_status=workflow_status), within=20)
        return await self.status()

    async def _is(self, **expected: Any) -> bool:
        status = await self.status()
        return all(getattr(status, name) == value for name, value in expected.items())

    async def _scheduled(self) -> bool:
        return (await self.status()).scheduled is not None

    async def _nudge_until_due(self, first_run: str) -> None:
        """Sends signals the workflow ignores until its run has *handled* a workflow task once
        its history passed `CONTINUE_AS_NEW_AFTER` events (so it is due), or has continued as
        new already.

        The history's length alone is not enough: it counts signals the workflow has not seen
        yet, and a stop that lands in the same task as those is handled by the first run (right
        too, but not the window tested here)."""
        run = self.temporal.get_workflow_handle(self.workflow.id, run_id=first_run)
        for _ in range(60):
            if (await self.workflow.describe()).run_id != first_run:
                return
            history = await run.fetch_history()
            if _handled_a_task_at_or_after(history.events, CONTINUE_AS_NEW_AFTER):
                return
            await self.workflow.signal("nudge")
        raise AssertionError("the run never became due to continue as new")

    async def continued_at(self) -> list[ResumeAt]:
        """Where each run after the first picked up."""
        return await resumed_at(self.temporal, self.workflow.id)


def _handled_a_task_at_or_after(events: Any, length: int) -> bool:
    """Whether a workflow task that started with the history at least `length` events long
    has completed (the workflow's `get_current_history_length()` in it was ≥ `length`: a task's
    started event's id is the history's length when it starts)."""
    return any(
        event.workflow_task_completed_event_attributes.started_event_id >= length
        for event in events
        if event.HasField("workflow_task_completed_event_attributes")
    )


async def _async(value: bool) -> bool:
    return value


WHERE = {"gate": ResumeAt.GATE, "delay": ResumeAt.DELAY, "scheduled": ResumeAt.DELIVERY}
SENT_BEFORE = {"gate": 1, "delay": 1, "scheduled": 0}
"""Messages delivered when the run is due: the first step's, unless it waits for its window."""
STOPS: dict[str, tuple[Any, Any]] = {
    "stop": (CampaignWorkflow.stop, StopRequest(reason="window", decided_by="ops")),
    "discard": (CampaignWorkflow.discard, DiscardRequest(decided_by="ops", note="window")),
    "lead_replied": (CampaignWorkflow.lead_replied, LeadEvent(note="window")),
    "lead_unsubscribed": (CampaignWorkflow.lead_unsubscribed, LeadEvent(note="window")),
    "inbound_reply": (
        CampaignWorkflow.inbound_message,
        InboundEvent("in-1", "reply", excerpt="Thanks, let's talk"),
    ),
    "inbound_hard_bounce": (
        CampaignWorkflow.inbound_message,
        InboundEvent("in-2", "hard_bounce"),
    ),
}
REASONS = {
    "stop": StopReason.STOPPED_BY_OPERATOR,
    "discard": StopReason.CONTENT_DISCARDED,
    "lead_replied": StopReason.LEAD_REPLIED,
    "lead_unsubscribed": StopReason.LEAD_UNSUBSCRIBED,
    "inbound_reply": StopReason.LEAD_REPLIED,
    "inbound_hard_bounce": StopReason.LEAD_BOUNCED,
}


@pytest.mark.parametrize("phase", ["gate", "delay", "scheduled"])
@pytest.mark.parametrize("signal", sorted(STOPS))
async def test_a_stop_in_the_window_stops(
    api: Api,
    campaign: Campaign,
    worker: Worker,
    temporal: Client,
    receiver: WebhookReceiver,
    phase: str,
    signal: str,
) -> None:
    window = Window(api, campaign, temporal)
    await window.open(phase, receiver)
    method, argument = STOPS[signal]

    await window.workflow.signal(method, argument)

    result = await window.ended(WorkflowStatus.STOPPED)
    assert result.workflow_stop_reason == REASONS[signal]
    assert len(outbox_files(api.settings)) == SENT_BEFORE[phase]
    assert await window.continued_at() == [WHERE[phase]]
    if signal == "discard" and phase == "gate":
        assert [(d.step_id, d.decision.value) for d in result.gate_decisions] == [
            ("intro", "approved"),
            ("follow-up", "discarded"),
        ]


async def test_the_notice_being_retried_is_sent_by_the_next_run(
    api: Api, campaign: Campaign, worker: Worker, temporal: Client, receiver: WebhookReceiver
) -> None:
    """The reproduction of the lost stop, in a delay; and the first gate's resolved notice,
    which the run no longer waits for, still reaches the receiver once it is back."""
    window = Window(api, campaign, temporal)
    await window.open("delay", receiver)

    await window.workflow.signal(CampaignWorkflow.stop, StopRequest(reason="lost?"))
    receiver.status = 204

    result = await window.ended(WorkflowStatus.STOPPED)
    assert result.workflow_stop_reason == StopReason.STOPPED_BY_OPERATOR
    assert result.stop is not None and result.stop.note == "lost?"
    await assert_eventually(
        lambda: _async(("approval.resolved", "intro") in _resolved_events(receiver)), within=30
    )


async def test_an_approval_in_the_window_is_not_undone(
    api: Api, campaign: Campaign, worker: Worker, temporal: Client, receiver: WebhookReceiver
) -> None:
    """The reproduction of the undone approval: 200, then the next run must not reopen the gate."""
    window = Window(api, campaign, temporal)
    await window.open("gate", receiver)

    approved = await approve(api, campaign, window.instance_id)

    assert approved.status_code == 200, approved.text
    result = await window.ended(WorkflowStatus.COMPLETED)
    assert [(d.step_id, d.decision.value) for d in result.gate_decisions] == [
        ("intro", "approved"),
        ("follow-up", "approved"),
    ]
    assert [d.step_id for d in result.deliveries] == ["intro", "follow-up"]
    assert len(outbox_files(api.settings)) == 2


@pytest.mark.parametrize("phase", ["delay", "scheduled"])
async def test_an_approval_in_the_window_with_no_gate_open_changes_nothing(
    api: Api,
    campaign: Campaign,
    worker: Worker,
    temporal: Client,
    receiver: WebhookReceiver,
    phase: str,
) -> None:
    window = Window(api, campaign, temporal)
    await window.open(phase, receiver)

    refused = await approve(api, campaign, window.instance_id)

    assert refused.status_code == 409, refused.text
    assert refused.json()["error"]["details"] == "ALREADY_APPROVED"
    # (A run that continued as new while scheduled asks the delivery activity again first.)
    await assert_eventually(
        lambda: window._is(workflow_status=WorkflowStatus.PENDING, has_pending_approval=False)
    )
    status = await window.status()
    assert (status.scheduled is not None) == (phase == "scheduled")
    assert await window.continued_at() == [WHERE[phase]]
    await window.workflow.terminate("test over")


@pytest.mark.parametrize("phase", ["gate", "delay", "scheduled"])
async def test_a_pause_and_a_resume_in_the_window_show(
    api: Api,
    campaign: Campaign,
    worker: Worker,
    temporal: Client,
    receiver: WebhookReceiver,
    phase: str,
) -> None:
    window = Window(api, campaign, temporal)
    await window.open(phase, receiver)
    at = datetime.now(UTC).replace(microsecond=0)

    await window.workflow.signal(
        CampaignWorkflow.campaign_paused, CampaignPauseEvent("ops", at.isoformat())
    )

    await assert_eventually(lambda: window._is(campaign_paused_at=at))
    assert await window.continued_at() == [WHERE[phase]]
    await window.workflow.signal(CampaignWorkflow.campaign_resumed, CampaignPauseEvent("ops"))
    await assert_eventually(
        lambda: window._is(
            campaign_paused_at=None,
            workflow_status=WorkflowStatus.PENDING,
            has_pending_approval=phase == "gate",
        )
    )
    await window.workflow.terminate("test over")
