"""The activities of the campaign workflow, as methods of one class holding their clients."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities import egress, messages, slot_holders, templates
from activities.mailers import Mailer, NotSent, SmtpUtf8Unsupported, Superseded
from activities.messages import OutgoingMessage
from campaign_engine import send_windows, unsubscribe, verp, webhook_signatures
from campaign_engine.addresses import InvalidAddress, Mailbox, parse_address, parse_mailbox
from campaign_engine.deliveries import Claim, DeliveryLedger
from campaign_engine.ids import message_id_for as message_id_for
from campaign_engine.mailboxes import MailboxPolicy, MailboxReservations, NoSlot, Reservation
from campaign_engine.store import Store
from campaign_engine.webhook_secrets import SealedSecretError, WebhookSecrets
from inbound.classification import Classification
from inbound.matching import Match, MatchedBy, Scope, VerpSettings
from inbound.pipeline import InboundPipeline, Source
from inbound.smtp_replies import rcpt_refusal
from workflows.activity_options import HEARTBEAT_INTERVAL
from workflows.types import (
    BUSINESS_DAYS_LATER_ACTIVITY,
    DELIVER_MESSAGE_ACTIVITY,
    DRAFT_CONTENT_ACTIVITY,
    NOTIFY_PENDING_APPROVAL_ACTIVITY,
    RELEASE_SEND_SLOT_ACTIVITY,
    ActivityErrorType,
    ApprovalEvent,
    BusinessDaysRequest,
    BusinessDaysResult,
    CampaignStep,
    Deferral,
    DeliveryOutcome,
    DeliveryReceipt,
    DeliveryRequest,
    DraftedContent,
    DraftRequest,
    PendingApprovalNotice,
    SendWindow,
)

SIGNATURE_HEADER = webhook_signatures.SIGNATURE_HEADER
TIMESTAMP_HEADER = webhook_signatures.TIMESTAMP_HEADER
EVENT_ID_HEADER = webhook_signatures.ID_HEADER
WEBHOOK_NOTICES_DROPPED_METRIC = "campaign_webhook_notices_dropped"
"""Counter of notices not sent because the campaign's webhook changed (or went) since the
instance's snapshot, by `reason` (`webhook_changed`, `webhook_removed`)."""
HEARTBEAT_SECONDS = HEARTBEAT_INTERVAL.total_seconds()
"""How often the delivery and draft activities heartbeat, from their start to their end;
also how soon a stop reaches a delivery (the worker's heartbeat throttle is set to this, see
`worker.build_worker`; the workflow's heartbeat timeout is `HEARTBEAT_TIMEOUT` beside it)."""

T = TypeVar("T")


def event_id_for(workflow_id: str, notice: PendingApprovalNotice) -> str:
    """The webhook's `X-Campaign-Engine-Event-Id`: one per (instance, gate, event), the same on
    every retry. `{workflow id}:{gate id}:{event}` (a reminder adds its seconds before expiry);
    notices of gates recorded before gate ids keep the older `{workflow id}:{step id}`."""
    if notice.gate_id is None:
        return f"{workflow_id}:{notice.step_id}"
    event_id = f"{workflow_id}:{notice.gate_id}:{notice.event}"
    if notice.event == ApprovalEvent.REMINDER and notice.reminder_seconds is not None:
        event_id += f":{notice.reminder_seconds:g}"
    return event_id


def webhook_signature(secret: str, event_id: str, timestamp: str, body: bytes) -> str:
    """The `webhook-signature` of a notice: `v1,<base64 HMAC-SHA256 over "id.timestamp.body">`
    (Standard Webhooks; `campaign_engine.webhook_signatures.sign`)."""
    return webhook_signatures.sign(secret, event_id, timestamp, body)


def _delivery_error(error: NotSent) -> ApplicationError:
    """The workflow's view of a send that certainly did not happen: retryable or not, typed."""
    if isinstance(error, SmtpUtf8Unsupported):
        error_type = ActivityErrorType.SMTPUTF8_UNSUPPORTED
    elif error.permanent:
        error_type = ActivityErrorType.PERMANENT_DELIVERY_ERROR
    else:
        error_type = ActivityErrorType.TRANSIENT_DELIVERY_ERROR
    return ApplicationError(
        str(error), activity.info().attempt, type=error_type.value, non_retryable=error.permanent
    )


async def _settled(task: asyncio.Future[Any]) -> None:
    """Waits until `task` is done, through any cancellation of the waiting task itself."""
    while not task.done():
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait({task})


async def _to_the_end(work: Awaitable[T]) -> T:
    """Runs `work` (a ledger write, a send past its hand-over) to its end even if the activity
    is cancelled meanwhile, and returns or raises what it did: a claim left behind would make the
    next attempt think the message may be out, and a message is never cancelled half-sent."""
    task = asyncio.ensure_future(work)
    await _settled(task)
    return task.result()


