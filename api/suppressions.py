"""Recording an unsubscribe: the suppression row first, then a stop to every open instance.

The row is what holds: enrolment refuses a suppressed lead (`LeadSuppressed`, 409) and the
delivery activity reads it right before every hand-over, so a signal that misses an instance
(visibility lag, Temporal down) still lets nothing more be sent. The signals only end the
instances sooner and put who and when into their audit record.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from api.errors import ApiError
from api.instances import WorkflowInstances
from campaign_engine.store import Store, Suppression, utcnow

logger = logging.getLogger("campaign_engine.api")


@dataclass(frozen=True)
class Suppressed:
    """The suppression that holds (the first one), whether this call made it, and how many
    open instances this call signalled."""

    row: Suppression
    created: bool
    signalled: int


async def suppress(
    store: Store,
    instances: WorkflowInstances,
    *,
    account_group_id: str,
    lead_id: str,
    email_hash: str | None,
    source: str,
    decided_by: str,
    note: str,
) -> Suppressed:
    """Records the suppression (idempotent: a second one keeps the first row), then signals
    `lead_unsubscribed` to the lead's open instances in the account group.

    Store failures propagate (the caller answers 502 `STORE_UNAVAILABLE`: nothing recorded). A
    Temporal failure after the row is written is logged, not raised: the unsubscribe holds.
    """
    row, created = await store.add_suppression(
        Suppression(
            account_group_id=account_group_id,
            lead_id=lead_id,
            email_hash=email_hash,
            source=source,
            decided_by=decided_by[:128],
            note=note[:1000],
            created_at=utcnow(),
        )
    )
    when = row.created_at.isoformat(timespec="seconds")
    try:
        signalled = await instances.unsubscribe_lead(
            account_group_id,
            lead_id,
            decided_by=row.decided_by,
            note=f"{row.source} unsubscribe at {when}" + (f": {row.note}" if row.note else ""),
        )
    except ApiError as error:
        logger.warning(
            "suppression of lead %s recorded; its open instances could not be signalled (%s): "
            "their deliveries will still refuse to send",
            lead_id,
            error.message,
        )
        signalled = 0
    return Suppressed(row, created, signalled)
