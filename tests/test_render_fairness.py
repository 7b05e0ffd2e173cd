"""Rendering is fair (issue 24, item 3), against the real API and worker of the test stack.

Two groups' many-step PUTs once held a third group's one-step PUT for 14 s: the render pool
served templates first come first served. Now each account group waits in its own queue and the
group that has had least render time goes next (`activities.render_queue`); a group's share of
the queue, and the process's, is bounded (503 with `Retry-After`, a retried draft); a campaign's
templates together have a render budget (400 naming it).

The API and the worker of these tests run on the test's event loop, so the test reads the very
render queue they use (`templates.render_slots()`) to know when a neighbour's renders are queued.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from temporalio.client import Client
from temporalio.worker import Worker

from activities import templates
from activities.render_queue import FairRenderQueue
from campaign_engine.ids import new_object_id
from tests.helpers import (
    TWO_STEP_CAMPAIGN,
    Api,
    Campaign,
    assert_eventually,
    enrol,
    handle_of,
    wait_for_status,
)
from workflows.types import ActivityErrorType

BUSY = (
    "{% set s = lead.company * 500 %}{% for a in range(300) %}"
    '{% if s.count("zq") > 0 %}{% endif %}{% endfor %}Hi {{ lead.firstName }}'
)
"""A template well within its own budget that still keeps a render process busy: 300 scans of
100,000 characters, some tens of milliseconds of CPU for the worst-case lead."""

ONE_STEP: dict[str, Any] = {
    "name": "One step",
    "steps": [{"id": "intro", "subject": "Hello", "body": "Hi {{ lead.firstName }}"}],
}


def busy_campaign(steps: int) -> dict[str, Any]:
    """`steps` steps whose subject and body are both `BUSY`: 2 x `steps` renders."""
    return {
        "name": f"{steps} busy steps",
        "steps": [
            {"id": f"s{index}", "subject": BUSY, "body": BUSY, "delay": 0} for index in range(steps)
        ],
    }


async def new_group(api: Api) -> Campaign:
    """A campaign id in a new account group, with a key for it; nothing stored yet."""
    group = new_object_id()
    return Campaign(group, new_object_id(), await api.issue_key([group]))


async def put(api: Api, campaign: Campaign, definition: dict[str, Any]) -> httpx.Response:
    return await api.http.put(campaign.url, json=definition, headers=campaign.auth)


async def queued(group: Campaign, at_least: int = 1) -> None:
    """Waits until `at_least` renders of `group` wait in the render queue."""
    await assert_eventually(
        lambda: asyncio.sleep(0, templates.render_slots().waiting_of(group.account_group_id)),
        lambda waiting: waiting >= at_least,
        what=f"{at_least} renders of {group.account_group_id} queued",
    )


@pytest.mark.parametrize("settings_overrides", [{"render_budget_seconds": 1000.0}])
async def test_a_one_step_put_is_served_while_two_neighbours_many_step_puts_render(
    api: Api,
) -> None:
    first, second, victim = await new_group(api), await new_group(api), await new_group(api)
    neighbours = [
        asyncio.create_task(put(api, group, busy_campaign(15))) for group in (first, second)
    ]
    await queued(first)
    await queued(second)

    answered = await put(api, victim, ONE_STEP)

    # Served while both neighbours' PUTs still have templates waiting for a render process:
    # first come first served would have rendered all 60 of theirs before its 2.
    assert answered.status_code == 201, answered.text
    waiting = [templates.render_slots().waiting_of(g.account_group_id) for g in (first, second)]
    assert all(waiting), f"a neighbour's renders were all done first: {waiting}"
    assert not any(task.done() for task in neighbours)
    # The neighbours are slowed, not refused: each template is within its budget.
    assert [(await task).status_code for task in neighbours] == [201, 201]


@pytest.mark.parametrize("settings_overrides", [{"render_queue_limit_per_group": 30}])
async def test_a_full_share_of_the_queue_is_503_with_retry_after_and_stores_nothing(
    api: Api,
) -> None:
    busy, victim = await new_group(api), await new_group(api)
    # 30 renders: 2 start at once, 28 wait, within the group's share of 30.
    first = asyncio.create_task(put(api, busy, busy_campaign(15)))
    await queued(busy, at_least=20)
    again = Campaign(busy.account_group_id, new_object_id(), busy.key)

    refused = await put(api, again, busy_campaign(2))

    assert refused.status_code == 503, refused.text
    assert int(refused.headers["Retry-After"]) >= 1
    error = refused.json()["error"]
    assert (error["code"], error["details"]) == ("RENDER_QUEUE_FULL", "account group")
    assert "Retry after" in error["message"]
    stored = await api.http.get(again.url, headers=again.auth)
    assert stored.status_code == 404
    # Another group's share is its own: its PUT is served meanwhile.
    assert (await put(api, victim, ONE_STEP)).status_code == 201
    assert (await first).status_code == 201


@pytest.mark.parametrize("settings_overrides", [{"render_queue_limit": 10}])
async def test_a_full_process_queue_is_503_naming_the_process(api: Api) -> None:
    busy, other = await new_group(api), await new_group(api)
    first = asyncio.create_task(put(api, busy, busy_campaign(6)))  # 12 renders, 10 wait
    await queued(busy)

    # 10 more would wait: past the process's 10 while any of the first PUT's still wait.
    refused = await put(api, other, busy_campaign(5))

    assert refused.status_code == 503, refused.text
    assert int(refused.headers["Retry-After"]) >= 1
    assert refused.json()["error"]["details"] == "process"
    assert (await first).status_code == 201


@pytest.mark.parametrize("settings_overrides", [{"render_budget_seconds": 0.1}])
async def test_templates_over_the_render_budget_together_are_400_naming_it(api: Api) -> None:
    group = await new_group(api)

    # 40 templates of some tens of milliseconds each: each within its own 1 s, more than
    # 0.1 s together.
    response = await put(api, group, busy_campaign(20))

    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert (error["code"], error["details"]) == ("VALIDATION_ERROR", "steps")
    assert "render budget of 0.1 s" in error["message"]
    assert "CAMPAIGN_ENGINE_RENDER_BUDGET_SECONDS" in error["message"]
    assert (await api.http.get(group.url, headers=group.auth)).status_code == 404
    # One such template alone fits the budget.
    assert (await put(api, group, busy_campaign(1))).status_code == 201


async def test_the_default_budget_accepts_a_long_campaign_of_ordinary_templates(
    api: Api,
) -> None:
    group = await new_group(api)
    steps = [
        {
            "id": f"s{index}",
            "subject": "Hello {{ lead.firstName }}",
            "body": "Hi {{ lead.firstName }} at {{ lead.company }}, {% for i in range(50) %}"
            "{{ i }} {% endfor %}",
            "delay": 0,
        }
        for index in range(50)
    ]

    response = await put(api, group, {"name": "Fifty steps", "steps": steps})

    assert response.status_code == 201, response.text


@pytest.mark.parametrize("settings_overrides", [{"render_queue_limit_per_group": 1}])
async def test_a_draft_that_finds_the_queue_full_is_retried_not_failed(
    api: Api, temporal: Client, worker: Worker
) -> None:
    group = await new_group(api)
    # One step, two templates: both take a free render process at the PUT, none waits.
    gated = {**TWO_STEP_CAMPAIGN, "steps": TWO_STEP_CAMPAIGN["steps"][:1]}
    assert (await put(api, group, gated)).status_code == 201
    # Both render processes' turns taken (as by renders running): a draft's two templates
    # would both wait, one more than its group's share of 1.
    slots = templates.render_slots()
    await slots.acquire("holder")
    await slots.acquire("holder")
    try:
        instance_id = await enrol(api, group)
        handle = handle_of(temporal, group, instance_id)

        async def draft_failure() -> tuple[int, str]:
            pending = (await handle.describe()).raw_description.pending_activities
            if not pending or not pending[0].HasField("last_failure"):
                return 0, ""
            failure = pending[0].last_failure
            return pending[0].attempt, failure.application_failure_info.type

        _, kind = await assert_eventually(
            draft_failure, lambda seen: seen[0] >= 2, what="the draft retried"
        )
        assert kind == ActivityErrorType.RENDER_QUEUE_FULL.value
    finally:
        slots.release("holder")
        slots.release("holder")

    await wait_for_status(api, group, instance_id, within=30.0, hasPendingApproval=True)
    status = (await handle.describe()).status
    assert status is not None and status.name == "RUNNING"


async def test_a_freed_turn_goes_to_the_group_that_has_had_least_render_time() -> None:
    # The queue alone, one turn: "a" has had half a second and has three renders waiting when
    # "b" asks for one; "b" goes next, then "a"'s in their order. A cancelled waiter leaves.
    queue = FairRenderQueue(1)
    await queue.acquire("a")
    queue.record("a", 0.5)
    order: list[str] = []

    async def render(group: str, name: str) -> None:
        await queue.acquire(group)
        order.append(name)
        queue.release(group)

    waiters = [asyncio.create_task(render("a", f"a{index}")) for index in range(3)]
    await asyncio.sleep(0)
    late = asyncio.create_task(render("b", "b0"))
    gone = asyncio.create_task(render("c", "c0"))
    await asyncio.sleep(0)
    assert (queue.waiting, queue.waiting_of("a"), queue.waiting_of("b")) == (5, 3, 1)
    gone.cancel()
    await asyncio.gather(gone, return_exceptions=True)
    assert queue.waiting == 4

    queue.release("a")
    await asyncio.gather(*waiters, late)

    assert order == ["b0", "a0", "a1", "a2"]
    assert queue.waiting == 0
