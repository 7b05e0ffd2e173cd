"""Mailbox slots left behind by executions that are no longer running, found and given back.

A stopped or cancelled instance gives its slot back itself (the workflow's release activity, or
the cancelled delivery). A terminated one cannot: no workflow code runs after "Terminate" (the
Web UI's button, `temporal workflow terminate`, a reset replacing the run), nor after an
execution timeout, so its reservation would keep counting against the mailbox's cap and spacing
— the next lead's message pushed back by a slot nobody will use. So a reservation that is about
to be deferred looks at what defers it: the mailbox's reservations from now (its local day's
start, for the cap; less the spacing) up to the slot found (plus the spacing) whose message was
never handed over (`MailboxReservations.unsent_between`). Each one's holder — the workflow id in
its Message-ID — is described in Temporal (`DescribeWorkflowExecution`: the latest run, strongly
consistent, unlike visibility); one whose execution is not running (closed however, or gone
with its namespace's retention) holds nothing any more, and its row is deleted if the ledger
still says nothing was handed over (`release_unsent`). The reservation is then made again.

Only deferred reservations pay for this (a slot free at once looks at nothing), and only for
the holders in the way, at most `MAX_HOLDERS` of them, described `CONCURRENCY` at a time. A
holder that cannot be described (Temporal unreachable) is kept: a slot kept wrongly only defers
a message, a slot taken wrongly could exceed a cap.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timedelta

from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.service import RPCError, RPCStatusCode

from campaign_engine.ids import workflow_id_of_message_id
from campaign_engine.mailboxes import MailboxPolicy, MailboxReservations, Reservation

logger = logging.getLogger("campaign_engine.activities")

MAX_HOLDERS = 200
"""Most holders described for one reservation (earliest slots first)."""
CONCURRENCY = 8
"""Describe calls in flight at once for one reservation."""
DESCRIBE_TIMEOUT = timedelta(seconds=5)


async def holder_closed(client: Client, workflow_id: str) -> bool:
    """True when the workflow's latest run is not running (or the workflow is gone); False when
    it runs or Temporal cannot say (then the slot is kept)."""
    try:
        description = await client.get_workflow_handle(workflow_id).describe(
            rpc_timeout=DESCRIBE_TIMEOUT
        )
    except RPCError as error:
        if error.status == RPCStatusCode.NOT_FOUND:
            return True
        logger.warning("slot holder %s not described (%s): kept", workflow_id, error)
        return False
    except (TimeoutError, RuntimeError) as error:
        logger.warning("slot holder %s not described (%s): kept", workflow_id, error)
        return False
    return description.status != WorkflowExecutionStatus.RUNNING


async def reclaim_in_the_way(
    client: Client,
    reservations: MailboxReservations,
    policy: MailboxPolicy,
    reservation: Reservation,
    now: datetime,
) -> list[str]:
    """Gives back the slots of closed executions among those that put `reservation` (on
    `policy`'s mailbox, found at `now`) later than now; returns their Message-IDs."""
    zone = policy.time_zone
    day_start = datetime.combine(now.astimezone(zone).date(), datetime.min.time(), tzinfo=zone)
    low = min(now - policy.minimum_spacing, day_start)
    high = reservation.slot_at + policy.minimum_spacing + timedelta(seconds=1)
    candidates = [
        message_id
        for message_id in await reservations.unsent_between(
            policy.address, low, high, limit=MAX_HOLDERS + 1
        )
        if message_id != reservation.message_id
    ][:MAX_HOLDERS]
    gate = asyncio.Semaphore(CONCURRENCY)

    async def closed(message_id: str) -> bool:
        workflow_id = workflow_id_of_message_id(message_id)
        if workflow_id is None:
            return False  # not one of ours: nothing to ask
        async with gate:
            return await holder_closed(client, workflow_id)

    verdicts = await asyncio.gather(*(closed(message_id) for message_id in candidates))
    released = []
    for message_id, is_closed in zip(candidates, verdicts, strict=True):
        if is_closed and await reservations.release_unsent(message_id):
            logger.info(
                "mailbox slot of %s given back: its execution is no longer running", message_id
            )
            released.append(message_id)
    return released
