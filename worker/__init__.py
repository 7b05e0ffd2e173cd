"""The worker process: runs campaign workflows and their activities."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import timedelta
from typing import Any

from temporalio.client import Client
from temporalio.worker import UnsandboxedWorkflowRunner, Worker, WorkflowRunner
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner

from activities.campaign import HEARTBEAT_SECONDS, CampaignActivities
from activities.inbound import MailboxActivities
from activities.mailers import Mailer, OutboxMailer, SmtpMailer
from activities.messages import DkimSigner
from activities.outbox import FileOutbox
from activities.render_queue import RenderQueueLimits
from campaign_engine.settings import Settings
from campaign_engine.store import Store
from campaign_engine.unsubscribe import load_unsubscribe_key
from campaign_engine.webhook_secrets import WebhookSecrets
from inbound.pipeline import InboundPipeline, PipelineSettings
from worker import versioning
from worker.bytecode import write_bytecode
from worker.mailbox_readers import keep_mailbox_readers_started
from workflows.campaign import CampaignWorkflow
from workflows.mailbox_reader import MailboxReaderWorkflow

logger = logging.getLogger("campaign_engine.worker")


def build_mailer(settings: Settings) -> Mailer:
    """The mailer `settings.delivery` names: `SmtpMailer` with the SMTP settings for `smtp`, else
    `OutboxMailer` writing to the resolved outbox directory."""
    if settings.delivery == "smtp":
        return SmtpMailer(
            host=settings.smtp_host,
            port=settings.smtp_port,
            security=settings.smtp_security,
            username=settings.smtp_username,
            password=settings.smtp_password.get_secret_value() if settings.smtp_password else None,
            timeout_seconds=settings.smtp_timeout_seconds,
        )
    return OutboxMailer(FileOutbox(settings.resolved_outbox_dir))


def build_dkim_signer(settings: Settings) -> DkimSigner | None:
    """The DKIM signer of the settings (selector, domain, private key path), or None — then
    with one warning, since providers hold unsigned bulk mail suspect. Raises `OSError` when the
    key file cannot be read (a start-up failure, not a silent unsigned run)."""
    if not (settings.dkim_selector and settings.dkim_domain and settings.dkim_private_key_path):
        logger.warning(
            "DKIM is not configured (CAMPAIGN_ENGINE_DKIM_SELECTOR, _DKIM_DOMAIN, "
            "_DKIM_PRIVATE_KEY_PATH): messages go out unsigned; `campaign-engine dkim init` "
            "makes a key"
        )
        return None
    return DkimSigner(
        selector=settings.dkim_selector,
        domain=settings.dkim_domain,
        private_key=settings.dkim_private_key_path.read_bytes(),
    )


class CampaignWorker(Worker):
    """A `Worker` that, entered with `async with`, starts polling and then settles its build's
    place in the Worker Deployment before the body runs (`worker.versioning.take_up`, per
    `settings.worker_become_current`): when the body starts, the worker either gets the task
    queue's tasks or has said (a warning) why not. `run()` polls without that step.

    `versioning_outcome` is what `take_up` answered (None before `async with`). Entering raises
    `worker.versioning.DeploymentError` only when the settings say `always` and the build could
    not be made current; the worker is then shut down again. Then, in the background, it starts
    the IMAP reader of each mailbox with an `imap` block (`worker.mailbox_readers`).
    """

    def __init__(self, client: Client, settings: Settings, **options: Any) -> None:
        """`options` are `Worker`'s keyword arguments."""
        super().__init__(client, **options)
        self._settings = settings
        self.versioning_outcome: versioning.Outcome | None = None
        self.mailbox_readers: asyncio.Task[list[str]] | None = None
        """Starting the IMAP readers (`keep_mailbox_readers_started`); its result is their ids."""

    async def __aenter__(self) -> Worker:
        """Starts polling, then `take_up`; returns self."""
        await super().__aenter__()
        try:
            self.versioning_outcome = await versioning.take_up(self.client, self._settings)
        except BaseException as error:
            await super().__aexit__(type(error), error, error.__traceback__)
            raise
        self.mailbox_readers = asyncio.create_task(
            keep_mailbox_readers_started(self.client, self._settings)
        )
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        """Stops starting the IMAP readers if it still tries, then shuts the worker down."""
        if self.mailbox_readers is not None and not self.mailbox_readers.done():
            self.mailbox_readers.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.mailbox_readers
        await super().__aexit__(*exc_info)


