"""Templates under a budget and campaigns under Temporal's payload limit, against the real stack.

Each input that once broke a promise (issue 8, items 5 and 6) is here with the answer it gets
now: refused at PUT naming the field, or a 413 with the cause, or an instance that fails at once
with `DRAFT_FAILED` — never a blocked event loop, a worker retrying for minutes, or a 502.
"""

from __future__ import annotations

import asyncio
import logging
import random
import string
from typing import Any

import httpx
import pytest
from temporalio.client import Client
from temporalio.worker import Worker

from activities.templates import MAX_BODY_CHARS
from tests.helpers import (
    TWO_STEP_CAMPAIGN,
    Api,
    Campaign,
    create_campaign,
    enrol,
    handle_of,
    lead,
    wait_for_status,
)

EIGHT_MIB = 8 * 1024 * 1024


def with_step(**changes: Any) -> dict[str, Any]:
    first = {**TWO_STEP_CAMPAIGN["steps"][0], **changes}
    return {**TWO_STEP_CAMPAIGN, "steps": [first, *TWO_STEP_CAMPAIGN["steps"][1:]]}


def long_campaign(
    steps: int, body_chars: int = MAX_BODY_CHARS, *, incompressible: bool = False
) -> dict[str, Any]:
    """`incompressible`: bodies of random characters, which the payload codec's zlib cannot
    shrink much (~0.8), for tests that need a payload to stay large on its way to Temporal."""
    chooser = random.Random(steps)
    alphabet = string.ascii_letters + string.digits + " .,;:!?-_()[]"

    def body() -> str:
        if incompressible:
            return "".join(chooser.choices(alphabet, k=body_chars))
        return "b" * body_chars

    return {
        "name": f"{steps} long steps",
        "steps": [
            {"id": f"s{index}", "subject": "Hi", "body": body(), "delay": 0}
            for index in range(steps)
        ],
    }


async def put(api: Api, campaign: Campaign, definition: dict[str, Any]) -> httpx.Response:
    return await api.http.put(campaign.url, json=definition, headers=campaign.auth)


def refusal(response: httpx.Response) -> tuple[int, str, str | None, str]:
    error = response.json()["error"]
    return response.status_code, error["code"], error["details"], error["message"]


async def test_nested_range_is_400_at_put(api: Api, campaign: Campaign) -> None:
    nested = "{% for a in range(12000) %}{% for b in range(3000) %}{% endfor %}{% endfor %}x"

    response = await put(api, campaign, with_step(body=nested))

    status, code, details, message = refusal(response)
    assert (status, code, details) == (400, "VALIDATION_ERROR", "steps.0.body")
    assert "range() of 12,000 numbers; templates allow at most 10,000" in message


async def test_healthz_answers_while_a_template_is_checked(api: Api, campaign: Campaign) -> None:
    # A quarter of a second or more of template work before the budget stops it: the API's
    # event loop keeps answering meanwhile, since templates render in other processes.
    busy = (
        "{% for a in range(10000) %}{% for b in range(10000) %}"
        "{% if loop.cycle(1, 2) == 3 %}{% endif %}{% endfor %}{% endfor %}"
    )
    checking = asyncio.create_task(put(api, campaign, with_step(body=busy)))
    answered_meanwhile = []
    while not checking.done():
        health = await api.http.get("/healthz")
        if not checking.done():
            answered_meanwhile.append(health.status_code)
    response = await checking

    status, _, details, message = refusal(response)
    assert (status, details) == (400, "steps.0.body")
    assert "more than 50,000 steps" in message
    assert answered_meanwhile, "no /healthz answered while the PUT was being checked"
    assert set(answered_meanwhile) == {200}


@pytest.mark.parametrize(
    ("field", "template", "why"),
    [
        ("body", '{{ "A" * 200000 }}', "'*' would hold 200,000"),
        ("subject", "{{ lead.firstName * 300000 }}", "'*' would hold 60,000,000"),
        # Passes for a three-letter name; the worst-case lead has 200 letters.
        ("subject", "{{ lead.firstName * 300 }}", "renders more than 998 characters"),
        (
            "body",
            "{{ lead.company * 400 }}{{ lead.company * 400 }}",
            "more than 100,000 characters",
        ),
    ],
)
async def test_output_over_the_limit_is_400_naming_the_field(
    api: Api, campaign: Campaign, field: str, template: str, why: str
) -> None:
    response = await put(api, campaign, with_step(**{field: template}))

    status, code, details, message = refusal(response)
    assert (status, code, details) == (400, "VALIDATION_ERROR", f"steps.0.{field}")
    assert why in message


