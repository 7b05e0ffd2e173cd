"""Hostile but ordinary lead data and mail servers, end to end (issue 8, items 1-3).

Each input of the issue, and more of its kind, against the real stack: the API, a worker, the
Temporal dev server, the file outbox or a real SMTP server (aiosmtpd). What the reviewer saw is
compared with what a mail reader decodes from the bytes that arrived.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from temporalio.client import Client
from temporalio.worker import Worker

from activities.campaign import CampaignActivities
from activities.mailers import NotSent, OutboxMailer, SmtpMailer, Superseded
from activities.messages import compose
from activities.outbox import FileOutbox
from campaign_engine.addresses import InvalidAddress, parse_address, parse_mailbox
from campaign_engine.deliveries import DeliveryLedger
from campaign_engine.settings import Settings
from campaign_engine.store import Store
from devsupport.servers import SmtpSink
from entrypoints.devserver import free_port
from tests.helpers import (
    Api,
    Campaign,
    approve_ok,
    assert_eventually,
    assert_failed_with,
    create_campaign,
    enrol,
    handle_of,
    instance_data,
    lead,
    message_id_of,
    outbox_files,
    wait_for_status,
)
from tests.test_headers import DELIVERED_HEADERS, check_structure
from tests.test_time_skipping import start
from workflows.activity_options import DELIVERY_MAX_ATTEMPTS
from workflows.campaign import CampaignWorkflow
from workflows.types import CampaignStep, StopReason, StopRequest

ONE_STEP: dict[str, Any] = {
    "name": "Hostile",
    "approvalTimeout": "P7D",
    "steps": [
        {
            "id": "intro",
            "subject": "Hello {{ lead.firstName }}",
            "body": "Hi {{ lead.firstName }} {{ lead.lastName }} at {{ lead.company }}",
            "requiresApproval": True,
        }
    ],
}
ENCODED_WORD_NAMES = {
    "reply-to": "=?utf-8?q?Ada=0D=0AReply-To:_attacker@evil.test?=",
    "bcc": "=?utf-8?q?Ada=0D=0ABcc:_victim@evil.test?=",
}


@pytest.fixture
def smtp_ascii() -> Iterator[SmtpSink]:
    """A real SMTP server that does not offer SMTPUTF8."""
    sink = SmtpSink(smtputf8=False)
    sink.start()
    yield sink
    sink.stop()


@pytest.fixture
def dead_port() -> int:
    """A port nothing listens on: connections are refused."""
    return free_port()


@pytest.fixture
def settings_overrides(request: pytest.FixtureRequest) -> dict[str, Any]:
    for name in ("smtp", "smtp_ascii"):
        if name in request.fixturenames:
            sink: SmtpSink = request.getfixturevalue(name)
            return {"delivery": "smtp", "smtp_port": sink.port}
    if "dead_port" in request.fixturenames:
        return {"delivery": "smtp", "smtp_port": request.getfixturevalue("dead_port")}
    return {}


@pytest.fixture
async def one_step(api: Api) -> Campaign:
    return await create_campaign(api, ONE_STEP)


async def to_gate(api: Api, campaign: Campaign, **fields: str) -> tuple[str, dict[str, Any]]:
    """Enrols a lead with these fields; returns its instance id and the content under review."""
    instance_id = await enrol(api, campaign, lead(**fields))
    data: dict[str, Any] = {}

    async def at_gate() -> bool:
        nonlocal data
        response = await api.http.get(campaign.instance_url(instance_id), headers=campaign.auth)
        data = response.json()["data"] or {}
        return bool(response.status_code == 200 and data["leadStatus"]["hasPendingApproval"])

    await assert_eventually(at_gate)
    pending: dict[str, Any] = data["pendingContent"]
    return instance_id, pending


async def reviewed_then_sent(api: Api, campaign: Campaign, **fields: str) -> dict[str, Any]:
    """Enrols, reads the content under review, approves, waits for the delivery; returns what
    the reviewer saw."""
    instance_id, pending = await to_gate(api, campaign, **fields)
    await approve_ok(api, campaign, instance_id)
    await wait_for_status(api, campaign, instance_id, workflowStatus="completed")
    return pending


async def delivery_attempts(temporal: Client, campaign: Campaign, instance_id: str) -> list[int]:
    """The attempt number of each recorded start of the delivery activity, from the history."""
    history = await handle_of(temporal, campaign, instance_id).fetch_history()
    deliveries = {
        event.event_id
        for event in history.events
        if event.HasField("activity_task_scheduled_event_attributes")
        and event.activity_task_scheduled_event_attributes.activity_type.name == "deliver_message"
    }
    return [
        event.activity_task_started_event_attributes.attempt
        for event in history.events
        if event.HasField("activity_task_started_event_attributes")
        and event.activity_task_started_event_attributes.scheduled_event_id in deliveries
    ]


# --- 1. lead data in headers --------------------------------------------------------------------


@pytest.mark.parametrize("first_name", ENCODED_WORD_NAMES.values(), ids=ENCODED_WORD_NAMES.keys())
async def test_encoded_word_name_over_smtp_is_sent_as_reviewed(
    first_name: str, smtp: SmtpSink, api: Api, one_step: Campaign, worker: Worker
) -> None:
    pending = await reviewed_then_sent(api, one_step, firstName=first_name)

    [envelope] = smtp.received_envelopes()
    message = check_structure(envelope.content, DELIVERED_HEADERS)
    assert pending["subject"] == f"Hello {first_name}"
    assert message["Subject"] == pending["subject"]
    assert message["Reply-To"] is None and message["Bcc"] is None
    assert envelope.rcpt_tos == ["ada@example.com"]
    assert b"evil.test" not in envelope.content.partition(b"\r\n\r\n")[0]


@pytest.mark.parametrize("first_name", ENCODED_WORD_NAMES.values(), ids=ENCODED_WORD_NAMES.keys())
async def test_encoded_word_name_in_outbox_is_sent_as_reviewed(
    first_name: str, api: Api, one_step: Campaign, worker: Worker
) -> None:
    pending = await reviewed_then_sent(api, one_step, firstName=first_name)

    [path] = outbox_files(api.settings)
    message = check_structure(path.read_bytes(), DELIVERED_HEADERS)
    assert message["Subject"] == pending["subject"] == f"Hello {first_name}"
    assert message["Reply-To"] is None and message["Bcc"] is None
    assert [a.addr_spec for a in message["To"].addresses] == ["ada@example.com"]


@pytest.mark.parametrize(
    ("fields", "subject"),
    [
        (
            {
                "firstName": "Zoë",
                "lastName": "=?utf-8?b?UmVwbHktVG86IHhAZXZpbC50ZXN0?=",
                "company": '"Quoted, Inc." <x@evil.test>',
            },
            'Zoë =?utf-8?b?UmVwbHktVG86IHhAZXZpbC50ZXN0?= at "Quoted, Inc." <x@evil.test>',
        ),
        (
            {"firstName": "é" * 200, "lastName": "x" * 200, "company": "Long " * 40},
            f"{'é' * 200} {'x' * 200} at {('Long ' * 40).strip()}",
        ),
        (
            {"firstName": "=?", "lastName": "?=", "company": "\\ ; : , < > ( )"},
            "=? ?= at \\ ; : , < > ( )",
        ),
    ],
    ids=["encoded-words-and-address-syntax", "longest-names-fold", "fragments"],
)
async def test_any_lead_field_in_the_subject_is_text(
    fields: dict[str, str], subject: str, api: Api, worker: Worker
) -> None:
    campaign = await create_campaign(
        api,
        {
            **ONE_STEP,
            "steps": [
                {
                    **ONE_STEP["steps"][0],
                    "subject": "{{ lead.firstName }} {{ lead.lastName }} at {{ lead.company }}",
                }
            ],
        },
    )

    pending = await reviewed_then_sent(api, campaign, **fields)

    [path] = outbox_files(api.settings)
    message = check_structure(path.read_bytes(), DELIVERED_HEADERS)
    assert pending["subject"] == subject
    assert message["Subject"] == subject


async def test_line_breaks_and_controls_in_a_subject_template_become_one_line(
    api: Api, worker: Worker
) -> None:
    campaign = await create_campaign(
        api,
        {
            **ONE_STEP,
            "steps": [
                {
                    **ONE_STEP["steps"][0],
                    "subject": "Hi\t{{ lead.firstName }}\u2028Bcc: x@evil.test\u0085\x00end\r\n",
                }
            ],
        },
    )

    pending = await reviewed_then_sent(api, campaign)

    [path] = outbox_files(api.settings)
    message = check_structure(path.read_bytes(), DELIVERED_HEADERS)
    assert pending["subject"] == "Hi Ada Bcc: x@evil.test end"
    assert message["Subject"] == pending["subject"]
    assert message["Bcc"] is None


# --- 2. addresses outside ASCII -----------------------------------------------------------------


async def test_utf8_local_part_goes_with_smtputf8(
    smtp: SmtpSink, api: Api, one_step: Campaign, worker: Worker
) -> None:
    await reviewed_then_sent(api, one_step, email="zoë@example.com")

    [envelope] = smtp.received_envelopes()
    assert envelope.rcpt_tos == ["zoë@example.com"]
    assert "SMTPUTF8" in [option.upper() for option in envelope.mail_options]
    message = check_structure(envelope.content, DELIVERED_HEADERS)
    assert [a.addr_spec for a in message["To"].addresses] == ["zoë@example.com"]


async def test_utf8_local_part_in_outbox(api: Api, one_step: Campaign, worker: Worker) -> None:
    await reviewed_then_sent(api, one_step, email="zoë@example.com")

    [path] = outbox_files(api.settings)
    message = check_structure(path.read_bytes(), DELIVERED_HEADERS)
    assert [a.addr_spec for a in message["To"].addresses] == ["zoë@example.com"]


async def test_utf8_local_part_without_smtputf8_fails_at_once(
    smtp_ascii: SmtpSink,
    api: Api,
    one_step: Campaign,
    worker: Worker,
    temporal: Client,
    store: Store,
) -> None:
    instance_id, _ = await to_gate(api, one_step, email="zoë@example.com")
    started = asyncio.get_running_loop().time()

    await approve_ok(api, one_step, instance_id)
    status = await wait_for_status(api, one_step, instance_id, within=10, workflowStatus="failed")

    assert asyncio.get_running_loop().time() - started < 5
    assert status["workflowStopReason"] == "DELIVERY_FAILED"
    delivery = (await instance_data(api, one_step, instance_id))["delivery"]
    assert delivery["state"] == "failed"
    assert delivery["attempt"] == 1
    assert "SMTPUTF8" in delivery["lastError"]
    assert await delivery_attempts(temporal, one_step, instance_id) == [1]
    assert smtp_ascii.connections_opened == 1
    await assert_eventually(
        lambda: _now(smtp_ascii.open_connections()),
        lambda n: n == 0,
        within=5,
        what="open SMTP connections",
    )
    assert smtp_ascii.received() == []
    ledger = DeliveryLedger(store)
    assert await ledger.state(message_id_of(one_step, instance_id, "intro")) is None


@pytest.mark.parametrize("address", ["ada@xn--bcher-kva.example", "ada@bücher.example"])
async def test_international_domain_goes_as_a_labels(
    address: str, smtp: SmtpSink, api: Api, one_step: Campaign, worker: Worker
) -> None:
    await reviewed_then_sent(api, one_step, email=address)

    [envelope] = smtp.received_envelopes()
    assert envelope.rcpt_tos == ["ada@xn--bcher-kva.example"]
    assert "SMTPUTF8" not in [option.upper() for option in envelope.mail_options]
    message = check_structure(envelope.content, DELIVERED_HEADERS)
    assert [a.addr_spec for a in message["To"].addresses] == ["ada@xn--bcher-kva.example"]
    envelope.content.decode("ascii")


@pytest.mark.parametrize(
    "email",
    [
        '"ada\r\nBcc: x@evil.test"@example.com',
        '"ada\\r\\nBcc: x@evil.test"@example.com',
        "=?utf-8?q?a=0D=0A?=@example.com",
        "=?utf-8?q?ada=0D=0ABcc:_x@evil.test?=@example.com",
        "ada@example.com\r\nBcc: x@evil.test",
        "ada@example.com>\r\nBcc: <x@evil.test",
        "Ada <ada@example.com>",
        "ada@example.com, x@evil.test",
        "ada\u2028@example.com",
        "ada\x00@example.com",
        "ada@localhost",
    ],
)
async def test_address_that_could_carry_structure_is_400_at_enrolment(
    email: str, api: Api, one_step: Campaign
) -> None:
    response = await api.http.post(
        f"{one_step.url}/workflow-instances",
        json={"lead": lead(email=email)},
        headers=one_step.auth,
    )

    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "VALIDATION_ERROR"
    assert response.json()["error"]["details"] == "lead.email"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("firstName", "Ada\r\nBcc: x@evil.test"),
        ("firstName", "Ada\nReply-To: x@evil.test"),
        ("firstName", "Ada\u2028Reply-To: x@evil.test"),
        ("firstName", "Ada\u0085x"),
        ("lastName", "Love\tlace"),
        ("lastName", "\ud800"),
        ("company", "Acme\x00"),
        ("company", "Acme\x1b[31m"),
    ],
)
async def test_name_with_line_breaks_or_controls_is_400_at_enrolment(
    field: str, value: str, api: Api, one_step: Campaign
) -> None:
    response = await api.http.post(
        f"{one_step.url}/workflow-instances",
        # json.dumps escapes a lone surrogate as JSON allows (\ud800); httpx would refuse it.
        content=json.dumps({"lead": lead(**{field: value})}),
        headers={**one_step.auth, "Content-Type": "application/json"},
    )

    assert response.status_code == 400, response.text
    assert response.json()["error"]["details"] == f"lead.{field}"


# --- 3. every failure classified; a stop reaches a delivery -------------------------------------


async def stop_while_retrying(
    api: Api, campaign: Campaign, temporal: Client, store: Store, last_error: str
) -> str:
    """Approves, waits for the delivery to be retrying (checking what the instance GET shows
    meanwhile), stops the instance; returns its id once it is stopped."""
    instance_id, _ = await to_gate(api, campaign)
    await approve_ok(api, campaign, instance_id)
    seen: dict[str, Any] = {}

    async def retrying() -> bool:
        nonlocal seen
        seen = (await instance_data(api, campaign, instance_id))["delivery"] or {}
        return seen.get("state") == "retrying" and seen["attempt"] >= 2

    await assert_eventually(retrying)
    assert seen["maximumAttempts"] == DELIVERY_MAX_ATTEMPTS
    assert last_error in seen["lastError"]
    assert seen["nextAttemptAt"] is not None
    handle = handle_of(temporal, campaign, instance_id)
    await handle.signal(CampaignWorkflow.stop, StopRequest(reason="wrong list", decided_by="ops"))

    status = await wait_for_status(api, campaign, instance_id, within=10, workflowStatus="stopped")

    assert status["workflowStopReason"] == "STOPPED_BY_OPERATOR"
    result = await handle.result()
    assert result.stop is not None and result.stop.note == "wrong list"
    assert (await instance_data(api, campaign, instance_id))["delivery"] is None
    ledger = DeliveryLedger(store)
    assert await ledger.state(message_id_of(campaign, instance_id, "intro")) is None
    return instance_id


async def test_stop_during_delivery_retrying_after_451_prevents_it(
    smtp: SmtpSink, api: Api, one_step: Campaign, worker: Worker, temporal: Client, store: Store
) -> None:
    smtp.transient_failures = 1_000_000

    await stop_while_retrying(api, one_step, temporal, store, last_error="SMTP 451 to DATA")

    attempts_at_stop = smtp.data_attempts
    smtp.transient_failures = 0  # the server recovers: nothing goes out after the stop
    await asyncio.sleep(3)
    assert smtp.received() == []
    assert smtp.data_attempts == attempts_at_stop
    assert smtp.open_connections() == 0


async def test_stop_during_delivery_retrying_while_refused_prevents_it(
    dead_port: int, api: Api, one_step: Campaign, worker: Worker, temporal: Client, store: Store
) -> None:
    await stop_while_retrying(api, one_step, temporal, store, last_error="SMTP unreachable")

    late = SmtpSink(port=dead_port)  # the server comes up: nothing goes out after the stop
    late.start()
    try:
        await asyncio.sleep(3)
        assert late.connections_opened == 0
        assert late.received() == []
    finally:
        late.stop()


async def test_stop_reaches_a_running_attempt_before_the_hand_over(
    smtp: SmtpSink, api: Api, one_step: Campaign, worker: Worker, temporal: Client, store: Store
) -> None:
    smtp.rcpt_delay_seconds = 8.0
    instance_id, _ = await to_gate(api, one_step)
    await approve_ok(api, one_step, instance_id)
    await assert_eventually(
        lambda: _now(smtp.rcpt_attempts), lambda n: n >= 1, what="RCPT attempts"
    )
    stopped_at = asyncio.get_running_loop().time()

    await handle_of(temporal, one_step, instance_id).signal(
        CampaignWorkflow.stop, StopRequest(reason="paused")
    )
    status = await wait_for_status(api, one_step, instance_id, within=8, workflowStatus="stopped")

    # The stop arrives by heartbeat (every 2 s), well before the server answers RCPT.
    assert asyncio.get_running_loop().time() - stopped_at < 6
    assert status["workflowStopReason"] == "STOPPED_BY_OPERATOR"
    await assert_eventually(
        lambda: _now(smtp.open_connections()),
        lambda n: n == 0,
        within=5,
        what="open SMTP connections",
    )
    await asyncio.sleep(max(0.0, stopped_at + 8.5 - asyncio.get_running_loop().time()))
    assert smtp.data_attempts == 0 and smtp.received() == []
    ledger = DeliveryLedger(store)
    assert await ledger.state(message_id_of(one_step, instance_id, "intro")) is None


async def test_transient_failures_give_up_at_the_cap(
    smtp: SmtpSink, temporal: Client, settings: Settings, worker: Worker
) -> None:
    smtp.transient_failures = 1_000_000
    steps = [CampaignStep(id="intro", subject="Hi", body="Hello", requires_approval=False)]
    # Virtual time: the 63 minutes of backoff pass in seconds.
    _, handle = await start(temporal, settings, steps, approval_timeout=None)

    cause = await assert_failed_with(handle, StopReason.DELIVERY_FAILED)

    assert "451" in cause.message
    assert smtp.data_attempts == DELIVERY_MAX_ATTEMPTS
    status = await handle.query(CampaignWorkflow.lead_status)
    assert status.failure is not None
    assert status.failure.attempt == DELIVERY_MAX_ATTEMPTS
    assert status.failure.error_type == "TransientDeliveryError"
    assert "451" in status.failure.message
    assert smtp.open_connections() == 0


# --- the sender setting and the SMTP client on every path ---------------------------------------


@pytest.mark.parametrize(
    "sender",
    [
        "Campaign Engine <campaigns@localhost>\r\nBcc: x@evil.test",
        "ops@example.com\nBcc: x@evil.test",
        "=?utf-8?q?Ops=0D=0ABcc:_x@evil.test?= <ops@example.com>",
        "not an address",
    ],
)
def test_sender_setting_that_is_not_an_address_is_refused(sender: str, store: Store) -> None:
    with pytest.raises(ValidationError, match="CAMPAIGN_ENGINE_SENDER"):
        Settings(sender=sender)
    # A copy that skipped validation is still refused where the sender is used.
    with pytest.raises(InvalidAddress):
        CampaignActivities(
            store=store,
            mailer=OutboxMailer(FileOutbox(Path("unused"))),
            sender=sender,
            unsubscribe_key=b"unused",
            unsubscribe_base_url="https://unsubscribe.example.com",
        )


async def test_worker_refuses_to_start_with_an_invalid_sender() -> None:
    process = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).with_name("campaign-engine")),
        "worker",
        env={"CAMPAIGN_ENGINE_SENDER": "ops@example.com\r\nBcc: x@evil.test", "PATH": ""},
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await process.communicate()

    assert process.returncode == 2
    assert b"CAMPAIGN_ENGINE_SENDER" in err


async def test_smtp_connection_is_closed_on_every_path(smtp: SmtpSink) -> None:
    mailer = SmtpMailer(host="127.0.0.1", port=smtp.port, timeout_seconds=5)
    outgoing = compose(
        message_id="<m@campaign-engine>",
        sender=parse_mailbox("s@example.com"),
        recipient=parse_address("zoë@example.com"),
        subject="Hi",
        body="b",
    )

    async def hand_over() -> bool:
        return True

    async def refuse() -> bool:
        return False

    async def explode() -> bool:
        raise RuntimeError("ledger down")

    # A UTF-8 address sent as if it were ASCII: the client cannot encode it (UnicodeEncodeError).
    with pytest.raises(NotSent) as raised:
        await mailer.send("m", dataclasses.replace(outgoing, smtputf8=False), hand_over)
    assert raised.value.permanent
    with pytest.raises(Superseded):
        await mailer.send("m", outgoing, refuse)
    with pytest.raises(RuntimeError):
        await mailer.send("m", outgoing, explode)
    smtp.rcpt_delay_seconds = 5
    sending = asyncio.create_task(mailer.send("m", outgoing, hand_over))
    await assert_eventually(
        lambda: _now(smtp.rcpt_attempts), lambda n: n >= 3, what="RCPT attempts"
    )
    sending.cancel()
    with pytest.raises(asyncio.CancelledError):
        await sending

    await assert_eventually(
        lambda: _now(smtp.open_connections()),
        lambda n: n == 0,
        within=5,
        what="open SMTP connections",
    )
    assert smtp.connections_opened == 4
    assert smtp.received() == []


async def _now(value: int) -> int:
    """A value read now, as the awaitable `assert_eventually` polls."""
    return value
