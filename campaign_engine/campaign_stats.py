"""A campaign's numbers from our own store: enrolled, sent, and what came back, per step.

Read from the enrolment table, the delivery ledger and the inbound message log (never from
Temporal's visibility store, which trails and costs a scan). Each lead counts once per outcome:
two replies of one lead are one reply. A hard bounce counts the SMTP refusals at send time and
the DSNs that came back; unsubscribes count the one-click links and `mailto:` messages.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import Table, distinct, func, literal, select, union

from campaign_engine.deliveries import Delivery, DeliveryState
from campaign_engine.enrolments import Enrolments
from campaign_engine.inbound_messages import InboundMessageRow
from campaign_engine.store import Store

_DELIVERIES: Table = Delivery.__table__  # type: ignore[assignment]
_INBOUND: Table = InboundMessageRow.__table__  # type: ignore[assignment]

OUTCOMES = ("reply", "auto_reply", "hard_bounce", "soft_bounce", "complaint", "unsubscribe")
"""The inbound classifications counted, in the order the stats list them."""


@dataclass(frozen=True)
class Counts:
    """Leads per outcome, for one step or the whole campaign. `sent` counts leads the step
    (or any step) was delivered to; `refused` leads whose address the receiving server refused
    at send time (never delivered, counted in `hard_bounce` too); the rest are leads with at
    least one such inbound event."""

    sent: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)
    refused: int = 0

    def rate(self, outcome: str) -> float | None:
        """`outcomes[outcome] / sent`, rounded to 4 places; None before anything was sent. A
        hard bounce's rate is over the leads a message was attempted to (`sent + refused`), as
        mailbox providers count it: a refusal at send time is a bounce of a message not sent,
        so the rate stays at most 1."""
        attempted = self.sent + self.refused if outcome == "hard_bounce" else self.sent
        if attempted == 0:
            return None
        return round(self.outcomes.get(outcome, 0) / attempted, 4)


@dataclass(frozen=True)
class CampaignStats:
    """`enrolled` leads, the campaign's `total` counts and each step's, by step id."""

    enrolled: int
    total: Counts
    steps: dict[str, Counts]


async def campaign_stats(store: Store, account_group_id: str, campaign_id: str) -> CampaignStats:
    """The campaign's stats: six indexed aggregate queries (SQLAlchemy errors propagate)."""
    sent_states = [DeliveryState.SENT.value, DeliveryState.IN_DOUBT.value]
    in_campaign = (
        _DELIVERIES.c.account_group_id == account_group_id,
        _DELIVERIES.c.campaign_id == campaign_id,
        _DELIVERIES.c.state.in_(sent_states),
    )
    sent_by_step = (
        select(_DELIVERIES.c.step_id, func.count())
        .where(*in_campaign)
        .group_by(_DELIVERIES.c.step_id)
    )
    sent_total = select(func.count(distinct(_DELIVERIES.c.workflow_id))).where(*in_campaign)
    inbound_where = (
        _INBOUND.c.account_group_id == account_group_id,
        _INBOUND.c.campaign_id == campaign_id,
        _INBOUND.c.classification.in_(OUTCOMES),
    )
    inbound_by_step = (
        select(
            _INBOUND.c.classification,
            _INBOUND.c.step_id,
            func.count(distinct(_INBOUND.c.lead_id)),
        )
        .where(*inbound_where)
        .group_by(_INBOUND.c.classification, _INBOUND.c.step_id)
    )
    inbound_total = (
        select(_INBOUND.c.classification, func.count(distinct(_INBOUND.c.lead_id)))
        .where(*inbound_where)
        .group_by(_INBOUND.c.classification)
    )
    # Refused at send time: the pipeline's `smtp` rows (`inbound.smtp_replies`). The ledger
    # dropped their claims, so they are not in `sent`; a refusal stops its instance, so a lead
    # is refused once at most, and never at a step that was delivered to it.
    refused_where = (
        _INBOUND.c.account_group_id == account_group_id,
        _INBOUND.c.campaign_id == campaign_id,
        _INBOUND.c.source == "smtp",
        _INBOUND.c.classification == "hard_bounce",
    )
    refused_by_step = (
        select(_INBOUND.c.step_id, func.count(distinct(_INBOUND.c.lead_id)))
        .where(*refused_where)
        .group_by(_INBOUND.c.step_id)
    )
    # Leads attempted at all: delivered to, or refused, each once (the ledger's workflow ids
    # and the refused rows' instances, in the ledger's form: `ids.workflow_id_for`).
    refused_workflow_id = (
        literal("campaign:")
        + _INBOUND.c.account_group_id
        + literal(":")
        + _INBOUND.c.campaign_id
        + literal(":")
        + _INBOUND.c.workflow_instance_id
    )
    attempted = union(
        select(_DELIVERIES.c.workflow_id.label("workflow_id")).where(*in_campaign),
        select(refused_workflow_id.label("workflow_id")).where(*refused_where),
    ).subquery()
    attempted_total = select(func.count()).select_from(attempted)
    async with store.transaction() as connection:
        step_sent = {step: int(n) for step, n in (await connection.execute(sent_by_step)).all()}
        total_sent = int(await connection.scalar(sent_total) or 0)
        step_refused = {
            step: int(n) for step, n in (await connection.execute(refused_by_step)).all() if step
        }
        total_refused = int(await connection.scalar(attempted_total) or 0) - total_sent
        by_step = (await connection.execute(inbound_by_step)).all()
        totals = {kind: int(n) for kind, n in (await connection.execute(inbound_total)).all()}
    outcomes: dict[str, dict[str, int]] = {}
    for kind, step_id, count in by_step:
        if step_id:
            outcomes.setdefault(step_id, {})[kind] = int(count)
    steps = {
        step_id: Counts(
            step_sent.get(step_id, 0), outcomes.get(step_id, {}), step_refused.get(step_id, 0)
        )
        for step_id in {*step_sent, *outcomes, *step_refused}
    }
    enrolled = await Enrolments(store).count(account_group_id, campaign_id)
    return CampaignStats(enrolled, Counts(total_sent, totals, total_refused), steps)