@contextlib.asynccontextmanager
async def _heartbeating() -> AsyncIterator[None]:
    """Heartbeats while the body runs (every `HEARTBEAT_SECONDS` from its start), so a worker that
    dies anywhere in it is noticed in seconds, a live one is never taken for dead however long
    it waits (a stalled database, its turn at the render pool), and a cancellation reaches it.

    The first beat is after `HEARTBEAT_SECONDS`, not at once: the server's heartbeat timeout
    runs from the attempt's start whether or not it has beaten, so a beat at once tells it
    nothing, and a cancellation reaches the attempt at the first beat after it either way (the
    SDK throttles beats to one per `HEARTBEAT_SECONDS`). What a beat at once cost: one
    `RecordActivityTaskHeartbeat` round trip and one history-store write per delivery and per
    draft, which nearly all finish in well under `HEARTBEAT_SECONDS` (docs/performance.md).
    """

    async def beat() -> None:
        while True:
            await asyncio.sleep(HEARTBEAT_SECONDS)
            activity.heartbeat()

    task = asyncio.create_task(beat())
    try:
        yield
    finally:
        task.cancel()


def _render_error(step_id: str, error: templates.TemplateRenderError) -> ApplicationError:
    """The draft's failure for a template that cannot be sent for this lead: non-retryable (the
    same template and lead render the same way), so the instance ends `DRAFT_FAILED`."""
    return ApplicationError(
        f"step {step_id}: {error}",
        type=ActivityErrorType.TEMPLATE_RENDER_ERROR.value,
        non_retryable=True,
    )


def _render_queue_full(error: templates.RenderQueueFull) -> ApplicationError:
    """The draft's failure when the render queue cannot take its templates now: retryable,
    after the queue's own estimate of its wait."""
    return ApplicationError(
        f"render queue full: {error}",
        type=ActivityErrorType.RENDER_QUEUE_FULL.value,
        next_retry_delay=timedelta(seconds=error.retry_after_seconds),
    )


def _account_group_of(workflow_id: str | None) -> str:
    """The account group of an instance's workflow id (`campaign:{ag}:{campaign}:{instance}`,
    `campaign_engine.ids.workflow_id_for`); "" for any other (a draft outside a campaign's
    workflow), which then shares one queue."""
    parts = (workflow_id or "").split(":")
    return parts[1] if len(parts) == 4 and parts[0] == "campaign" else ""


def _threaded(
    content: DraftedContent, step: CampaignStep, workflow_id: str | None
) -> DraftedContent:
    """`content` of a threaded step as a reply in its thread.

    `content.subject` is the thread's first subject rendered for this lead (the snapshot gives
    the threaded step that template, `CampaignStep.subject`); the reply's is `Re: ` and it,
    never `Re: Re: ` (`messages.reply_subject`, RFC 5322 §3.6.5). Its `references` are the
    Message-IDs of `step.thread_step_ids`, oldest first (RFC 5322 §3.6.4), each deterministic
    per (instance, step) (`message_id_for`), so no store read is needed: the workflow runs the
    steps in order and goes on past a step only once its delivery is done (sent, already sent,
    or in doubt), so every step named here was handed over, or may have been (in doubt).

    Raises a `TemplateRenderError` `ApplicationError` when `Re: ` takes the subject past
    `templates.MAX_SUBJECT_CHARS` (the PUT checked the first subject for the worst-case lead
    with room for it; only output that depends on a lead's content can get here), and when
    there is no workflow id to make the Message-IDs from (an activity run outside a workflow).
    """
    if not workflow_id:
        raise _render_error(
            step.id,
            templates.TemplateRenderError(
                "a threaded step is drafted by its instance's workflow, whose id makes the "
                "thread's Message-IDs; this draft has none"
            ),
        )
    subject = messages.reply_subject(content.subject)
    if len(subject) > templates.MAX_SUBJECT_CHARS:
        raise _render_error(
            step.id,
            templates.TemplateRenderError(
                f"the reply's subject (Re: and the thread's first subject) has {len(subject)} "
                f"characters for this lead; at most {templates.MAX_SUBJECT_CHARS} may be sent"
            ),
        )
    return replace(
        content,
        subject=subject,
        references=[message_id_for(workflow_id, step_id) for step_id in step.thread_step_ids],
    )


class LeadSuppressed(Exception):
    """The lead is on its account group's suppression list: the message was not handed over."""


class CampaignPaused(Exception):
    """The campaign was paused: the message was not handed over (it waits for the resume)."""


SLOT_TOLERANCE = timedelta(seconds=1)
"""A slot this close ahead is taken now: a timer that short is not worth a history event."""


@lru_cache(maxsize=1024)
def _window(
    days: tuple[str, ...],
    start: str,
    end: str,
    time_zone: str | None,
    holidays: str | None,
    lead_time_zone: str | None,
) -> send_windows.SendWindow:
    """The parsed window (cached: one per campaign and lead zone, not per delivery)."""
    return send_windows.parse_window(
        time_zone=time_zone,
        days=list(days),
        start=start,
        end=end,
        holidays=holidays,
        lead_time_zone=lead_time_zone,
    )


@lru_cache(maxsize=256)
def _parsed_mailbox(text: str) -> Mailbox:
    return parse_mailbox(text)


