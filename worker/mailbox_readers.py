"""Every worker starts the IMAP reader of every configured mailbox, idempotently.

For each mailbox of `CAMPAIGN_ENGINE_MAILBOXES` with an `imap` block, `start_mailbox_readers`
starts `MailboxReaderWorkflow` with id `inbound-mailbox:<address>` on the worker's task queue,
with `WorkflowIDConflictPolicy.USE_EXISTING`: a reader already running (another worker's, or this
one's before a restart) is left as it is, with its cursor. A reader that ended because its mailbox
had left the settings returned its cursor; a mailbox configured again starts from that cursor, so
nothing is read twice and nothing between is missed. (A reader terminated by hand has no result:
its successor reads the mailbox's last `backfill_days` again, and the pipeline recognises what it
applied before.)

`keep_mailbox_readers_started` runs it in the background of a starting worker until it succeeds,
so a Temporal hiccup at start-up never leaves a mailbox unread until the next restart.
"""

from __future__ import annotations

import asyncio
import logging

from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.service import RPCError, RPCStatusCode

from campaign_engine.settings import Settings
from workflows.mailbox_reader import MailboxReaderWorkflow
from workflows.mailbox_types import (
    MailboxCursor,
    MailboxReaderInput,
    MailboxReaderResult,
    mailbox_reader_id,
)

logger = logging.getLogger("campaign_engine.worker")

RETRY_SECONDS = (1.0, 2.0, 5.0, 10.0, 30.0)
"""Waits between start-up attempts when Temporal does not answer; then every 30 s."""


def read_mailboxes(settings: Settings) -> list[str]:
    """The lowercase addresses of the mailboxes with an `imap` block, sorted."""
    return sorted(address for address, limits in settings.mailboxes.items() if limits.imap)


async def _cursor_of_ended_reader(client: Client, workflow_id: str) -> MailboxCursor | None:
    """The cursor a reader that ended normally returned (its mailbox had left the settings);
    None when there is none running or ended so."""
    handle = client.get_workflow_handle_for(MailboxReaderWorkflow.run, workflow_id)
    try:
        described = await handle.describe()
    except RPCError as error:
        if error.status == RPCStatusCode.NOT_FOUND:
            return None
        raise
    if described.status != WorkflowExecutionStatus.COMPLETED:
        return None
    result: MailboxReaderResult = await handle.result()
    return result.cursor


async def start_mailbox_readers(client: Client, settings: Settings) -> list[str]:
    """Starts (or finds running) the reader of each mailbox of `read_mailboxes`; returns their
    workflow ids. Raises `RPCError` when Temporal fails."""
    started: list[str] = []
    for mailbox in read_mailboxes(settings):
        workflow_id = mailbox_reader_id(mailbox)
        cursor = await _cursor_of_ended_reader(client, workflow_id)
        await client.start_workflow(
            MailboxReaderWorkflow.run,
            MailboxReaderInput(mailbox=mailbox, cursor=cursor),
            id=workflow_id,
            task_queue=settings.task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
            static_summary=f"IMAP reader of {mailbox}",
        )
        started.append(workflow_id)
    return started


async def keep_mailbox_readers_started(client: Client, settings: Settings) -> list[str]:
    """`start_mailbox_readers`, tried again (`RETRY_SECONDS`) until it succeeds; logs each
    failure. Returns the workflow ids; cancel it to give up."""
    if not read_mailboxes(settings):
        return []
    attempt = 0
    while True:
        try:
            started = await start_mailbox_readers(client, settings)
        except RPCError as error:
            wait = RETRY_SECONDS[min(attempt, len(RETRY_SECONDS) - 1)]
            logger.warning("could not start the IMAP readers (%s); again in %.0f s", error, wait)
            attempt += 1
            await asyncio.sleep(wait)
            continue
        logger.info("IMAP readers running: %s", ", ".join(started))
        return started
