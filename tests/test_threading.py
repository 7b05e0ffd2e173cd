"""Threaded follow-ups: a step sent as a reply in the earlier messages' thread.

Against the real things: the API, the Temporal dev server, a worker and an SMTP server; each
message is read back as it arrived. The rules are RFC 5322 §3.6.4 (`In-Reply-To` the parent's
Message-ID, `References` the parent's References and its Message-ID) and §3.6.5 (one `Re: `).
"""

from __future__ import annotations

import email
import email.policy
from email.message import EmailMessage
from typing import Any

import dkim
import pytest
from temporalio.worker import Worker

from activities.campaign import message_id_for
from activities.messages import (
    CompositionError,
    DkimSigner,
    compose,
    message_ids_header,
    reply_subject,
)
from api.campaigns import snapshot_of
from api.payload_limits import _carried_reference_bytes, payload_bytes
from api.schemas import CampaignBody
from campaign_engine import dkim_keys
from campaign_engine.ids import workflow_id_for
from devsupport.servers import SmtpSink
from tests.helpers import (
    Api,
    Campaign,
    approve,
    assert_eventually,
    create_campaign,
    enrol,
    instance_data,
    lead,
    message_id_of,
    wait_for_status,
)
from tests.test_headers import DELIVERED_HEADERS, LEAD, SENDER, check_structure
from tests.test_hostile_mail import ENCODED_WORD_NAMES
from workflows.types import DraftedContent

THREADED: dict[str, Any] = {
    "name": "Threaded",
    "approvalTimeout": "P7D",
    "steps": [
        {"id": "intro", "subject": "Hello {{ lead.firstName }}", "body": "Hi {{ lead.firstName }}"},
        {"id": "bump", "thread": True, "body": "Just bumping this up."},
        {"id": "last", "thread": True, "body": "Last note from me."},
    ],
}
REPLY_HEADERS = [*DELIVERED_HEADERS, "In-Reply-To", "References"]


@pytest.fixture
def settings_overrides(smtp: SmtpSink) -> dict[str, Any]:
    return {"delivery": "smtp", "smtp_port": smtp.port}


def ungated(definition: dict[str, Any]) -> dict[str, Any]:
    """`definition` with every step sent without a gate."""
    return {
        **definition,
        "steps": [{**step, "requiresApproval": False} for step in definition["steps"]],
    }


def read_back(raw: bytes) -> EmailMessage:
    """The message as a mail reader reads it (encoded words decoded)."""
    message = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


def references_of(message: EmailMessage) -> list[str]:
    """The `References` msg-ids, unfolded; [] without the header."""
    value = message["References"]
    return str(value).split() if value is not None else []


async def put(api: Api, campaign: Campaign, definition: dict[str, Any]) -> Any:
    return await api.http.put(campaign.url, json=definition, headers=campaign.auth)


async def gate_of(api: Api, campaign: Campaign, instance_id: str, step_id: str) -> tuple[str, Any]:
    """Waits for the gate of `step_id`; returns the instance GET's ETag and pending content."""
    seen: dict[str, Any] = {}

    async def at_gate() -> bool:
        response = await api.http.get(campaign.instance_url(instance_id), headers=campaign.auth)
        if response.status_code != 200:
            return False
        pending = response.json()["data"]["pendingContent"]
        seen.update(etag=response.headers.get("ETag"), pending=pending)
        return pending is not None and pending["stepId"] == step_id

    await assert_eventually(at_gate, within=30.0, what=f"the gate of {step_id}")
    return seen["etag"], seen["pending"]


async def sent(smtp: SmtpSink, count: int) -> list[EmailMessage]:
    """The first `count` messages the SMTP server accepted, read back, once it has them all."""

    async def arrived() -> int:
        return len(smtp.received_envelopes())

    await assert_eventually(arrived, lambda n: n >= count, within=30.0, what=f"{count} messages")
    envelopes = smtp.received_envelopes()
    assert len(envelopes) == count, "no message more than the steps"
    return [read_back(envelope.content) for envelope in envelopes]


# --- end to end ---------------------------------------------------------------------------------