def sending_window(
    window: SendWindow | None, lead_time_zone: str | None
) -> send_windows.SendWindow | None:
    """The window a lead's messages go out in (the lead's zone wins), or None for "any time".

    Raises `ApplicationError` (`InvalidSendWindow`, non-retryable) for a window or zone the API
    would have refused: only a snapshot made before a check existed can get here.
    """
    if window is None:
        return None
    try:
        return _window(
            tuple(window.days),
            window.start,
            window.end,
            window.time_zone,
            window.holidays,
            lead_time_zone,
        )
    except send_windows.InvalidWindow as error:
        raise invalid_send_window(error) from error


def invalid_send_window(error: send_windows.InvalidWindow) -> ApplicationError:
    """The activity error for a window that cannot be used (`InvalidSendWindow`, non-retryable:
    the same window gives the same answer on every retry), naming the field."""
    return ApplicationError(
        f"{error.field}: {error}",
        type=ActivityErrorType.INVALID_SEND_WINDOW.value,
        non_retryable=True,
    )


UNSUBSCRIBE_LINE = "To stop receiving these messages: {url}"
"""The visible unsubscribe line appended to a body that does not place `{{ unsubscribe_url }}`
itself (RFC 8058 §3.1 leaves the body alone; Gmail and Yahoo's bulk-sender rules ask for a
visible link too)."""


def _ids_of(workflow_id: str) -> tuple[str, str, str]:
    """(account group, campaign, workflow instance) of `campaign:{ag}:{campaign}:{instance}`."""
    _, account_group_id, campaign_id, instance_id = workflow_id.split(":")
    return account_group_id, campaign_id, instance_id


def _placed(text: str, url: str, limit: int) -> str:
    """`text` with every `UNSUBSCRIBE_URL_MARKER` replaced by `url`; `CompositionError` past
    `limit` characters (the PUT checked the template with the longest URL, so only a template
    whose output depends on the URL's content can get here)."""
    placed = text.replace(templates.UNSUBSCRIBE_URL_MARKER, url)
    if len(placed) > limit:
        raise messages.CompositionError(
            f"with the unsubscribe URL in place the text has {len(placed)} characters; "
            f"at most {limit} may be sent"
        )
    return placed


def _with_unsubscribe_line(body: str, url: str) -> str:
    """The body with its unsubscribe URL: where the template placed `{{ unsubscribe_url }}`,
    else on a line of its own after a signature separator (RFC 3676 §4.3 `-- `)."""
    if templates.UNSUBSCRIBE_URL_MARKER in body:
        return _placed(body, url, templates.MAX_BODY_CHARS)
    line = UNSUBSCRIBE_LINE.format(url=url)
    return f"{body.rstrip()}\n\n-- \n{line}\n"


