"""The out-of-office hold (issue 19, item 4): a campaign with `outOfOfficeHold` holds the lead's
next delivery until the return date an automatic answer gives, capped, shown as a deferral
(`deferredBecause: out_of_office`).

First the pure transitions (`workflows.state`, no server), then the campaign option through the
API, then real instances on the dev server in virtual time (`tests.helpers.clock`): each is
moved to the instant the case needs, and past its hold, whatever day the suite runs on.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from temporalio.client import Client, WorkflowHandle
from temporalio.worker import Worker

from api.campaigns import campaign_of, snapshot_of
from campaign_engine.ids import InstanceRef, new_object_id
from campaign_engine.mailboxes import MailboxReservations
from campaign_engine.settings import MailboxLimits
from tests.helpers import (
    Api,
    Campaign,
    approve,
    assert_eventually,
    create_campaign,
    current_details,
    instance_data,
    outbox_files,
)
from tests.helpers.clock import VirtualClock, delivered_at, next_weekday
from tests.histories.replays import markers
from workflows import state, status
from workflows.campaign import CampaignWorkflow
from workflows.types import (
    ApproveRequest,
    CampaignInput,
    CampaignSnapshot,
    CampaignState,
    Deferral,
    DeliveryOutcome,
    DeliveryReceipt,
    DraftedContent,
    Gate,
    InboundEvent,
    Lead,
    LeadStatus,
    OutOfOfficeHold,
    Phase,
    StopReason,
    WorkflowStatus,
)
from workflows.versions import OUT_OF_OFFICE_HOLD, PATCHES

DAY = 86400.0
T0 = datetime(2026, 12, 4, 9, 0, tzinfo=UTC)
"""A Friday."""


def _waiting_at_gate() -> CampaignState:
    s = CampaignState()
    state.begin_step(s, "intro")
    state.drafted(s, DraftedContent("intro", "Hi", "Hello"))
    state.open_gate(s, Gate("g1", T0, None))
    return s


def _answer(
    s: CampaignState,
    back: str,
    *,
    received: datetime = T0,
    now: datetime = T0,
    hold: float | None = 14 * DAY,
    message_id: str | None = None,
) -> OutOfOfficeHold | None:
    """Applies an out-of-office answer back on `back` (ISO date, or "" for none); returns the
    hold in force after it."""
    event = InboundEvent(
        message_id if message_id is not None else f"ooo-{back}-{received.isoformat()}",
        "auto_reply",
        received.isoformat(),
        return_date=back,
    )
    state.apply_inbound(s, event, now, out_of_office_hold_seconds=hold)
    return s.out_of_office_hold


# --- the pure transitions ------------------------------------------------------------------------


def test_an_answer_with_a_return_date_holds_until_that_day_begins_in_utc() -> None:
    s = _waiting_at_gate()
    hold = _answer(s, "2026-12-09")
    assert hold == OutOfOfficeHold(
        until=datetime(2026, 12, 9, tzinfo=UTC),
        return_date="2026-12-09",
        received_at=T0,
        inbound_message_id=f"ooo-2026-12-09-{T0.isoformat()}",
        capped=False,
    )
    # Recorded as every automatic answer is, and never a stop.
    assert s.inbound_messages[-1].return_date == "2026-12-09"
    assert s.stop is None
    assert state.out_of_office_until(s, T0) == datetime(2026, 12, 9, tzinfo=UTC)


def test_the_cap_counts_from_the_answers_arrival_and_never_exceeds_60_days() -> None:
    s = _waiting_at_gate()
    hold = _answer(s, "2026-12-31", hold=2 * DAY)
    assert hold is not None and (hold.until, hold.capped) == (T0 + timedelta(days=2), True)
    # An answer that arrived a day before the signal: its cap counts from its arrival.
    s = _waiting_at_gate()
    hold = _answer(s, "2026-12-31", received=T0 - timedelta(days=1), hold=2 * DAY)
    assert hold is not None and hold.until == T0 + timedelta(days=1)
    # One that claims to arrive later than the signal counts from the signal.
    s = _waiting_at_gate()
    hold = _answer(s, "2026-12-31", received=T0 + timedelta(days=3), hold=2 * DAY)
    assert hold is not None and hold.until == T0 + timedelta(days=2)
    # Whatever a snapshot says, 60 days at most.
    s = _waiting_at_gate()
    hold = _answer(s, "2027-06-01", hold=365 * DAY)
    assert hold is not None and (hold.until, hold.capped) == (T0 + timedelta(days=60), True)


@pytest.mark.parametrize(
    ("back", "hold_seconds", "why"),
    [
        ("2026-12-09", None, "the campaign's option is off"),
        ("", 14 * DAY, "no return date: cannot be told from any other automatic answer"),
        ("next week", 14 * DAY, "a return date that is no date"),
        ("2026-12-04", 14 * DAY, "back today: the day began already"),
        ("2026-12-01", 14 * DAY, "a return date in the past"),
    ],
)
def test_what_holds_nothing(back: str, hold_seconds: float | None, why: str) -> None:
    s = _waiting_at_gate()
    assert _answer(s, back, hold=hold_seconds) is None, why
    assert len(s.inbound_messages) == 1  # recorded all the same


def test_soft_bounces_and_replies_hold_nothing() -> None:
    s = _waiting_at_gate()
    for kind in ("soft_bounce", "reply"):
        event = InboundEvent(kind, kind, T0.isoformat(), return_date="2026-12-09")
        state.apply_inbound(s, event, T0, out_of_office_hold_seconds=14 * DAY)
    assert s.out_of_office_hold is None


def test_the_newest_answer_decides_shorter_or_longer() -> None:
    s = _waiting_at_gate()
    _answer(s, "2026-12-11")
    later = T0 + timedelta(hours=2)
    shorter = _answer(s, "2026-12-08", received=later, now=later)
    assert shorter is not None and shorter.until == datetime(2026, 12, 8, tzinfo=UTC)
    even_later = T0 + timedelta(hours=3)
    longer = _answer(s, "2026-12-15", received=even_later, now=even_later)
    assert longer is not None and longer.until == datetime(2026, 12, 15, tzinfo=UTC)
    # An answer that arrived before the one holding (applied late) changes nothing.
    late = _answer(s, "2026-12-07", received=T0 + timedelta(hours=1), now=even_later)
    assert late == longer
    # An answer without a date changes nothing either.
    assert _answer(s, "", received=T0 + timedelta(hours=4), now=even_later) == longer
    # The newest answer says the lead is back already: the hold ends.
    assert _answer(s, "2026-12-04", received=T0 + timedelta(hours=5), now=even_later) is None


def test_a_passed_hold_is_dropped_where_the_run_asks() -> None:
    s = _waiting_at_gate()
    _answer(s, "2026-12-09")
    back = datetime(2026, 12, 9, tzinfo=UTC)
    assert state.holds_past(s, back - timedelta(seconds=1))
    assert not state.holds_past(s, back)
    assert not state.holds_past(s, None)  # paused: checked again on resume
    assert state.out_of_office_until(s, back - timedelta(seconds=1)) == back
    assert s.out_of_office_hold is not None
    assert state.out_of_office_until(s, back) is None
    assert s.out_of_office_hold is None


def test_a_held_delivery_is_a_deferral_like_the_others() -> None:
    s = _waiting_at_gate()
    state.approve(s, ApproveRequest("r1"), T0)
    until = datetime(2026, 12, 9, tzinfo=UTC)
    scheduled = state.hold_delivery(s, "intro", until)
    assert (scheduled.deferred_because, scheduled.send_at, scheduled.deferrals) == (
        Deferral.OUT_OF_OFFICE,
        until,
        1,
    )
    assert s.phase == Phase.SCHEDULED
    # A later deferral (the window, at the hold's end) counts on.
    again = state.defer(s, "intro", DeliveryReceipt("m", DeliveryOutcome.DEFERRED, send_at=until))
    assert again.deferrals == 2


def test_a_stopped_instance_holds_nothing_and_its_end_clears_the_hold() -> None:
    s = _waiting_at_gate()
    _answer(s, "2026-12-09")
    state.request_stop(s, StopReason.LEAD_REPLIED, "inbound", "reply received", T0)
    assert state.end_if_stop_requested(s)
    assert s.out_of_office_hold is None
    assert _answer(s, "2026-12-10", received=T0 + timedelta(hours=1)) is None


def test_status_and_details_show_the_hold() -> None:
    s = _waiting_at_gate()
    _answer(s, "2026-12-31", hold=2 * DAY)
    input = CampaignInput(
        "a" * 24, "c" * 24, "i" * 24, Lead("l" * 24, "ada@example.com"), CampaignSnapshot("C", [])
    )
    assert status.lead_status(s, input).out_of_office_hold == s.out_of_office_hold
    details = status.details(s)
    assert "**Out of office**, back on 2026-12-31: nothing is sent before 2026-12-06T09:00" in (
        details
    )
    assert "capped by the campaign's `outOfOfficeHold`" in details
    s.gate = None
    state.release_for_delivery(s)
    state.hold_delivery(s, "intro", T0 + timedelta(days=2))
    assert "sends at 2026-12-06T09:00:00+00:00 — the lead is out of office" in status.details(s)


def test_the_patch_is_registered_live() -> None:
    patch = PATCHES[OUT_OF_OFFICE_HOLD]
    assert (patch.id, patch.deprecated) == ("out-of-office-hold", None)


# --- the campaign option -------------------------------------------------------------------------

ONE_STEP: dict[str, Any] = {
    "name": "Held",
    "outOfOfficeHold": "P14D",
    "steps": [{"id": "intro", "subject": "Hello {{ lead.firstName }}", "body": "Hi."}],
}


async def test_the_option_is_read_back_and_reaches_the_snapshot(api: Api) -> None:
    campaign = await create_campaign(api, ONE_STEP)
    read = await api.http.get(campaign.url, headers=campaign.auth)
    assert read.json()["data"]["outOfOfficeHold"] == "P14D"
    record = await api.store.get_campaign(campaign.account_group_id, campaign.campaign_id)
    assert record is not None
    assert snapshot_of(campaign_of(record)).out_of_office_hold_seconds == 14 * DAY
    off = await create_campaign(api, {**ONE_STEP, "outOfOfficeHold": None})
    record = await api.store.get_campaign(off.account_group_id, off.campaign_id)
    assert record is not None
    assert snapshot_of(campaign_of(record)).out_of_office_hold_seconds is None


@pytest.mark.parametrize("value", [True, False, 0, "PT59M", "P61D", -3600, "soon", [], {}])
async def test_the_option_refuses_what_is_no_hold(api: Api, value: object) -> None:
    campaign = await create_campaign(api)
    response = await api.http.put(
        campaign.url, json={**ONE_STEP, "outOfOfficeHold": value}, headers=campaign.auth
    )
    assert response.status_code == 400, response.text
    assert response.json()["error"]["details"] == "outOfOfficeHold"


async def test_the_bounds_are_accepted(api: Api) -> None:
    campaign = await create_campaign(api)
    for value in ("PT1H", "P60D", 3600, 86400.0):
        response = await api.http.put(
            campaign.url, json={**ONE_STEP, "outOfOfficeHold": value}, headers=campaign.auth
        )
        assert response.status_code == 200, (value, response.text)


# --- real instances, in virtual time -------------------------------------------------------------


class Held:
    """One instance of a campaign PUT through the API, on a virtual clock of its own."""

    def __init__(self, api: Api, temporal: Client, campaign: Campaign) -> None:
        self.api, self.campaign = api, campaign
        self.clock = VirtualClock(temporal, api.settings)
        self.clock.account_group_id = campaign.account_group_id
        self.clock.campaign_id = campaign.campaign_id
        self.instance_id = ""
        self._handle: WorkflowHandle[Any, Any] | None = None

    @classmethod
    async def enrol(
        cls,
        api: Api,
        temporal: Client,
        definition: dict[str, Any],
        *,
        lead: Lead | None = None,
        continue_as_new_after_events: int | None = None,
    ) -> Held:
        """PUTs `definition` as a new campaign and enrols a lead on its snapshot, as the API's
        enrolment would, but on a virtual clock."""
        held = cls(api, temporal, await create_campaign(api, definition))
        record = await api.store.get_campaign(
            held.campaign.account_group_id, held.campaign.campaign_id
        )
        assert record is not None
        lead = lead or Lead(id=new_object_id(), email="ada@example.com", first_name="Ada")
        held._handle = await held.clock.enrol(
            snapshot_of(campaign_of(record)),
            lead,
            continue_as_new_after_events=continue_as_new_after_events,
        )
        held.instance_id = InstanceRef.of_lead(
            held.campaign.account_group_id, held.campaign.campaign_id, lead.id
        ).workflow_instance_id
        return held

    @property
    def handle(self) -> WorkflowHandle[Any, Any]:
        assert self._handle is not None
        return self._handle

    async def now(self) -> datetime:
        return await self.clock.now(self.handle)

    async def status(self) -> LeadStatus:
        result: LeadStatus = await self.handle.query(CampaignWorkflow.lead_status)
        return result

    async def until(self, what: str, check: Any) -> LeadStatus:
        status: LeadStatus = await assert_eventually(self.status, check, what=what)
        return status

    async def out_of_office(
        self, back: date | str, *, received: datetime | None = None, message_id: str = "ooo-1"
    ) -> None:
        """The inbound pipeline's signal for an out-of-office answer back on `back`."""
        received = received or await self.now()
        await self.handle.signal(
            CampaignWorkflow.inbound_message,
            InboundEvent(
                message_id,
                "auto_reply",
                received.isoformat(),
                return_date=back if isinstance(back, str) else back.isoformat(),
            ),
        )

    async def approve_ok(self) -> None:
        """Approves through the API: 200."""
        response = await approve(self.api, self.campaign, self.instance_id)
        assert response.status_code == 200, response.text

    async def delivery(self) -> dict[str, Any] | None:
        """The instance GET's `delivery`."""
        delivered: dict[str, Any] | None = (
            await instance_data(self.api, self.campaign, self.instance_id)
        )["delivery"]
        return delivered

    async def finished_past(self, instant: datetime) -> LeadStatus:
        """Moves the instance 5 minutes past `instant`; its final status."""
        await self.clock.advance_to(self.handle, instant + timedelta(minutes=5))
        result: LeadStatus = await self.handle.result()
        return result