async def test_threaded_steps_reply_in_the_first_messages_thread_with_the_approved_subject(
    smtp: SmtpSink, api: Api, worker: Worker
) -> None:
    campaign = await create_campaign(api, THREADED)
    instance_id = await enrol(api, campaign)
    intro, bump, last = (message_id_of(campaign, instance_id, s) for s in ("intro", "bump", "last"))

    reviewed: dict[str, str] = {}
    for step_id in ("intro", "bump", "last"):
        etag, pending = await gate_of(api, campaign, instance_id, step_id)
        reviewed[step_id] = pending["subject"]
        # The reviewer approves exactly this gate (If-Match), having read this subject.
        response = await api.http.post(
            campaign.approve_url(instance_id), headers={**campaign.auth, "If-Match": etag}
        )
        assert response.status_code == 200, response.text
    await wait_for_status(api, campaign, instance_id, workflowStatus="completed")

    assert reviewed == {"intro": "Hello Ada", "bump": "Re: Hello Ada", "last": "Re: Hello Ada"}
    first, second, third = await sent(smtp, 3)
    assert [m["Message-ID"] for m in (first, second, third)] == [intro, bump, last]
    assert [m["Subject"] for m in (first, second, third)] == [
        reviewed["intro"],
        reviewed["bump"],
        reviewed["last"],
    ]
    # The first message starts the thread: no threading headers at all.
    assert first["In-Reply-To"] is None and first["References"] is None
    # Each reply names its parent, and the whole chain from the thread's first message.
    assert second["In-Reply-To"] == intro
    assert references_of(second) == [intro]
    assert third["In-Reply-To"] == bump
    assert references_of(third) == [intro, bump]
    for envelope in smtp.received_envelopes()[1:]:
        check_structure(envelope.content, REPLY_HEADERS)


async def test_re_is_not_doubled_and_a_later_unthreaded_step_starts_a_new_thread(
    smtp: SmtpSink, api: Api, worker: Worker
) -> None:
    definition = ungated(
        {
            "name": "Two threads",
            "steps": [
                {"id": "a", "subject": "RE: {{ lead.company }} pricing", "body": "One"},
                {"id": "b", "thread": True, "body": "Two"},
                {"id": "c", "subject": "Another idea", "body": "Three"},
                {"id": "d", "thread": True, "body": "Four"},
            ],
        }
    )
    campaign = await create_campaign(api, definition)
    instance_id = await enrol(api, campaign)
    a, b, c, d = (message_id_of(campaign, instance_id, s) for s in "abcd")

    await wait_for_status(api, campaign, instance_id, workflowStatus="completed")

    messages = await sent(smtp, 4)
    assert [m["Subject"] for m in messages] == [
        "RE: Analytical Engines pricing",
        "RE: Analytical Engines pricing",  # already a reply: no "Re: RE: "
        "Another idea",
        "Re: Another idea",
    ]
    assert [m["In-Reply-To"] for m in messages] == [None, a, None, c]
    assert [references_of(m) for m in messages] == [[], [a], [], [c]]
    assert b not in references_of(messages[3]), "step c started a thread of its own"
    assert [m["Message-ID"] for m in messages] == [a, b, c, d]


@pytest.mark.parametrize("first_name", ENCODED_WORD_NAMES.values(), ids=ENCODED_WORD_NAMES.keys())
async def test_a_hostile_name_in_the_replied_subject_stays_text(
    first_name: str, smtp: SmtpSink, api: Api, worker: Worker
) -> None:
    campaign = await create_campaign(api, THREADED)
    instance_id = await enrol(api, campaign, lead(firstName=first_name))
    for step_id in ("intro", "bump"):
        _, pending = await gate_of(api, campaign, instance_id, step_id)
        assert (await approve(api, campaign, instance_id)).status_code == 200

    _, second = await sent(smtp, 2)

    assert pending["subject"] == second["Subject"] == f"Re: Hello {first_name}"
    assert second["Reply-To"] is None and second["Bcc"] is None
    check_structure(smtp.received_envelopes()[1].content, REPLY_HEADERS)


# --- the definition -----------------------------------------------------------------------------


async def test_the_first_step_cannot_be_threaded(api: Api, campaign: Campaign) -> None:
    first = {"id": "intro", "thread": True, "body": "Hi"}
    response = await put(api, campaign, {"name": "Bad", "steps": [first]})

    assert response.status_code == 400, response.text
    body = response.json()
    assert body["success"] is False and body["data"] is None
    assert body["error"]["code"] == "VALIDATION_ERROR"
    assert body["error"]["details"] == "steps.0.thread"
    assert "first step cannot be threaded" in body["error"]["message"]
    read = await api.http.get(campaign.url, headers=campaign.auth)
    assert read.json()["data"]["name"] == "Two steps", "the stored version is kept"