BOMBS = [
    ("{% macro m() %}{{ m() }}{% endmacro %}{{ m() }}", "calls nest more than 32 deep"),
    ("{{ range(10**9)|list }}", "range() of 1,000,000,000"),
    ('{{ "%999999999s" % 1 }}', "%-format width of 999,999,999"),
    ('{{ "{:>999999999}".format(1) }}', "format width of 999,999,999"),
    ('{{ range(10000)|join("x" * 1000) }}', "join() would hold"),
    ('{{ ("a" * 90000)|wordwrap(1) }}', "wordwrap()"),
    ('{{ "x"|center(10**9) }}', "center() width"),
    ('{{ "x\ny"|indent(10**9) }}', "indent() width"),
    ("{{ lipsum(10**6) }}", "lipsum() of up to"),
    (
        '{% set x = "A" * 1000 %}{% for a in range(1000) %}{% for b in range(1000) %}'
        "{{ x }}{% endfor %}{% endfor %}",
        "renders more than",
    ),
    (
        "{% for a in range(10000) %}{% for b in range(10000) %}{% endfor %}{% endfor %}",
        "more than 20,000 iterations",
    ),
    ("{% for a in x %}" * 40 + "{% endfor %}" * 40, "nests blocks more than 16 deep"),
    ("{{ 9 ** 999999999 }}", "'**' would have about"),
    ('{{ (1).to_bytes(10**9, "big") }}', "int.to_bytes() length"),
]


async def test_every_kind_of_template_bomb_is_400_at_put(api: Api, campaign: Campaign) -> None:
    answers = {}
    for template, why in BOMBS:
        response = await put(api, campaign, with_step(subject="Hi", body=template))
        status, code, details, message = refusal(response)
        answers[template[:50]] = (status, code, details, why in message, message)

    wrong = {
        t: a for t, a in answers.items() if a[:4] != (400, "VALIDATION_ERROR", "steps.0.body", True)
    }
    assert not wrong, wrong


async def test_bounded_templates_are_accepted(api: Api, campaign: Campaign) -> None:
    response = await put(
        api, campaign, with_step(body='{{ "x"|truncate(10**9) }} {{ range(3)|join }}')
    )

    assert response.status_code == 200, response.text


async def test_every_failing_template_is_named(api: Api, campaign: Campaign) -> None:
    definition = {
        **TWO_STEP_CAMPAIGN,
        "steps": [
            {**TWO_STEP_CAMPAIGN["steps"][0], "subject": '{{ "A" * 999 }}'},
            {**TWO_STEP_CAMPAIGN["steps"][1], "subject": '{{ "A" * 999 }}'},
        ],
    }

    response = await put(api, campaign, definition)

    status, _, details, _ = refusal(response)
    assert status == 400
    # The first failure stops the checks not yet started; in parallel, both may have run.
    assert details in {"steps.0.subject", "steps.1.subject", "steps.0.subject, steps.1.subject"}


async def test_template_over_the_limit_for_a_real_lead_fails_the_instance_at_once(
    api: Api, worker: Worker, temporal: Client
) -> None:
    # For the worst-case lead ("Straße & Söhne …") this renders nothing; for a company
    # called "Analytical Engines" it renders 100,008 characters.
    template = (
        '{% if lead.company.startswith("Analytical") %}'
        '{{ "x" * 99990 }}{{ lead.company }}{% endif %}'
    )
    campaign = await create_campaign(api, with_step(body=template))

    instance_id = await enrol(api, campaign, lead(company="Analytical Engines"))

    status = await wait_for_status(api, campaign, instance_id, workflowStatus="failed")
    assert status["workflowStopReason"] == "DRAFT_FAILED"
    history = await handle_of(temporal, campaign, instance_id).fetch_history()
    started = [
        e.activity_task_started_event_attributes
        for e in history.events
        if e.HasField("activity_task_started_event_attributes")
    ]
    failed = [
        e.activity_task_failed_event_attributes
        for e in history.events
        if e.HasField("activity_task_failed_event_attributes")
    ]
    assert [s.attempt for s in started] == [1], "the draft was not retried"
    [failure] = failed
    assert failure.failure.application_failure_info.type == "TemplateRenderError"
    assert failure.failure.application_failure_info.non_retryable
    # Failure messages travel encrypted: read as our clients read them.
    message = str(await temporal.data_converter.decode_failure(failure.failure))
    assert "renders more than 100,000 characters" in message