def midnight_utc(day: date) -> datetime:
    return datetime.combine(day, time(0), tzinfo=UTC)


async def test_an_answer_at_the_gate_holds_the_approved_message_until_the_return_date(
    api: Api, temporal: Client, worker: Worker
) -> None:
    held = await Held.enrol(api, temporal, ONE_STEP)
    await held.until("an open gate", lambda s: s.has_pending_approval)
    back = ((await held.now()) + timedelta(days=5)).date()
    await held.out_of_office(back)

    await held.approve_ok()  # the gate stays approvable during the hold

    waiting = await held.until("a held delivery", lambda s: s.scheduled is not None)
    assert waiting.workflow_status == WorkflowStatus.PENDING
    assert await held.delivery() == {
        "stepId": "intro",
        "state": "scheduled",
        "attempt": None,
        "maximumAttempts": None,
        "lastError": None,
        "nextAttemptAt": midnight_utc(back).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "deferredBecause": "out_of_office",
        "sendAtLocal": None,
    }
    details = await current_details(held.handle)
    assert f"sends at {midnight_utc(back).isoformat()} — the lead is out of office" in details
    assert f"**Out of office**, back on {back.isoformat()}" in details
    # A day before the return date, still nothing.
    await held.clock.advance_to(held.handle, midnight_utc(back) - timedelta(days=1))
    assert outbox_files(api.settings) == []

    result = await held.finished_past(midnight_utc(back))

    assert result.workflow_status == WorkflowStatus.COMPLETED
    sent = delivered_at(result, "intro")
    assert midnight_utc(back) <= sent < midnight_utc(back) + timedelta(minutes=2)
    assert len(outbox_files(api.settings)) == 1
    assert result.out_of_office_hold is None
    # The hold was decided on the new branch of its patch.
    history = await held.handle.fetch_history()
    assert OUT_OF_OFFICE_HOLD in {marker.patch_id for marker in markers(history)}