@pytest.mark.parametrize(
    ("second", "why"),
    [
        ({"id": "b", "thread": True, "subject": "Mine", "body": "x"}, "leave subject out"),
        ({"id": "b", "body": "x"}, "required"),
        ({"id": "b", "thread": "yes", "body": "x", "subject": "s"}, "valid boolean"),
    ],
    ids=["threaded-with-subject", "unthreaded-without-subject", "thread-not-a-boolean"],
)
async def test_subject_and_thread_go_together(
    second: dict[str, Any], why: str, api: Api, campaign: Campaign
) -> None:
    first = {"id": "a", "subject": "Hi", "body": "x"}
    response = await put(api, campaign, {"name": "Bad", "steps": [first, second]})

    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "VALIDATION_ERROR"
    assert error["details"].startswith("steps.1."), error
    assert why in error["message"]


async def test_a_subject_replied_to_leaves_room_for_re(api: Api, campaign: Campaign) -> None:
    longest = "x" * 998
    alone = {"name": "Long", "steps": [{"id": "a", "subject": longest, "body": "x"}]}
    threaded = {**alone, "steps": [*alone["steps"], {"id": "b", "thread": True, "body": "y"}]}

    assert (await put(api, campaign, alone)).status_code == 200
    response = await put(api, campaign, threaded)

    assert response.status_code == 400, response.text
    assert response.json()["error"]["details"] == "steps.0.subject"
    shorter = {
        **threaded,
        "steps": [{"id": "a", "subject": "x" * 994, "body": "x"}, *threaded["steps"][1:]],
    }
    assert (await put(api, campaign, shorter)).status_code == 200


async def test_a_threaded_campaign_reads_back_and_puts_again_unchanged(
    api: Api, campaign: Campaign
) -> None:
    assert (await put(api, campaign, THREADED)).status_code == 200
    read = (await api.http.get(campaign.url, headers=campaign.auth)).json()["data"]

    steps = read["steps"]
    assert [(s["thread"], s["subject"]) for s in steps] == [
        (False, "Hello {{ lead.firstName }}"),
        (True, None),
        (True, None),
    ]
    again = {"name": read["name"], "approvalTimeout": read["approvalTimeout"], "steps": steps}
    assert (await put(api, campaign, again)).status_code == 200


async def test_an_unthreaded_follow_up_carries_no_threading_headers(
    smtp: SmtpSink, api: Api, worker: Worker
) -> None:
    definition = ungated(
        {
            "name": "Plain",
            "steps": [
                {"id": "a", "subject": "Hello", "body": "One"},
                {"id": "b", "subject": "Hello again", "body": "Two"},
            ],
        }
    )
    campaign = await create_campaign(api, definition)
    instance_id = await enrol(api, campaign)
    await wait_for_status(api, campaign, instance_id, workflowStatus="completed")

    messages = await sent(smtp, 2)

    assert [m["Subject"] for m in messages] == ["Hello", "Hello again"]
    for envelope in smtp.received_envelopes():
        check_structure(envelope.content, DELIVERED_HEADERS)
        assert b"In-Reply-To" not in envelope.content and b"References" not in envelope.content
    assert (await instance_data(api, campaign, instance_id))["leadStatus"]["latestStep"] == "b"


# --- the parts ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("subject", "reply"),
    [
        ("Hello", "Re: Hello"),
        ("Re: Hello", "Re: Hello"),
        ("RE: Hello", "RE: Hello"),
        ("re : Hello", "re : Hello"),
        ("Re:Hello", "Re:Hello"),
        ("Regarding: Hello", "Re: Regarding: Hello"),
        ("Fwd: Hello", "Re: Fwd: Hello"),
        ("  Hello\r\n  world ", "Re: Hello world"),
        ("", "Re:"),
    ],
)
def test_reply_subject_adds_one_re(subject: str, reply: str) -> None:
    assert reply_subject(subject) == reply
    assert reply_subject(reply) == reply, "idempotent: never Re: Re:"


