"""Matching: which of our instances an inbound message is about, never across account groups.

In order, the first that finds one of our messages wins (`MatchedBy` names each):

1. an unsubscribe: the token our `List-Unsubscribe` `mailto:` put in its subject
   (`unsubscribe.verify`, an HMAC: it cannot be forged);
2. a bounce or a complaint: the envelope address it came back to, `bounces+TOKEN@BOUNCE_DOMAIN`
   (VERP, `campaign_engine.verp`: a keyed token, looked up in the delivery ledger), then the
   original's Message-ID from its returned headers or message part;
3. a reply or an automatic answer: `In-Reply-To`, then `References` newest first (RFC 5322
   §3.6.4), against the Message-IDs the delivery ledger holds;
4. the fallback: the address (`From:` of a reply, the failed recipient of a bounce) against the
   scope's enrolled leads by keyed hash, as the suppression list keeps them. This catches
   replies whose threading headers were rewritten (mautic/mautic#6724) and a lead who writes
   while our first draft still waits at its gate.

A scope is where the message came from: an account group (the HTTP source: only its own
instances, so an `In-Reply-To` naming another group's message matches nothing), or a sending
mailbox (IMAP: only messages and leads of campaigns that send from it; when the address is a
lead of several account groups on that mailbox the match is ambiguous and nothing is applied).
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum

from campaign_engine import unsubscribe, verp
from campaign_engine.deliveries import SentMessage, find_sent
from campaign_engine.enrolments import EnrolledLead, Enrolments
from campaign_engine.ids import workflow_instance_id_for
from campaign_engine.store import Store
from inbound.classification import Classification, Kind
from inbound.parsing import InboundMessage

_UNSUBSCRIBE_TOKEN = re.compile(r"[A-Za-z0-9_-]{60,200}")


class MatchedBy(StrEnum):
    """How a message was matched (the log's `matched_by`, the metric's label)."""

    UNSUBSCRIBE_TOKEN = "unsubscribe_token"
    VERP = "verp"
    RETURNED_MESSAGE_ID = "returned_message_id"
    IN_REPLY_TO = "in_reply_to"
    REFERENCES = "references"
    FROM_ADDRESS = "from_address"
    RECIPIENT_ADDRESS = "recipient_address"
    SEND_ATTEMPT = "send_attempt"
    """The SMTP server refused the recipient while we sent (no inbound message at all)."""


class NoMatchReason(StrEnum):
    """Why a message matched nothing (the log line's and the metric's label)."""

    UNKNOWN = "unknown_classification"
    """Classified `unknown`: read receipts and the like concern no lead."""
    NO_REFERENCE = "no_reference"
    """Nothing in it names a message or a lead of this scope."""
    AMBIGUOUS = "ambiguous"
    """The address is a lead of several account groups on this mailbox."""


@dataclass(frozen=True)
class Scope:
    """Where a message came from: exactly one of an account group (HTTP) and a mailbox (IMAP,
    its lowercase address)."""

    account_group_id: str | None = None
    mailbox: str | None = None

    def __post_init__(self) -> None:
        if (self.account_group_id is None) == (self.mailbox is None):
            raise ValueError("a scope is an account group or a mailbox, not both or neither")

    @property
    def key(self) -> str:
        """The scope as the inbound log keys it: `account-group:{id}` or `mailbox:{address}`."""
        if self.account_group_id is not None:
            return f"account-group:{self.account_group_id}"
        return f"mailbox:{self.mailbox}"


@dataclass(frozen=True)
class Match:
    """The instance a message is about. `step_id` is the step whose message it answers (None
    when matched by address alone); `email_hash` the lead's keyed address hash when known."""

    account_group_id: str
    campaign_id: str
    workflow_instance_id: str
    lead_id: str
    step_id: str | None
    matched_by: MatchedBy
    email_hash: str | None


@dataclass(frozen=True)
class VerpSettings:
    """Where VERP bounces come back (`Settings.bounce_local_part`, `bounce_domain`)."""

    local_part: str
    domain: str


LeadOfInstance = Callable[[str], Awaitable[str | None]]
"""Reads an instance's lead id from Temporal (its `LeadId` search attribute) by workflow id,
for instances enrolled before the enrolment table existed; None when it cannot tell."""