async def test_without_the_option_an_answer_holds_nothing(
    api: Api, temporal: Client, worker: Worker
) -> None:
    held = await Held.enrol(api, temporal, {**ONE_STEP, "outOfOfficeHold": None})
    await held.until("an open gate", lambda s: s.has_pending_approval)
    back = ((await held.now()) + timedelta(days=5)).date()
    await held.out_of_office(back)

    await held.approve_ok()

    result: LeadStatus = await held.handle.result()
    assert result.workflow_status == WorkflowStatus.COMPLETED
    assert result.deliveries[0].at < midnight_utc(back) - timedelta(days=4)
    assert [r.return_date for r in result.inbound_messages] == [back.isoformat()]
    # Nothing was held, so the patch was never asked: no marker.
    history = await held.handle.fetch_history()
    assert OUT_OF_OFFICE_HOLD not in {marker.patch_id for marker in markers(history)}


async def test_an_answer_without_a_return_date_holds_nothing(
    api: Api, temporal: Client, worker: Worker
) -> None:
    held = await Held.enrol(api, temporal, ONE_STEP)
    await held.until("an open gate", lambda s: s.has_pending_approval)
    await held.out_of_office("")

    await held.approve_ok()

    result: LeadStatus = await held.handle.result()
    assert result.workflow_status == WorkflowStatus.COMPLETED
    assert len(outbox_files(api.settings)) == 1