def workflow_runner(settings: Settings) -> WorkflowRunner:
    """The SDK's sandboxed runner, or with `settings.worker_workflow_sandbox` off the unsandboxed
    one: no fresh import of the workflow module per new or replayed instance and no module copy
    per cached one (docs/performance.md, "The sandbox: off in production"). What the sandbox
    checked at run time (no clock, randomness, I/O or threads outside `workflow.*`) is then
    checked statically on `workflows/` (tests/test_workflow_determinism_rules.py), and the
    replay suite and the test suite keep running every workflow sandboxed."""
    if settings.worker_workflow_sandbox:
        return SandboxedWorkflowRunner()
    return UnsandboxedWorkflowRunner()


def build_worker(client: Client, settings: Settings, store: Store) -> CampaignWorker:
    """The worker production runs; tests build theirs here too, so they register exactly this.

    Writes the workflow modules' bytecode cache first (`worker.bytecode.write_bytecode`): the
    sandbox, when on (`workflow_runner`), re-imports them for every new or replayed instance.
    The worker is a version of the Worker Deployment `settings.worker_deployment_name` with build id
    `worker.versioning.build_id(settings)` (unversioned with `worker_versioning` off); its
    workflows auto-upgrade to whichever version becomes current.
    """
    write_bytecode()
    unsubscribe_key = load_unsubscribe_key(settings)
    pipeline_settings = PipelineSettings.from_settings(settings)
    # One pipeline: the delivery's SMTP answers and the IMAP reader apply through it.
    pipeline = InboundPipeline(store, client, unsubscribe_key, pipeline_settings)
    activities = CampaignActivities(
        store=store,
        mailer=build_mailer(settings),
        sender=settings.sender,
        unsubscribe_key=unsubscribe_key,
        unsubscribe_base_url=settings.resolved_unsubscribe_base_url,
        unsubscribe_mailbox=settings.unsubscribe_mailbox,
        dkim_signer=build_dkim_signer(settings),
        webhook_timeout_seconds=settings.webhook_timeout_seconds,
        webhook_allow_private_addresses=settings.webhook_allow_private_addresses,
        mailboxes=settings.mailbox_policies(),
        sending_groups=settings.sending_groups(),
        webhook_secrets=WebhookSecrets.for_settings(settings),
        verp=pipeline_settings.verp,
        inbound=pipeline,
        render_queue_limits=RenderQueueLimits(
            max_waiting=settings.render_queue_limit,
            max_waiting_per_group=settings.render_queue_limit_per_group,
        ),
    )
    inbound = MailboxActivities(
        pipeline,
        {address: limits.imap for address, limits in settings.mailboxes.items() if limits.imap},
        max_message_bytes=settings.inbound_max_message_bytes,
    )
    return CampaignWorker(
        client,
        settings,
        task_queue=settings.task_queue,
        workflows=[CampaignWorkflow, MailboxReaderWorkflow],
        activities=[
            activities.draft_content,
            activities.deliver_message,
            activities.notify_pending_approval,
            activities.business_days_later,
            activities.release_send_slot,
            inbound.read_mailbox,
        ],
        # On shutdown (SIGTERM) running activities get this long to finish; workflows need no
        # grace: another worker replays them from history.
        graceful_shutdown_timeout=timedelta(seconds=settings.worker_shutdown_timeout_seconds),
        max_cached_workflows=settings.resolved_max_cached_workflows,
        workflow_runner=workflow_runner(settings),
        # Heartbeats are what bring a stop's cancellation to a running delivery: sent every
        # HEARTBEAT_SECONDS instead of the SDK's default of 80 % of the heartbeat timeout (8 s).
        max_heartbeat_throttle_interval=timedelta(seconds=HEARTBEAT_SECONDS),
        deployment_config=versioning.deployment_config(settings),
    )
