"""The worker process: runs campaign workflows and their activities."""

from __future__ import annotations

from temporalio.client import Client
from temporalio.worker import Worker

from activities.campaign import CampaignActivities
from activities.outbox import FileOutbox
from campaign_engine.settings import Settings
from workflows.campaign import CampaignWorkflow


def build_worker(client: Client, settings: Settings) -> Worker:
    """The worker production runs; tests build theirs here too, so they register exactly this."""
    activities = CampaignActivities(FileOutbox(settings.resolved_outbox_dir), settings.sender)
    return Worker(
        client,
        task_queue=settings.task_queue,
        workflows=[CampaignWorkflow],
        activities=[activities.draft_content, activities.deliver_message],
    )