async def test_the_hold_is_capped(api: Api, temporal: Client, worker: Worker) -> None:
    held = await Held.enrol(api, temporal, {**ONE_STEP, "outOfOfficeHold": "P2D"})
    await held.until("an open gate", lambda s: s.has_pending_approval)
    received = await held.now()
    await held.out_of_office((received + timedelta(days=20)).date(), received=received)
    await held.approve_ok()

    waiting = await held.until("a held delivery", lambda s: s.scheduled is not None)

    cap = received + timedelta(days=2)
    assert waiting.scheduled is not None
    assert (waiting.scheduled.deferred_because, waiting.scheduled.send_at) == (
        Deferral.OUT_OF_OFFICE,
        cap,
    )
    assert waiting.out_of_office_hold is not None and waiting.out_of_office_hold.capped
    result = await held.finished_past(cap)
    assert cap <= delivered_at(result, "intro") < cap + timedelta(minutes=2)


async def test_a_reply_during_the_hold_stops_at_once(
    api: Api, temporal: Client, worker: Worker
) -> None:
    held = await Held.enrol(api, temporal, ONE_STEP)
    await held.until("an open gate", lambda s: s.has_pending_approval)
    back = ((await held.now()) + timedelta(days=5)).date()
    await held.out_of_office(back)
    await held.approve_ok()
    await held.until("a held delivery", lambda s: s.scheduled is not None)

    await held.handle.signal(
        CampaignWorkflow.inbound_message,
        InboundEvent("reply-1", "reply", (await held.now()).isoformat(), "Back early, call me"),
    )

    result: LeadStatus = await held.handle.result()  # no time passed: it stopped at once
    assert (result.workflow_status, result.workflow_stop_reason) == (
        WorkflowStatus.STOPPED,
        StopReason.LEAD_REPLIED,
    )
    assert result.scheduled is None and result.deliveries == []
    assert outbox_files(api.settings) == []