class CampaignActivities:
    """The activities, sharing the store, the delivery ledger and the mailer.

    `sender` is the `From:` address (`Name <local@domain>` or a bare address); it is parsed here
    and raises `InvalidAddress` when it is not one (the settings refuse it earlier).
    `unsubscribe_key` signs one-click unsubscribe tokens (`campaign_engine.unsubscribe`);
    `unsubscribe_base_url` is where `/u/{token}` is served; `unsubscribe_mailbox` adds the
    `mailto:` form; `dkim_signer` signs every message (None: unsigned). `mailboxes` are the
    sending mailboxes' limits by lowercase address (`Settings.mailbox_policies`); a campaign's
    `from` names one, else the sender's address applies. `verp` (None: off) makes each message's
    envelope sender `local+TOKEN@domain` (`campaign_engine.verp`). `inbound` applies a recipient
    refused for good at send time as a hard bounce (`inbound.smtp_replies`); without it the
    instance only fails. `sending_groups` says who may send as each address (lowercase address
    → the account groups allowed, None for every group: `Settings.sending_groups`); without it
    only the sender is usable, by every group, and any other `from` is refused.
    `webhook_secrets` opens the campaigns' sealed webhook secrets (without it only secrets
    stored in clear before sealing can sign). `render_queue_limits` bound the drafts'
    templates waiting for this process's render pool (`activities.render_queue`).
    """

    def __init__(
        self,
        *,
        store: Store,
        mailer: Mailer,
        sender: str,
        unsubscribe_key: bytes,
        unsubscribe_base_url: str,
        unsubscribe_mailbox: str | None = None,
        dkim_signer: messages.DkimSigner | None = None,
        webhook_timeout_seconds: float = 10.0,
        webhook_allow_private_addresses: bool = False,
        mailboxes: Mapping[str, MailboxPolicy] | None = None,
        verp: VerpSettings | None = None,
        inbound: InboundPipeline | None = None,
        sending_groups: Mapping[str, frozenset[str] | None] | None = None,
        webhook_secrets: WebhookSecrets | None = None,
        render_queue_limits: templates.RenderQueueLimits | None = None,
    ) -> None:
        self._webhook_secrets = webhook_secrets
        self._render_queue_limits = render_queue_limits or templates.RenderQueueLimits()
        self._verp = verp
        self._inbound = inbound
        self._unsubscribe_key = unsubscribe_key
        self._unsubscribe_base_url = unsubscribe_base_url.rstrip("/")
        self._unsubscribe_mailbox = unsubscribe_mailbox
        self._dkim = dkim_signer
        self._store = store
        self._ledger = DeliveryLedger(store)
        self._mailer = mailer
        self._sender = parse_mailbox(sender)
        self._mailboxes = dict(mailboxes or {})
        self._sending_groups: dict[str, frozenset[str] | None] = (
            {self._sender.address.normalized.lower(): None}
            if sending_groups is None
            else dict(sending_groups)
        )
        self._reservations = MailboxReservations(store)
        self._webhook_timeout = webhook_timeout_seconds
        self._webhook_allow_private = webhook_allow_private_addresses

    @activity.defn(name=DRAFT_CONTENT_ACTIVITY)
    async def draft_content(self, request: DraftRequest) -> DraftedContent:
        """Renders the step's subject and body for the lead, in the render pool (never on the
        worker's event loop), each within its budget and output limit.

        A template that does not render, or exceeds its budget for this lead (the PUT checked
        it for a lead at every field's longest, not for every content), raises a non-retryable
        `TemplateRenderError`: the instance fails with `DRAFT_FAILED` at once. The subject is
        made one line (`messages.single_line`) here, so the reviewer sees exactly the subject
        that will be sent.

        A threaded step (`CampaignStep.thread_step_ids`) is drafted as a reply in its thread
        (`_threaded`): its subject is `Re: ` and the thread's first subject, and its
        `references` the thread's Message-IDs, so the gate shows, and the approval covers, the
        subject that goes out.

        Heartbeats throughout: in a burst, the renders wait for the worker's render processes
        (`templates.render_slots`, each account group in its own queue, fairly), and
        each template's deadline starts only when a process takes it up, so a draft's budget is
        its own render time, not the queue's (`workflows.activity_options.DRAFT`). When the
        group's share of that queue, or the whole, is full (`render_queue_limits`), it raises a
        retryable `RenderQueueFull` with the estimated wait as `next_retry_delay`: Temporal
        retries the draft then, under its retry policy.
        """
        group = _account_group_of(activity.info().workflow_id)
        try:
            templates.admit_renders(group, 2, self._render_queue_limits)
        except templates.RenderQueueFull as error:
            raise _render_queue_full(error) from error
        try:
            async with _heartbeating():
                subject, body = await asyncio.gather(
                    templates.render_async(
                        request.step.subject,
                        request.lead,
                        limit=templates.MAX_SUBJECT_CHARS,
                        account_group=group,
                    ),
                    templates.render_async(
                        request.step.body,
                        request.lead,
                        limit=templates.MAX_BODY_CHARS,
                        account_group=group,
                    ),
                )
        except templates.TemplateRenderError as error:
            raise _render_error(request.step.id, error) from error
        content = DraftedContent(
            step_id=request.step.id,
            subject=messages.single_line(subject),
            body=messages.body_text(body),
        )
        if request.step.thread_step_ids:
            return _threaded(content, request.step, activity.info().workflow_id)
        return content

    @activity.defn(name=DELIVER_MESSAGE_ACTIVITY)
    async def deliver_message(self, request: DeliveryRequest) -> DeliveryReceipt:
        """Sends the drafted content to the lead, at most once per (instance, step).

        Failures are classified for the workflow's retry policy: `ApplicationError`s of the
        non-retryable `ActivityErrorType`s (invalid address, composition, SMTPUTF8 missing, SMTP
        5xx) end the instance at once; `TRANSIENT_DELIVERY_ERROR` (SMTP 4xx, unreachable) is
        retried. Each carries the attempt number as its only detail. Cancelled (a stop) before
        the hand-over, it sends nothing, releases its claim and ends cancelled; after it, it
        finishes the send first.

        Before anything is claimed, the send time is settled: outside the lead's send window, or
        when the mailbox's daily cap or spacing puts its slot later (`MailboxReservations`,
        atomic across workers), it returns `DEFERRED` with `send_at`; the workflow waits and
        asks again. Right before the hand-over the campaign's pause flag is read from the store:
        a paused campaign's message is not sent (`DEFERRED`, `campaign_paused`, no `send_at`),
        its claim and mailbox slot are released. A permanent failure releases the slot too.

        Heartbeats from its start to its end (`_heartbeating`): a stall anywhere (the store, the
        SMTP server) is a live attempt, bounded by the start-to-close timeout, and a stop cancels it
        wherever it is; a stop before the hand-over gives the claim and the mailbox slot back.
        """
        async with _heartbeating():
            return await self._deliver(request)

    async def _deliver(self, request: DeliveryRequest) -> DeliveryReceipt:
        """`deliver_message`'s work, under its heartbeat."""
        # First of all: a sender its group may not use takes no claim, no slot of anyone's cap.
        self._check_sender(request)
        step_id = request.content.step_id
        message_id = message_id_for(request.workflow_id, step_id)
        # Composed before the claim: a message that cannot be built leaves no ledger row behind.
        outgoing = self._compose(message_id, request)
        bounce_token = verp.bounce_token(self._unsubscribe_key, message_id)
        if self._verp is not None:
            outgoing = replace(
                outgoing,
                envelope_from=verp.return_path(
                    self._verp.local_part, self._verp.domain, bounce_token
                ),
            )
        now = max(datetime.now(UTC), request.not_before or datetime.min.replace(tzinfo=UTC))
        deferred, reserved = await self._send_time(message_id, request, now)
        if deferred is not None:
            return deferred
        # To its end even when cancelled meanwhile: a claim committed but unknown to this
        # attempt would stay `claimed` forever; `hand_over` refuses after a cancellation.
        claim = await _to_the_end(
            self._ledger.claim(message_id, request.workflow_id, step_id, bounce_token=bounce_token)
        )
        if claim == Claim.ALREADY_SENT:
            activity.logger.info("message %s already delivered; not sent again", message_id)
            return DeliveryReceipt(message_id, DeliveryOutcome.ALREADY_SENT)
        if claim == Claim.IN_DOUBT:
            activity.logger.warning(
                "an earlier attempt died while sending %s; not sending again (at most once)",
                message_id,
            )
            return DeliveryReceipt(message_id, DeliveryOutcome.IN_DOUBT)
        ids = _ids_of(request.workflow_id)
        email_hash = unsubscribe.email_hash(self._unsubscribe_key, request.lead.email)

        async def refused() -> None:
            refusal = await self._store.hand_over_refusal(
                ids[0], ids[1], request.lead.id, email_hash
            )
            if refusal == "suppressed":
                raise LeadSuppressed(
                    f"the lead is on its account group's suppression list; {message_id} not sent"
                )
            if refusal == "paused":
                raise CampaignPaused(f"the campaign is paused; {message_id} not sent")

        try:
            await self._send_unless_stopped(message_id, outgoing, refused)
        except asyncio.CancelledError:
            # Stopped before the hand-over (after it, the send is finished and nothing raised):
            # nothing was sent, and the stopped instance will not ask for its slot again.
            if reserved:
                await _to_the_end(self._reservations.release(message_id))
            raise
        except CampaignPaused:
            await _to_the_end(self._ledger.release(message_id))
            if reserved:
                await _to_the_end(self._reservations.release(message_id))
            return self._held(message_id)
        except LeadSuppressed as error:
            await _to_the_end(self._ledger.release(message_id))
            if reserved:
                await _to_the_end(self._reservations.release(message_id))
            activity.logger.info("lead of %s is suppressed; not sent", message_id)
            raise ApplicationError(
                str(error),
                activity.info().attempt,
                type=ActivityErrorType.LEAD_SUPPRESSED.value,
                non_retryable=True,
            ) from error
        except Superseded:
            activity.logger.warning(
                "another attempt is sending %s; this one stands down", message_id
            )
            return DeliveryReceipt(message_id, DeliveryOutcome.SUPERSEDED)
        except NotSent as error:
            await _to_the_end(self._ledger.release(message_id))
            if reserved and error.permanent:
                # Nothing left, nothing will: the day's cap counts sends, not failures.
                await _to_the_end(self._reservations.release(message_id))
            bounced = rcpt_refusal(*error.rcpt_reply) if error.rcpt_reply else None
            if bounced is not None:
                await _to_the_end(self._record_bounce(request, message_id, email_hash, bounced))
                raise ApplicationError(
                    f"the recipient's server refused the address for good: "
                    f"{bounced.evidence.diagnostic_code}",
                    activity.info().attempt,
                    type=ActivityErrorType.RECIPIENT_REFUSED.value,
                    non_retryable=True,
                ) from error
            raise _delivery_error(error) from error
        await _to_the_end(self._ledger.mark_sent(message_id))
        return DeliveryReceipt(message_id, DeliveryOutcome.SENT)

    async def _record_bounce(
        self,
        request: DeliveryRequest,
        message_id: str,
        email_hash: str,
        bounced: Classification,
    ) -> None:
        """A recipient refused for good at `RCPT TO` is a hard bounce: the address is suppressed
        in the account group with the answer as evidence, logged as an inbound message (source
        `smtp`, so campaign stats count it), and the lead's other instances stop `LEAD_BOUNCED`.
        This instance is not signalled: the `RECIPIENT_REFUSED` error ends it so."""
        if self._inbound is None:
            return
        account_group_id, campaign_id, instance_id = _ids_of(request.workflow_id)
        await self._inbound.apply(
            hashlib.sha256(f"smtp\x00{message_id}".encode()).hexdigest()[:32],
            Scope(account_group_id=account_group_id),
            Source.SMTP,
            bounced,
            Match(
                account_group_id,
                campaign_id,
                instance_id,
                request.lead.id,
                request.content.step_id,
                MatchedBy.SEND_ATTEMPT,
                email_hash,
            ),
            datetime.now(UTC),
            skip_workflow_id=request.workflow_id,
        )

    def _check_sender(self, request: DeliveryRequest) -> None:
        """Raises a non-retryable `SENDER_NOT_ALLOWED` unless the message's `From:` address is
        the sender or a configured mailbox that the workflow's account group may send from.

        The PUT checks this too (`api.campaigns.check_sender`); this is the check that holds
        when a workflow input never went through the API (anyone who can start a workflow on
        Temporal). The account group is the one in the workflow id, the same that the
        Message-ID, List-Id and unsubscribe token carry. An unparsable `from` is left to
        `_compose` (`INVALID_ADDRESS`)."""
        try:
            address = self._sender_of(request.mailbox).address.normalized.lower()
        except InvalidAddress:
            return
        try:
            account_group_id = _ids_of(request.workflow_id)[0]
        except ValueError:
            account_group_id = ""
        owners = self._sending_groups.get(address, frozenset())
        if owners is None or account_group_id in owners:
            return
        activity.logger.warning(
            "refused to send as %s for account group %s: not a mailbox the group may send from",
            address,
            account_group_id or "(none)",
        )
        raise ApplicationError(
            f"the sender {address} is not a mailbox account group {account_group_id or '(none)'} "
            "may send from (CAMPAIGN_ENGINE_MAILBOXES)",
            activity.info().attempt,
            type=ActivityErrorType.SENDER_NOT_ALLOWED.value,
            non_retryable=True,
        )

    def _sender_of(self, mailbox: str | None) -> Mailbox:
        """The `From:` of a campaign's messages: its `from`, else the deployment's sender."""
        return _parsed_mailbox(mailbox) if mailbox else self._sender

    def _policy_for(self, mailbox: str | None) -> MailboxPolicy | None:
        """The limits of the mailbox a campaign sends from, when it has any."""
        sender = self._sender_of(mailbox)
        policy = self._mailboxes.get(sender.address.normalized.lower())
        if policy is None or (policy.daily_cap is None and not policy.minimum_spacing):
            return None
        return policy

    async def _send_time(
        self, message_id: str, request: DeliveryRequest, now: datetime
    ) -> tuple[DeliveryReceipt | None, bool]:
        """(a `DEFERRED` receipt, or None to send now; whether a mailbox slot is held).

        Without mailbox limits only the window is read (no store write). With them, a paused
        campaign's message is held before it takes a slot, and the slot is reserved once per
        message (idempotent): a retry or a wake-up finds its own slot again.
        A slot found in the past while the window is closed (a worker down for a day) is given
        back and a new one taken, so nothing leaves outside the window.
        """
        window = sending_window(request.send_window, request.lead.time_zone)
        policy = self._policy_for(request.mailbox)
        if policy is None:
            if window is None or send_windows.is_open(window, now):
                return None, False
            at = send_windows.next_open(window, now)
            return self._deferred(message_id, Deferral.OUTSIDE_WINDOW, at, window, False), False
        account_group_id, campaign_id, _ = _ids_of(request.workflow_id)
        if await self._store.campaign_paused(account_group_id, campaign_id):
            # No slot is taken for a message that cannot go: the resume hands the day's slots
            # to the held messages, not to whichever happened to be asked first.
            return self._held(message_id), False
        zone = policy.time_zone

        async def reserve() -> Reservation:
            reservation = await self._reservations.reserve(
                message_id, policy, send_windows.open_intervals(window, now, zone=zone)
            )
            if reservation.slot_at <= now + SLOT_TOLERANCE and not (
                window is None or send_windows.is_open(window, now)
            ):
                await self._reservations.release(message_id)
                reservation = await self._reservations.reserve(
                    message_id, policy, send_windows.open_intervals(window, now, zone=zone)
                )
            if (
                reservation.deferred_because is not None
                and reservation.slot_at > now + SLOT_TOLERANCE
                and await self._reclaim_in_the_way(policy, reservation, now)
            ):
                # Slots of executions no longer running were in the way: reserve again.
                await self._reservations.release(message_id)
                reservation = await self._reservations.reserve(
                    message_id, policy, send_windows.open_intervals(window, now, zone=zone)
                )
            return reservation

        try:
            # To its end even when cancelled meanwhile, like the claim: a slot committed but
            # unknown to this attempt could never be given back. A stop is honoured after it.
            reservation = await _to_the_end(reserve())
        except NoSlot as error:
            raise ApplicationError(
                f"no slot for {message_id} in the mailbox {policy.address} within a year: {error}",
                type=ActivityErrorType.INVALID_SEND_WINDOW.value,
                non_retryable=True,
            ) from error
        if reservation.slot_at <= now + SLOT_TOLERANCE:
            return None, True
        # The store's reasons are named as the workflow's (`mailbox_cap`, `mailbox_spacing`).
        reason = (
            Deferral(reservation.deferred_because.value)
            if reservation.deferred_because is not None
            else Deferral.OUTSIDE_WINDOW
        )
        return self._deferred(message_id, reason, reservation.slot_at, window, True), True

    async def _reclaim_in_the_way(
        self, policy: MailboxPolicy, reservation: Reservation, now: datetime
    ) -> bool:
        """Gives back the slots that defer `reservation` and belong to executions no longer
        running (terminated, timed out: no workflow code of theirs will; `slot_holders`);
        True when any was. Outside a worker (no Temporal client) nothing is looked at."""
        try:
            client = activity.client()
        except RuntimeError:
            return False
        released = await slot_holders.reclaim_in_the_way(
            client, self._reservations, policy, reservation, now
        )
        return bool(released)

    @staticmethod
    def _held(message_id: str) -> DeliveryReceipt:
        activity.logger.info("campaign of %s is paused; held until resumed", message_id)
        return DeliveryReceipt(
            message_id, DeliveryOutcome.DEFERRED, deferred_because=Deferral.CAMPAIGN_PAUSED
        )

    @staticmethod
    def _deferred(
        message_id: str,
        reason: Deferral,
        at: datetime,
        window: send_windows.SendWindow | None,
        reserved: bool,
    ) -> DeliveryReceipt:
        zone = window.time_zone if window is not None else ZoneInfo("UTC")
        activity.logger.info("%s deferred (%s) to %s", message_id, reason.value, at.isoformat())
        return DeliveryReceipt(
            message_id,
            DeliveryOutcome.DEFERRED,
            send_at=at,
            send_at_local=send_windows.local_iso(at, zone),
            deferred_because=reason,
            slot_reserved=reserved,
        )

    @activity.defn(name=BUSINESS_DAYS_LATER_ACTIVITY)
    async def business_days_later(self, request: BusinessDaysRequest) -> BusinessDaysResult:
        """The end of a `businessDays` delay: the same local time `request.days` sending days
        after `request.at` (the window's days less its holidays; Monday to Friday without a
        window), aware UTC. `InvalidSendWindow` (non-retryable) for an unusable window or one
        that never opens."""
        window = sending_window(request.send_window, request.lead_time_zone)
        try:
            return BusinessDaysResult(
                send_windows.business_days_later(window, request.at, request.days)
            )
        except send_windows.InvalidWindow as error:
            # A window that never opens never will.
            raise invalid_send_window(error) from error

    @activity.defn(name=RELEASE_SEND_SLOT_ACTIVITY)
    async def release_send_slot(self, message_id: str) -> None:
        """Gives back the mailbox slot held for `message_id` (an instance stopped while its
        approved message waited): the day's cap counts what is sent."""
        released = await self._reservations.release(message_id)
        activity.logger.info("mailbox slot of %s released: %s", message_id, released)

    async def _send_unless_stopped(
        self,
        message_id: str,
        outgoing: OutgoingMessage,
        refused: Callable[[], Awaitable[None]],
    ) -> None:
        """Sends in a task of its own, so that a cancellation (the workflow's stop, reaching
        this activity by heartbeat) can be told apart by where the send is: before the
        hand-over the send is abandoned and the claim released; after it, it runs to its end.

        Right before the hand-over `refused` reads the campaign's pause flag (`CampaignPaused`)
        and the suppression list once more (`LeadSuppressed`):
        a lead who unsubscribed while its message waited at a gate, or while this attempt
        connected, is never mailed (RFC 8058 §3.1 asks that an unsubscribe be honoured; Gmail's
        bulk-sender rules within two days)."""
        handing_over = False

        async def hand_over() -> bool:
            nonlocal handing_over
            if activity.is_cancelled():
                # The stop reached this attempt first: nothing has left, nothing will.
                raise asyncio.CancelledError
            await refused()
            if activity.is_cancelled():
                raise asyncio.CancelledError
            # From here on the ledger may say `sending`: the send is no longer abandoned.
            handing_over = True
            return await self._ledger.hand_over(message_id)

        sending = asyncio.create_task(self._mailer.send(message_id, outgoing, hand_over))
        try:
            await asyncio.shield(sending)
        except asyncio.CancelledError:
            if handing_over:
                activity.logger.info("%s is being handed over: finishing it first", message_id)
                await _to_the_end(sending)
                return
            sending.cancel()
            await _settled(sending)
            await _to_the_end(self._ledger.release(message_id))
            activity.logger.info("stopped before %s was handed over; not sent", message_id)
            raise

    def _compose(self, message_id: str, request: DeliveryRequest) -> OutgoingMessage:
        attempt = activity.info().attempt
        try:
            recipient = parse_address(request.lead.email)
        except InvalidAddress as error:
            raise ApplicationError(
                f"the lead's address cannot be sent to: {error}",
                attempt,
                type=ActivityErrorType.INVALID_ADDRESS.value,
                non_retryable=True,
            ) from error
        account_group_id, campaign_id, _ = _ids_of(request.workflow_id)
        try:
            sender = self._sender_of(request.mailbox)
        except InvalidAddress as error:
            raise ApplicationError(
                f"the campaign's from is not an address we can send as: {error}",
                attempt,
                type=ActivityErrorType.INVALID_ADDRESS.value,
                non_retryable=True,
            ) from error
        try:
            token = unsubscribe.mint(
                self._unsubscribe_key,
                account_group_id=account_group_id,
                campaign_id=campaign_id,
                lead_id=request.lead.id,
                step_id=request.content.step_id,
                email=request.lead.email,
            )
            url = f"{self._unsubscribe_base_url}/u/{token}"
            uris = [url]
            if self._unsubscribe_mailbox:
                uris.append(f"mailto:{self._unsubscribe_mailbox}?subject=unsubscribe%20{token}")
            return messages.compose(
                message_id=message_id,
                sender=sender,
                recipient=recipient,
                subject=_placed(request.content.subject, url, templates.MAX_SUBJECT_CHARS),
                body=_with_unsubscribe_line(request.content.body, url),
                list_unsubscribe=uris,
                list_id=messages.list_id_header(
                    f"{campaign_id}.{account_group_id}", sender.address.ascii_domain
                ),
                dkim_signer=self._dkim,
                references=request.content.references,
            )
        except (messages.CompositionError, ValueError) as error:
            raise ApplicationError(
                str(error),
                attempt,
                type=ActivityErrorType.COMPOSITION_ERROR.value,
                non_retryable=True,
            ) from error

    @activity.defn(name=NOTIFY_PENDING_APPROVAL_ACTIVITY)
    async def notify_pending_approval(self, notice: PendingApprovalNotice) -> None:
        """POSTs the campaign's webhook that a gate opened: ids only (`approval.pending`, no lead
        data), signed with the campaign's secret (`campaign_engine.webhook_signatures`).

        URL and secret come from one stored version: the campaign is read at send time, and a
        notice whose instance snapshot names another URL than the campaign's webhook now (the
        campaign was edited, or its webhook removed) is dropped, not sent: logged and counted
        (`WEBHOOK_NOTICES_DROPPED_METRIC`). So the old URL never receives a notice signed with
        the new secret. The secret is opened from its sealed form (`webhook_secrets`).

        Sends the Standard Webhooks headers `webhook-id` (the event id, stable across retries),
        `webhook-timestamp` (Unix seconds of this attempt) and `webhook-signature`, through
        `egress` (no private addresses unless allowed). A 2xx is done; 5xx, 408, 429 and
        network failures are retried, and so is a sealed secret under a key this worker lacks;
        a refused destination or any other status raise a non-retryable
        `PermanentNotificationError`.
        """
        record = await self._store.get_campaign(notice.account_group_id, notice.campaign_id)
        webhook = (record.definition.get("webhook") or {}) if record else {}
        if webhook.get("url") != notice.webhook_url:
            reason = "webhook_removed" if not webhook else "webhook_changed"
            activity.logger.warning(
                "webhook notice %s of campaign %s dropped (%s): the campaign's webhook is no "
                "longer the one this instance was enrolled with",
                notice.event,
                notice.campaign_id,
                reason,
            )
            activity.metric_meter().create_counter(
                WEBHOOK_NOTICES_DROPPED_METRIC,
                "Webhook notices not sent: the campaign's webhook changed since the instance's "
                "snapshot.",
            ).add(1, {"reason": reason})
            return
        try:
            secret = (
                self._webhook_secrets.secret_of(
                    webhook,
                    account_group_id=notice.account_group_id,
                    campaign_id=notice.campaign_id,
                )
                if self._webhook_secrets is not None
                else (webhook.get("secret") or None)
            )
        except SealedSecretError as error:
            # Retryable: a worker given the missing key (or a reloaded key file) can sign it.
            raise ApplicationError(f"the webhook secret does not open: {error}") from error
        if not secret:
            raise ApplicationError(
                "the campaign has no webhook secret any more",
                type=ActivityErrorType.PERMANENT_NOTIFICATION_ERROR.value,
                non_retryable=True,
            )
        payload: dict[str, Any] = {
            "event": notice.event,
            "accountGroupId": notice.account_group_id,
            "campaignId": notice.campaign_id,
            "workflowInstanceId": notice.workflow_instance_id,
            "leadId": notice.lead_id,
            "stepId": notice.step_id,
            "expiresAt": notice.expires_at.isoformat() if notice.expires_at else None,
        }
        if notice.gate_id is not None:
            payload["gateId"] = notice.gate_id
        if notice.event == ApprovalEvent.REMINDER:
            payload["reminderSecondsBeforeExpiry"] = notice.reminder_seconds
        if notice.event == ApprovalEvent.RESOLVED:
            payload["resolution"] = notice.resolution
            payload["decidedBy"] = notice.decided_by
            payload["decidedAt"] = notice.decided_at.isoformat() if notice.decided_at else None
        body = json.dumps(payload, separators=(",", ":")).encode()
        # The event id is stable across retries (a receiver drops duplicates by it); each
        # attempt is signed at its own time, over id, timestamp and body.
        event_id = event_id_for(activity.info().workflow_id or "", notice)
        headers = {
            "Content-Type": "application/json",
            **webhook_signatures.signed_headers(secret, event_id, body),
        }
        try:
            response = await egress.post(
                notice.webhook_url,
                content=body,
                headers=headers,
                timeout_seconds=self._webhook_timeout,
                allow_private=self._webhook_allow_private,
            )
        except egress.DestinationRefused as error:
            raise ApplicationError(
                f"webhook destination refused: {error}",
                type=ActivityErrorType.PERMANENT_NOTIFICATION_ERROR.value,
                non_retryable=True,
            ) from error
        if response.is_success:
            return
        retryable = response.status_code >= 500 or response.status_code in (408, 429)
        raise ApplicationError(
            f"webhook answered {response.status_code}",
            type=None if retryable else ActivityErrorType.PERMANENT_NOTIFICATION_ERROR.value,
            non_retryable=not retryable,
        )