async def test_reads_and_enrolments_never_render(
    api: Api, campaign: Campaign, worker: Worker
) -> None:
    # Stored as it is (as before the budget existed): no PUT ever checked it.
    unchecked = with_step(body='{{ "A" * 200000 }}')
    await api.store.put_campaign(campaign.account_group_id, campaign.campaign_id, unchecked)

    read = await api.http.get(campaign.url, headers=campaign.auth)
    instance_id = await enrol(api, campaign)

    assert read.status_code == 200
    assert read.json()["data"]["steps"][0]["body"] == '{{ "A" * 200000 }}'
    status = await wait_for_status(api, campaign, instance_id, workflowStatus="failed")
    assert status["workflowStopReason"] == "DRAFT_FAILED"


async def test_twenty_five_full_steps_are_413_at_put(api: Api, campaign: Campaign) -> None:
    response = await put(api, campaign, long_campaign(25))

    status, code, details, message = refusal(response)
    assert (status, code, details) == (413, "CAMPAIGN_TOO_LARGE", "steps")
    assert "Temporal's payload size limit of 2,097,152 bytes" in message
    read = await api.http.get(campaign.url, headers=campaign.auth)
    assert read.json()["data"]["name"] == TWO_STEP_CAMPAIGN["name"], "the old version is kept"


async def test_the_largest_accepted_campaign_starts_and_drafts(
    api: Api, campaign: Campaign, worker: Worker
) -> None:
    # Five full bodies fit under the budget (docs/reference/campaigns.md: the arithmetic); a
    # sixth does not.
    assert (await put(api, campaign, long_campaign(6))).status_code == 413
    accepted = await put(api, campaign, long_campaign(5))
    assert accepted.status_code == 200, accepted.text

    instance_id = await enrol(api, campaign)

    await wait_for_status(api, campaign, instance_id, hasPendingApproval=True)


async def test_stored_campaign_too_large_is_413_at_enrolment_not_502(
    api: Api, campaign: Campaign
) -> None:
    await api.store.put_campaign(campaign.account_group_id, campaign.campaign_id, long_campaign(25))

    response = await api.http.post(
        f"{campaign.url}/workflow-instances", json={"lead": lead()}, headers=campaign.auth
    )

    status, code, details, _ = refusal(response)
    assert (status, code, details) == (413, "CAMPAIGN_TOO_LARGE", "steps")


@pytest.mark.parametrize("settings_overrides", [{"temporal_blob_size_limit_bytes": EIGHT_MIB}])
async def test_temporal_refusing_a_payload_is_413_with_its_cause_not_502(
    api: Api, caplog: pytest.LogCaptureFixture
) -> None:
    """Our own budget raised past the server's 2 MiB, so Temporal itself refuses the start."""
    caplog.set_level(logging.WARNING, logger="campaign_engine.api")
    # Random bodies: payloads are compressed before encryption, and "b" * 100,000 would shrink
    # to nothing. 3 MB is ~2.4 MB compressed: over the blob size limit. 4.5 MB is over gRPC's
    # message limit in clear; compressed (~3.6 MB) it is over the blob size limit.
    blob = await create_campaign(api, long_campaign(30, incompressible=True))
    grpc = await create_campaign(api, long_campaign(45, incompressible=True))

    over_blob = await api.http.post(
        f"{blob.url}/workflow-instances", json={"lead": lead()}, headers=blob.auth
    )
    over_grpc = await api.http.post(
        f"{grpc.url}/workflow-instances", json={"lead": lead()}, headers=grpc.auth
    )

    status, code, details, message = refusal(over_blob)
    assert (status, code, details) == (413, "TEMPORAL_PAYLOAD_TOO_LARGE", "INVALID_ARGUMENT")
    assert "exceeds limit" in message.lower()
    assert any(
        "Temporal refused the payload as too large: INVALID_ARGUMENT" in r.getMessage()
        and "exceeds limit" in r.getMessage().lower()
        for r in caplog.records
    ), caplog.text
    status, code, details, _ = refusal(over_grpc)
    assert status == 413, over_grpc.text
    assert code == "TEMPORAL_PAYLOAD_TOO_LARGE"
    # Temporal is up all along: these were never outages.
    assert (await api.http.get("/readyz")).status_code == 200
