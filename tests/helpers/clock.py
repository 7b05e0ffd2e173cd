"""Instances on a virtual clock of their own: enrolled with time skipping off, then moved to the
instant a test needs (a Saturday in New York, the night a clock changes) and on past their waits.

The dev server's per-workflow time skipping (`TimeSkipper`, FACTS.md) starts each workflow's
clock at the real time; `advance_to` fast-forwards it, so a test can stand at any future instant
whatever day it runs on. Activities get the workflow's time from their input
(`DeliveryRequest.not_before`), so they see the virtual instant too.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from temporalio.client import Client, WorkflowHandle
from temporalio.testing import TimeSkipper, TimeSkippingConfig

from api.instances import WorkflowInstances
from campaign_engine.ids import new_object_id, workflow_id_for
from campaign_engine.settings import Settings
from workflows.campaign import CampaignWorkflow
from workflows.types import CampaignSnapshot, Lead, LeadStatus


class VirtualClock:
    """Enrols instances whose clocks stand still until moved (`advance_to`, `advance`)."""

    def __init__(self, temporal: Client, settings: Settings) -> None:
        self.skipper = TimeSkipper(temporal, config=TimeSkippingConfig(enabled=False))
        self.instances = WorkflowInstances(
            self.skipper.client, settings.task_queue, timeout_seconds=5
        )
        self.account_group_id = new_object_id()
        self.campaign_id = new_object_id()

    async def enrol(
        self,
        snapshot: CampaignSnapshot,
        lead: Lead | None = None,
        *,
        continue_as_new_after_events: int | None = None,
    ) -> WorkflowHandle[Any, Any]:
        """Starts an instance of `snapshot` (in this clock's campaign) for `lead` (a fresh one by
        default); returns its handle."""
        lead = lead or Lead(id=new_object_id(), email="ada@example.com", first_name="Ada")
        started = await self.instances.enrol(
            self.account_group_id,
            self.campaign_id,
            lead,
            snapshot,
            continue_as_new_after_events=continue_as_new_after_events,
        )
        workflow_id = workflow_id_for(
            self.account_group_id, self.campaign_id, started.workflow_instance_id
        )
        return self.skipper.client.get_workflow_handle_for(CampaignWorkflow.run, workflow_id)

    async def now(self, handle: WorkflowHandle[Any, Any]) -> datetime:
        """The instance's virtual time (aware UTC)."""
        return await self.skipper.get_current_time(handle)

    async def advance_to(self, handle: WorkflowHandle[Any, Any], target: datetime) -> None:
        """Fast-forwards the instance's clock to `target` (aware), firing its timers on the way.

        The difference is taken in UTC: between two times of one zone Python subtracts wall
        clocks, which is an hour off across a clock change."""
        delta = target.astimezone(UTC) - await self.now(handle)
        assert delta > timedelta(0), f"{target} is already past on this instance's clock"
        await self.advance(handle, delta)

    async def advance(self, handle: WorkflowHandle[Any, Any], delta: timedelta) -> None:
        """Fast-forwards the instance's clock by `delta`."""
        await self.skipper.fast_forward(handle, delta)


def next_weekday(after: datetime, weekday: int, at: time, zone: ZoneInfo) -> datetime:
    """The first `weekday` (0 = Monday) at local `at` in `zone` strictly more than a day after
    `after`, aware."""
    day = after.astimezone(zone).date() + timedelta(days=2)
    while day.weekday() != weekday:
        day += timedelta(days=1)
    return datetime.combine(day, at, tzinfo=zone)


def nth_weekday(year: int, month: int, weekday: int, n: int) -> date:
    """The `n`-th `weekday` (0 = Monday) of the month; `n` = -1 for the last."""
    if n > 0:
        day = date(year, month, 1)
        while day.weekday() != weekday:
            day += timedelta(days=1)
        return day + timedelta(weeks=n - 1)
    day = (date(year, month % 12 + 1, 1) if month < 12 else date(year + 1, 1, 1)) - timedelta(1)
    while day.weekday() != weekday:
        day -= timedelta(days=1)
    return day


def first_after(after: datetime, dates: Any) -> date:
    """The first date of `dates(year)` (a function of the year) more than two days after `after`."""
    year = after.year
    while True:
        day: date = dates(year)
        if day > (after + timedelta(days=2)).date():
            return day
        year += 1


def delivered_at(status: LeadStatus, step_id: str) -> datetime:
    """When (workflow time, UTC) the instance recorded `step_id` as delivered."""
    for record in status.deliveries:
        if record.step_id == step_id:
            return record.at.astimezone(UTC)
    raise AssertionError(f"{step_id} was not delivered: {status.deliveries}")