async def test_an_answer_during_the_delay_holds_the_next_step_whose_gate_stays_approvable(
    api: Api, temporal: Client, worker: Worker
) -> None:
    definition = {
        "name": "Two steps",
        "outOfOfficeHold": "P14D",
        "steps": [
            {"id": "intro", "subject": "Hi", "body": "Hi.", "requiresApproval": False,
             "delay": "PT1H"},
            {"id": "follow-up", "subject": "Again", "body": "Again."},
        ],
    }  # fmt: skip
    held = await Held.enrol(api, temporal, definition)
    await held.until("the delay after intro", lambda s: len(s.deliveries) == 1)
    back = ((await held.now()) + timedelta(days=3)).date()
    await held.out_of_office(back)

    await held.clock.advance(held.handle, timedelta(hours=2))
    await held.until("the follow-up's gate", lambda s: s.has_pending_approval)
    await held.approve_ok()
    waiting = await held.until("a held delivery", lambda s: s.scheduled is not None)

    assert waiting.scheduled is not None
    assert waiting.scheduled.deferred_because == Deferral.OUT_OF_OFFICE
    assert (await held.delivery() or {})["deferredBecause"] == "out_of_office"
    result = await held.finished_past(midnight_utc(back))
    assert midnight_utc(back) <= delivered_at(result, "follow-up")
    assert len(outbox_files(api.settings)) == 2