def test_references_fold_and_read_back_in_order() -> None:
    ids = [
        f"<campaign.{'f' * 24}.{'e' * 24}.{'d' * 24}.step-{n:02}@campaign-engine>"
        for n in range(49)
    ]

    raw = compose(
        message_id="<campaign.1.2.3.last@campaign-engine>",
        sender=SENDER,
        recipient=LEAD,
        subject="Re: Hello",
        body="Hi",
        references=ids,
    ).as_bytes()

    message = check_structure(
        raw,
        ["In-Reply-To", "References", *[h for h in DELIVERED_HEADERS if not h.startswith("List")]],
    )
    assert references_of(message) == ids
    assert message["In-Reply-To"] == ids[-1]


@pytest.mark.parametrize(
    "bad",
    [
        "<a@b>\r\nBcc: victim@evil.test",
        "<a@b>\nX: y",
        "<a@b> <c@d>",
        "a@b",
        "<a@b",
        "<a b@c>",
        "<a@b>x",
        "<@b>",
        "<a@>",
        "<a..b@c>",
        "<a@b>\x00",
        "<zoë@example.com>",
        "<" + "a" * 900 + "@b>",
    ],
)
def test_anything_but_a_msg_id_is_refused(bad: str) -> None:
    with pytest.raises(CompositionError, match="RFC 5322"):
        message_ids_header("References", ["<ok@campaign-engine>", bad])
    with pytest.raises(CompositionError):
        compose(
            message_id="<m@campaign-engine>",
            sender=SENDER,
            recipient=LEAD,
            subject="Re: x",
            body="x",
            references=[bad],
        )


def test_threading_headers_are_dkim_signed() -> None:
    key = dkim_keys.generate(1024)
    signer = DkimSigner(selector="s1", domain="acme.test", private_key=key.private_pem)
    parent = "<campaign.1.2.3.intro@campaign-engine>"

    data = compose(
        message_id="<campaign.1.2.3.bump@campaign-engine>",
        sender=SENDER,
        recipient=LEAD,
        subject="Re: Hello",
        body="Hi",
        references=[parent],
        dkim_signer=signer,
    ).as_bytes()

    def dns(name: bytes, timeout: int = 5) -> bytes:
        return key.public_txt.encode()

    assert dkim.verify(data, dnsfunc=dns)
    rethreaded = data.replace(b"In-Reply-To: " + parent.encode(), b"In-Reply-To: <x@evil.test>")
    assert rethreaded != data
    assert not dkim.verify(rethreaded, dnsfunc=dns)


def test_the_snapshot_gives_each_threaded_step_its_thread() -> None:
    body = CampaignBody.model_validate(
        {
            "name": "Snapshot",
            "steps": [
                {"id": "a", "subject": "A {{ lead.firstName }}", "body": "1"},
                {"id": "b", "thread": True, "body": "2"},
                {"id": "c", "subject": "C", "body": "3"},
                {"id": "d", "thread": True, "body": "4"},
                {"id": "e", "thread": True, "body": "5"},
            ],
        }
    )

    steps = snapshot_of(body).steps

    assert [(s.id, s.subject, s.thread_step_ids) for s in steps] == [
        ("a", "A {{ lead.firstName }}", []),
        ("b", "A {{ lead.firstName }}", ["a"]),
        ("c", "C", []),
        ("d", "C", ["c"]),
        ("e", "C", ["c", "d"]),
    ]


def test_the_payload_budget_counts_the_references_a_draft_carries() -> None:
    ids = [f"{n:02}" + "s" * 62 for n in range(50)]  # the longest step ids
    body = CampaignBody.model_validate(
        {
            "name": "Budget",
            "steps": [
                {"id": ids[0], "subject": "Hi", "body": "x"},
                *({"id": step_id, "thread": True, "body": "x"} for step_id in ids[1:]),
            ],
        }
    )
    workflow_id = workflow_id_for("f" * 24, "f" * 24, "f" * 24)
    last = DraftedContent(ids[-1], "Re: Hi", "x")
    replying = DraftedContent(
        ids[-1], "Re: Hi", "x", references=[message_id_for(workflow_id, i) for i in ids[:-1]]
    )

    counted = _carried_reference_bytes(snapshot_of(body))

    assert payload_bytes(replying) - payload_bytes(last) <= counted
    assert counted > 49 * 150
    assert _carried_reference_bytes(snapshot_of(CampaignBody.model_validate(THREADED))) < 400
