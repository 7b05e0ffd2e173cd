"""Activities on their own: drafting from templates, at-most-once delivery to the outbox."""

from __future__ import annotations

from pathlib import Path

import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.campaign import CampaignActivities
from activities.mailers import OutboxMailer
from activities.outbox import FileOutbox
from campaign_engine.store import Store
from workflows.types import (
    CampaignStep,
    DeliveryOutcome,
    DeliveryRequest,
    DraftedContent,
    DraftRequest,
    Lead,
)

LEAD = Lead(id="a" * 24, email="ada@example.com", first_name="Ada", company="Engines")


def activities(tmp_path: Path, store: Store) -> CampaignActivities:
    return CampaignActivities(
        store=store, mailer=OutboxMailer(FileOutbox(tmp_path / "outbox")), sender="s@example.com"
    )


async def test_draft_content_renders_lead_fields(tmp_path: Path, store: Store) -> None:
    step = CampaignStep(id="intro", subject="Hi {{ lead.firstName }}", body="{{ lead.company }}")

    drafted = await ActivityEnvironment().run(
        activities(tmp_path, store).draft_content, DraftRequest(step, LEAD)
    )

    assert drafted == DraftedContent(step_id="intro", subject="Hi Ada", body="Engines")


async def test_draft_content_keeps_line_breaks_out_of_subject(tmp_path: Path, store: Store) -> None:
    lead = Lead(id="a" * 24, email="x@example.com", first_name="Ada\r\nBcc: victim@example.com")
    step = CampaignStep(id="s", subject="Hi {{ lead.firstName }}", body="b")

    drafted = await ActivityEnvironment().run(
        activities(tmp_path, store).draft_content, DraftRequest(step, lead)
    )

    assert drafted.subject == "Hi Ada Bcc: victim@example.com"


async def test_draft_content_template_error_is_non_retryable(tmp_path: Path, store: Store) -> None:
    step = CampaignStep(id="s", subject="{{ 1 / 0 }}", body="b")

    with pytest.raises(ApplicationError) as raised:
        await ActivityEnvironment().run(
            activities(tmp_path, store).draft_content, DraftRequest(step, LEAD)
        )

    assert raised.value.type == "TemplateRenderError"
    assert raised.value.non_retryable


async def test_deliver_message_twice_writes_once(tmp_path: Path, store: Store) -> None:
    request = DeliveryRequest(
        workflow_id=f"campaign:{'1' * 24}:{'2' * 24}:{'3' * 24}",
        lead=LEAD,
        content=DraftedContent(step_id="intro", subject="Hi", body="Hello"),
    )
    env = ActivityEnvironment()

    first = await env.run(activities(tmp_path, store).deliver_message, request)
    second = await env.run(activities(tmp_path, store).deliver_message, request)

    assert first.message_id == second.message_id
    assert (first.outcome, second.outcome) == (DeliveryOutcome.SENT, DeliveryOutcome.ALREADY_SENT)
    assert len(list((tmp_path / "outbox").iterdir())) == 1