NEW_YORK = ZoneInfo("America/New_York")
MAILBOX = "sales@example.com"
SATURDAY = 5


@pytest.mark.parametrize(
    "settings_overrides",
    [
        {
            "mailboxes": {
                MAILBOX: MailboxLimits(
                    account_groups="*", daily_cap=5, time_zone="America/New_York"
                )
            }
        }
    ],
)
async def test_an_answer_moves_a_message_waiting_for_its_window_and_gives_its_slot_back(
    api: Api, temporal: Client, worker: Worker
) -> None:
    definition = {
        **ONE_STEP,
        "from": MAILBOX,
        "sendWindow": {
            "days": ["mon", "tue", "wed", "thu", "fri"],
            "start": "09:00",
            "end": "17:00",
            "timeZone": "America/New_York",
        },
    }
    held = await Held.enrol(api, temporal, definition)
    await held.until("an open gate", lambda s: s.has_pending_approval)
    saturday = next_weekday(await held.now(), SATURDAY, time(10, 0), NEW_YORK)
    await held.clock.advance_to(held.handle, saturday)
    await held.approve_ok()
    monday = saturday.date() + timedelta(days=2)
    waiting = await held.until("a scheduled delivery", lambda s: s.scheduled is not None)
    assert waiting.scheduled is not None
    assert waiting.scheduled.deferred_because == Deferral.OUTSIDE_WINDOW
    reservations = MailboxReservations(api.store)
    assert await reservations.count_on(MAILBOX, monday) == 1

    # Back on Thursday: the Monday send waits, and its slot is given back.
    thursday = monday + timedelta(days=3)
    await held.out_of_office(thursday)
    await held.until(
        "held until Thursday",
        lambda s: s.scheduled is not None and s.scheduled.send_at == midnight_utc(thursday),
    )
    assert await reservations.count_on(MAILBOX, monday) == 0
    # A later answer: back on Wednesday after all. The newer answer shortens the hold.
    wednesday = monday + timedelta(days=2)
    await held.out_of_office(wednesday, received=saturday + timedelta(hours=1), message_id="ooo-2")
    await held.until(
        "held until Wednesday",
        lambda s: s.scheduled is not None and s.scheduled.send_at == midnight_utc(wednesday),
    )

    # At 00:00 UTC on Wednesday the window (New York) is closed: it opens at 09:00 there.
    opens = datetime.combine(wednesday, time(9, 0), tzinfo=NEW_YORK)
    result = await held.finished_past(opens)
    sent = delivered_at(result, "intro")
    assert opens <= sent < opens + timedelta(minutes=2), sent.astimezone(NEW_YORK)
    assert await reservations.count_on(MAILBOX, wednesday) == 1
    assert await reservations.count_on(MAILBOX, monday) == 0


async def test_the_hold_is_carried_over_continue_as_new(
    api: Api, temporal: Client, worker: Worker
) -> None:
    held = await Held.enrol(api, temporal, ONE_STEP, continue_as_new_after_events=40)
    await held.until("an open gate", lambda s: s.has_pending_approval)
    back = ((await held.now()) + timedelta(days=5)).date()
    await held.out_of_office(back)
    await held.approve_ok()
    await held.until("a held delivery", lambda s: s.scheduled is not None)
    first_run = (await held.handle.describe()).run_id

    await asyncio.gather(*(held.handle.signal("nudge", n) for n in range(40)))
    await assert_eventually(
        lambda: _run_id(held.handle), lambda run: run != first_run, what="a new run"
    )

    waiting = await held.until("a held delivery", lambda s: s.scheduled is not None)
    assert waiting.scheduled is not None
    assert waiting.scheduled.deferred_because == Deferral.OUT_OF_OFFICE
    assert waiting.out_of_office_hold is not None
    assert waiting.out_of_office_hold.until == midnight_utc(back)
    assert outbox_files(api.settings) == []
    result = await held.finished_past(midnight_utc(back))
    assert midnight_utc(back) <= delivered_at(result, "intro")


async def _run_id(handle: WorkflowHandle[Any, Any]) -> str:
    run_id: str = (await handle.describe()).run_id
    return run_id