class Matcher:
    """Finds the instance a classified message is about (rules in the module docstring).

    `key` is the unsubscribe key (tokens and address hashes); `verp` None when VERP is off.
    Store errors propagate (SQLAlchemy's): the caller retries the whole message.
    """

    def __init__(
        self,
        store: Store,
        key: bytes,
        *,
        verp_settings: VerpSettings | None = None,
        lead_of_instance: LeadOfInstance | None = None,
    ) -> None:
        self._store = store
        self._enrolments = Enrolments(store)
        self._key = key
        self._verp = verp_settings
        self._lead_of_instance = lead_of_instance

    async def match(
        self,
        message: InboundMessage,
        classification: Classification,
        scope: Scope,
        *,
        envelope_recipients: Sequence[str] = (),
    ) -> Match | NoMatchReason:
        """The instance `message` is about, or why there is none."""
        kind = classification.kind
        if kind == Kind.UNKNOWN:
            return NoMatchReason.UNKNOWN
        if kind == Kind.UNSUBSCRIBE:
            found = self._unsubscribe_token(message, scope)
            if found is not None:
                return found
        if kind in (Kind.HARD_BOUNCE, Kind.SOFT_BOUNCE, Kind.COMPLAINT):
            found = await self._report(message, classification, scope, envelope_recipients)
            if found is not None:
                return found
        else:
            found = await self._thread(message, scope)
            if found is not None:
                return found
        if kind in (Kind.HARD_BOUNCE, Kind.SOFT_BOUNCE, Kind.COMPLAINT):
            addresses, by = classification.recipients, MatchedBy.RECIPIENT_ADDRESS
        else:
            addresses = (message.from_address,) if message.from_address else ()
            by = MatchedBy.FROM_ADDRESS
        return await self._by_address(addresses, by, scope)

    def _unsubscribe_token(self, message: InboundMessage, scope: Scope) -> Match | None:
        for candidate in _UNSUBSCRIBE_TOKEN.findall(message.subject):
            token = unsubscribe.verify(self._key, candidate)
            if token is None:
                continue
            if scope.account_group_id not in (None, token.account_group_id):
                return None
            return Match(
                token.account_group_id,
                token.campaign_id,
                workflow_instance_id_for(token.account_group_id, token.campaign_id, token.lead_id),
                token.lead_id,
                token.step_id,
                MatchedBy.UNSUBSCRIBE_TOKEN,
                token.email_hash,
            )
        return None

    async def _report(
        self,
        message: InboundMessage,
        classification: Classification,
        scope: Scope,
        envelope_recipients: Sequence[str],
    ) -> Match | None:
        if self._verp is not None:
            candidates = [*envelope_recipients, *message.recipients]
            if classification.original_mail_from:
                candidates.append(classification.original_mail_from)
            for address in candidates:
                token = verp.token_of(
                    address, local_part=self._verp.local_part, domain=self._verp.domain
                )
                if token is None:
                    continue
                sent = await find_sent(self._store, bounce_token=token)
                found = await self._first_in_scope(sent, [], scope, MatchedBy.VERP)
                if found is not None:
                    return found
        if classification.original_message_id:
            ids = [classification.original_message_id]
            sent = await find_sent(self._store, message_ids=ids)
            return await self._first_in_scope(sent, ids, scope, MatchedBy.RETURNED_MESSAGE_ID)
        return None

    async def _thread(self, message: InboundMessage, scope: Scope) -> Match | None:
        in_reply_to = list(message.in_reply_to)
        references = [ref for ref in reversed(message.references) if ref not in in_reply_to]
        ordered = in_reply_to + references
        if not ordered:
            return None
        sent = await find_sent(self._store, message_ids=ordered)
        found = await self._first_in_scope(sent, in_reply_to, scope, MatchedBy.IN_REPLY_TO)
        if found is not None:
            return found
        return await self._first_in_scope(sent, references, scope, MatchedBy.REFERENCES)

    async def _first_in_scope(
        self, sent: list[SentMessage], order: list[str], scope: Scope, by: MatchedBy
    ) -> Match | None:
        """The first of `sent` (in the order of `order`'s ids; any order when empty) that
        belongs to the scope, as a match."""
        rank = {message_id: index for index, message_id in enumerate(order)}
        for row in sorted(sent, key=lambda row: rank.get(row.message_id, 0)):
            if order and row.message_id not in rank:
                continue
            if scope.account_group_id not in (None, row.account_group_id):
                continue  # another group's message: a forged or misrouted reference
            enrolled = await self._enrolments.find(
                account_group_id=row.account_group_id,
                campaign_id=row.campaign_id,
                workflow_instance_id=row.workflow_instance_id,
                limit=1,
            )
            if enrolled:
                lead = enrolled[0]
                if scope.mailbox is not None and lead.mailbox not in (None, scope.mailbox):
                    continue  # sent from another mailbox: not this mailbox's thread
                return Match(
                    row.account_group_id,
                    row.campaign_id,
                    row.workflow_instance_id,
                    lead.lead_id,
                    row.step_id,
                    by,
                    lead.email_hash,
                )
            lead_id = (
                await self._lead_of_instance(row.workflow_id)
                if self._lead_of_instance is not None
                else None
            )
            if lead_id is None:
                continue
            return Match(
                row.account_group_id,
                row.campaign_id,
                row.workflow_instance_id,
                lead_id,
                row.step_id,
                by,
                None,
            )
        return None

    async def _by_address(
        self, addresses: Sequence[str], by: MatchedBy, scope: Scope
    ) -> Match | NoMatchReason:
        for address in addresses[:10]:
            email_hash = unsubscribe.email_hash(self._key, address)
            leads = await self._enrolments.find(
                account_group_id=scope.account_group_id, email_hash=email_hash, limit=100
            )
            if scope.mailbox is not None:
                leads = [lead for lead in leads if lead.mailbox == scope.mailbox]
                if len({lead.account_group_id for lead in leads}) > 1:
                    return NoMatchReason.AMBIGUOUS
            if leads:
                return _of_enrolment(leads[0], by, email_hash)
        return NoMatchReason.NO_REFERENCE


def _of_enrolment(lead: EnrolledLead, by: MatchedBy, email_hash: str) -> Match:
    return Match(
        lead.account_group_id,
        lead.campaign_id,
        lead.workflow_instance_id,
        lead.lead_id,
        None,
        by,
        email_hash,
    )
