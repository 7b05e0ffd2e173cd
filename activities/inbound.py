"""`read_mailbox`: one read of a sending mailbox over IMAP, each message handed to the pipeline.

The activity of `workflows.mailbox_reader.MailboxReaderWorkflow`. One call:

1. finds the mailbox's `imap` block in this worker's settings (none: answers `configured=False`
   and reads nothing);
2. resumes from the last heartbeat when it is a retry (the cursor through the last message
   handled), else from the request's cursor;
3. unless the last call said more was waiting, waits for new mail: IMAP IDLE where the server
   offers it, else a NOOP every `poll_interval_seconds`, up to `READ_WAIT_SECONDS` (or the poll
   interval when longer); nothing arrived: answers the same cursor;
4. fetches up to `BATCH_LIMIT` messages after the cursor (`inbound.imap.ImapReader`: read-only,
   EXAMINE and BODY.PEEK, nothing flagged, moved or deleted) and applies them in UID order with
   `InboundPipeline.process(raw, Scope(mailbox=address), source=imap)`, heartbeating the cursor
   through each, and answers the cursor after the batch.

What happens to each message (docs/how-to/imap-mailboxes.md):

- applied, or found applied before (`duplicate`: the pipeline is idempotent per message): counted,
  the cursor moves past it;
- refused by the pipeline (`MessageRefused`: not a message), or skipped by the reader (over the
  size limit, unreadable, expunged meanwhile): recorded as a `ReadProblem` (a log line with its
  UID and reason, the `campaign_inbound_imap_problems` metric), the cursor moves past it;
- an **outage** (`is_outage`: the store, Temporal, the network): the attempt fails and Temporal
  retries it with backoff, forever; the cursor stays before the message;
- any other error (or no answer within `APPLY_TIMEOUT_SECONDS`) strikes the message, which is
  tried again in the same attempt after a pause; the worker dying while applying it strikes it
  too (the next attempt finds it in the heartbeat). After `MAX_STRIKES` tries it is recorded
  (`failed`, with the error's class) and the reader moves on. A poison message never stalls the
  mailbox.

Logs and metrics carry UIDs, reasons and exception classes, never an address of a lead or any
content; the pipeline logs the lead only as a keyed hash.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Mapping
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import datetime
from typing import NoReturn

import sqlalchemy.exc
from temporalio import activity
from temporalio.converter import value_to_type
from temporalio.exceptions import ApplicationError, ApplicationErrorCategory
from temporalio.service import RPCError, RPCStatusCode

from campaign_engine.settings import ImapSettings
from inbound.imap import ImapBatch, ImapCursor, ImapError, ImapMessage, ImapReader, ImapSkipped
from inbound.matching import Scope
from inbound.parsing import MessageRefused
from inbound.pipeline import InboundPipeline, Outcome, Source
from workflows.mailbox_types import (
    CONFIGURATION_RETRY_DELAY,
    MAX_STRIKES,
    READ_HEARTBEAT_INTERVAL,
    READ_MAILBOX_ACTIVITY,
    READ_WAIT_SECONDS,
    MailboxCursor,
    ReadMailboxRequest,
    ReadMailboxResult,
    ReadProblem,
    ReadProgress,
)

logger = logging.getLogger("campaign_engine.inbound.imap")

BATCH_LIMIT = 100
"""Messages one call fetches and applies (and at most 64 MB of them, the reader's own bound). At
the pipeline's pace (tens of milliseconds a message) a full batch is applied in seconds;
a backlog is read in batches back to back, without waiting."""

APPLY_TIMEOUT_SECONDS = 120.0
"""Longest one message may take in the pipeline (it takes tens of milliseconds; its store and
Temporal calls have timeouts of their own, seconds). A message still running then ends the
attempt as a failure of that message (a strike), not as an outage: an await that never returns
would otherwise hold the mailbox for the attempt's whole 70 minutes, again and again."""

INBOUND_MESSAGES_METRIC = "campaign_inbound_messages"
"""The counter the API counts HTTP messages in (`api.metrics.INBOUND_MESSAGES`), here from the
worker's Temporal meter, `source` `imap`."""
PROBLEMS_METRIC = "campaign_inbound_imap_problems"
"""Messages the IMAP reader moved past without applying, by `reason`."""

IMAP_CONFIGURATION_ERROR = "IMAP_CONFIGURATION_ERROR"
"""The `ApplicationError` type of a read the mailbox's settings make fail (login, TLS, folder)."""
IMAP_UNAVAILABLE = "IMAP_UNAVAILABLE"
"""The type of a read the IMAP server made fail for now (connection, timeout, protocol)."""
INBOUND_OUTAGE = "INBOUND_OUTAGE"
"""The type of a read that stopped at a message because the store or Temporal failed."""

HEARTBEAT_FLUSH_SECONDS = READ_HEARTBEAT_INTERVAL.total_seconds() + 0.5
"""A retried attempt waits this long after heartbeating the first message it applies (the one
its predecessor may have died on) before applying it: heartbeats are sent in the background and
at most every 2 s, so without the pause a message that kills the worker at once could do so
before the server learns which message it was, and never be struck. Retries only: a first
attempt applies at full speed, so a crashing message costs one undetected death, then three
counted ones (`MAX_STRIKES`)."""

STRIKE_PAUSE_SECONDS = 1.0
"""Before a message that failed (not an outage) is tried again: this long times its strikes (1 s,
then 2 s), in the same attempt, so that its failures do not lengthen Temporal's backoff for a
later outage in the batch."""

_OUTAGE_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    sqlalchemy.exc.OperationalError,
    sqlalchemy.exc.InterfaceError,
    sqlalchemy.exc.InternalError,
    sqlalchemy.exc.ProgrammingError,
    sqlalchemy.exc.TimeoutError,
    sqlalchemy.exc.DisconnectionError,
    sqlalchemy.exc.ResourceClosedError,
)


def is_outage(error: BaseException) -> bool:
    """Whether `error`, raised while applying a message, is about our services rather than the
    message: then the read is retried until they are back, and the message is never skipped.

    Outages: the store unreachable, locked, timing out or missing its tables (SQLAlchemy's
    operational, interface, internal and programming errors, a pool timeout, a connection
    lost: a deployment that is wrong is wrong for every message); Temporal answering anything
    but `INVALID_ARGUMENT` (a payload it refuses is this message's); the network (`OSError`,
    `TimeoutError`). Anything else (a value the store refuses, a bug the message triggers) is
    the message's, and strikes it (`MAX_STRIKES`).
    """
    if isinstance(error, RPCError):
        return error.status != RPCStatusCode.INVALID_ARGUMENT
    if isinstance(error, sqlalchemy.exc.DBAPIError) and error.connection_invalidated:
        return True
    return isinstance(error, _OUTAGE_ERRORS)


def to_imap(cursor: MailboxCursor | None) -> ImapCursor | None:
    """The reader's cursor for the workflow's."""
    if cursor is None:
        return None
    return ImapCursor(cursor.uidvalidity, cursor.last_uid, cursor.resume_date, cursor.since)


def of_imap(cursor: ImapCursor) -> MailboxCursor:
    """The workflow's cursor for the reader's."""
    return MailboxCursor(cursor.uidvalidity, cursor.last_uid, cursor.resume_date, cursor.since)


def outcome_labels(outcome: Outcome) -> dict[str, str]:
    """The `campaign_inbound_messages` labels of an outcome, as `api.metrics.count_inbound` gives
    them: `matched_by` is `none:<reason>` for a message that matched nothing."""
    matched_by = (
        outcome.matched.matched_by.value
        if outcome.matched is not None
        else f"none:{outcome.no_match.value if outcome.no_match else 'unknown'}"
    )
    return {
        "source": Source.IMAP.value,
        "classification": outcome.classification.value,
        "matched_by": matched_by,
        "action": outcome.action.value,
    }


@dataclass(frozen=True)
class _Item:
    """One UID of a batch: a message to apply, or one the reader skipped."""

    uid: int
    message: ImapMessage | None
    skipped: ImapSkipped | None


def _items(batch: ImapBatch) -> list[_Item]:
    """The batch's messages and skipped records together, in UID order."""
    items = [_Item(m.uid, m, None) for m in batch.messages]
    items += [_Item(s.uid, None, s) for s in batch.skipped]
    return sorted(items, key=lambda item: item.uid)


def _received_at(message: ImapMessage) -> datetime | None:
    """The message's INTERNALDATE, for the pipeline's `received_at` (None: the pipeline's now)."""
    try:
        return datetime.fromisoformat(message.received_at) if message.received_at else None
    except ValueError:
        return None


class MailboxActivities:
    """`read_mailbox` for the mailboxes of this worker's settings.

    `pipeline` applies each message (built with the worker's Temporal client and store);
    `mailboxes` the `imap` block of each mailbox read, by lowercase address; `max_message_bytes`
    the largest message fetched (larger ones are recorded, `too_large`). `wait_seconds` and
    `batch_limit` as `READ_WAIT_SECONDS` and `BATCH_LIMIT`; `reader_factory` builds an
    `ImapReader` for a block (tests swap it). The blocking IMAP calls run in a thread pool of
    two threads per mailbox (a wait holds one for its whole length), made on first use.
    """

    def __init__(
        self,
        pipeline: InboundPipeline,
        mailboxes: Mapping[str, ImapSettings],
        *,
        max_message_bytes: int,
        wait_seconds: float = READ_WAIT_SECONDS,
        batch_limit: int = BATCH_LIMIT,
        reader_factory: Callable[..., ImapReader] = ImapReader,
    ) -> None:
        self._pipeline = pipeline
        self._mailboxes = dict(mailboxes)
        self._max_message_bytes = max_message_bytes
        self._wait_seconds = wait_seconds
        self._batch_limit = batch_limit
        self._reader_factory = reader_factory
        self._readers: dict[str, ImapReader] = {}
        self._executor: Executor | None = None

    def _reader(self, mailbox: str, settings: ImapSettings) -> ImapReader:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(
                max_workers=max(2, 2 * len(self._mailboxes)), thread_name_prefix="imap"
            )
        if mailbox not in self._readers:
            self._readers[mailbox] = self._reader_factory(
                settings, max_message_bytes=self._max_message_bytes, executor=self._executor
            )
        return self._readers[mailbox]

    @activity.defn(name=READ_MAILBOX_ACTIVITY)
    async def read_mailbox(self, request: ReadMailboxRequest) -> ReadMailboxResult:
        """One read of `request.mailbox` (module docstring). Raises an `ApplicationError`, to be
        retried, when IMAP, the store or Temporal fails; returns otherwise."""
        settings = self._mailboxes.get(request.mailbox)
        if settings is None:
            return ReadMailboxResult(configured=False, cursor=request.cursor)
        read = _Read(self, request, settings, self._reader(request.mailbox, settings))
        async with read.heartbeating():
            return await read.run()


class _Read:
    """The state of one `read_mailbox` attempt: its progress, heartbeated as it changes."""

    def __init__(
        self,
        activities: MailboxActivities,
        request: ReadMailboxRequest,
        settings: ImapSettings,
        reader: ImapReader,
    ) -> None:
        self._activities = activities
        self._request = request
        self._settings = settings
        self._reader = reader
        self._scope = Scope(mailbox=request.mailbox)
        self._meter = activity.metric_meter()
        self._messages = self._meter.create_counter(
            INBOUND_MESSAGES_METRIC,
            "Inbound messages applied, by source, classification, what matched them and the "
            "action.",
        )
        self._problems = self._meter.create_counter(
            PROBLEMS_METRIC, "Messages the IMAP reader moved past without applying, by reason."
        )
        self._applied_one = False
        resumed = _resumed_progress()
        self.resumed = resumed is not None
        self.progress = resumed or ReadProgress(cursor=request.cursor)

    # -- heartbeats --------------------------------------------------------------------------

    def beat(self) -> None:
        """Heartbeats the progress now (the worker throttles what it sends to every 2 s, always
        sending the latest)."""
        activity.heartbeat(self.progress)

    @contextlib.asynccontextmanager
    async def heartbeating(self) -> AsyncIterator[None]:
        """Heartbeats every `READ_HEARTBEAT_INTERVAL` while the block runs (a wait, a slow store),
        so Temporal can tell a live read from a dead worker and bring a cancellation."""

        async def beat_forever() -> None:
            while True:
                await asyncio.sleep(READ_HEARTBEAT_INTERVAL.total_seconds())
                self.beat()

        task = asyncio.create_task(beat_forever())
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    # -- the read ------------------------------------------------------------------------------

    async def run(self) -> ReadMailboxResult:
        """Steps 2 to 4 of the module docstring."""
        self._strike_the_message_an_earlier_attempt_ended_on()
        cursor = self.progress.cursor
        if self._request.wait and not self.resumed and not await self._wait(cursor):
            return self._result(more=False)
        try:
            batch = await self._reader.fetch_new(to_imap(cursor), self._activities._batch_limit)
        except ImapError as error:
            raise _imap_failure(error) from None
        resume_date = _starting_resume_date(cursor, batch)
        uidvalidity = batch.cursor.uidvalidity
        if cursor is None or batch.restarted:
            # The same read as a cursor, so that a message this read ends on can be moved past.
            self.progress.cursor = MailboxCursor(uidvalidity, 0, resume_date, batch.since)
        for item in _items(batch):
            if activity.is_worker_shutdown():
                # Stop between messages; the next read (on another worker) goes on from here.
                return self._result(more=True)
            if item.message is not None:
                await self._apply(item.message, uidvalidity)
                # INTERNALDATE, UTC: a restart after a UIDVALIDITY change reads from the day
                # before the last message applied.
                resume_date = item.message.received_at[:10] or resume_date
            else:
                assert item.skipped is not None
                skipped = item.skipped
                self._record(ReadProblem(skipped.uid, uidvalidity, skipped.reason, skipped.detail))
            self.progress.cursor = MailboxCursor(uidvalidity, item.uid, resume_date, batch.since)
            self.progress.current_uid = None
            self.progress.strikes = 0
            self.progress.last_error = ""
            self.beat()
        self.progress.cursor = of_imap(batch.cursor)
        return self._result(more=batch.more)

    def _strike_the_message_an_earlier_attempt_ended_on(self) -> None:
        """A resumed attempt that finds `current_uid` set: the attempt before ended on that
        message (its worker died, or it was lost while pausing between tries). One more strike;
        at `MAX_STRIKES` it is recorded as `failed` and the cursor moves past it."""
        progress = self.progress
        if progress.current_uid is None:
            return
        progress.strikes += 1
        if progress.strikes < MAX_STRIKES or progress.cursor is None:
            return  # (a cursor is always set before a message is applied: `run`)
        uid = progress.current_uid
        self._record(
            ReadProblem(
                uid,
                progress.cursor.uidvalidity,
                "failed",
                progress.last_error or "the read ended on it without an error (worker lost)",
                attempts=progress.strikes,
            )
        )
        progress.cursor = replace(progress.cursor, last_uid=uid)
        progress.current_uid = None
        progress.strikes = 0
        progress.last_error = ""
        self.beat()

    async def _wait(self, cursor: MailboxCursor | None) -> bool:
        """Whether mail arrived past `cursor` within the wait; False at once when the worker
        shuts down (the read answers, and the next one runs on another worker)."""
        seconds = max(self._activities._wait_seconds, self._settings.poll_interval_seconds)
        waiting = asyncio.ensure_future(self._reader.wait_for_new(to_imap(cursor), seconds))
        shutdown = asyncio.ensure_future(activity.wait_for_worker_shutdown())
        try:
            await asyncio.wait({waiting, shutdown}, return_when=asyncio.FIRST_COMPLETED)
            if not waiting.done():
                return False
            try:
                return waiting.result()
            except ImapError as error:
                raise _imap_failure(error) from None
        finally:
            for task in (waiting, shutdown):
                if not task.done():
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError, ImapError):
                        await task

    async def _apply(self, message: ImapMessage, uidvalidity: int) -> None:
        """Hands one message to the pipeline and counts what it did. A refusal is recorded; an
        outage raises (the attempt fails and is retried; the message is not struck); any other
        error strikes the message and it is tried again after `STRIKE_PAUSE_SECONDS` x strikes,
        until `MAX_STRIKES`, when it is recorded as `failed`."""
        progress = self.progress
        if progress.current_uid != message.uid:
            progress.current_uid, progress.strikes, progress.last_error = message.uid, 0, ""
        if not self._applied_one and activity.info().attempt > 1:
            self.beat()
            await asyncio.sleep(HEARTBEAT_FLUSH_SECONDS)
        self._applied_one = True
        while True:
            self.beat()
            bound = asyncio.timeout(APPLY_TIMEOUT_SECONDS)
            try:
                async with bound:
                    outcome = await self._activities._pipeline.process(
                        message.raw,
                        self._scope,
                        source=Source.IMAP,
                        received_at=_received_at(message),
                    )
                break
            except MessageRefused as refused:
                reason = f"refused:{refused.reason.value}"
                self._record(ReadProblem(message.uid, uidvalidity, reason))
                return
            except Exception as error:
                name = type(error).__name__
                if bound.expired():
                    name = f"took over {APPLY_TIMEOUT_SECONDS:.0f} s"
                elif is_outage(error):
                    self._stop_for_outage(message.uid, name, error)
                progress.strikes += 1
                progress.last_error = name
                self.beat()
                logger.error(
                    "IMAP reader of %s: UID %d failed (%s), try %d of %d",
                    self._request.mailbox,
                    message.uid,
                    name,
                    progress.strikes,
                    MAX_STRIKES,
                    exc_info=True,
                )
                if progress.strikes >= MAX_STRIKES:
                    self._record(
                        ReadProblem(
                            message.uid, uidvalidity, "failed", name, attempts=progress.strikes
                        )
                    )
                    return
                await asyncio.sleep(STRIKE_PAUSE_SECONDS * progress.strikes)
        if outcome.duplicate:
            progress.counts.duplicates += 1
        else:
            progress.counts.applied += 1
            self._messages.add(1, outcome_labels(outcome))

    def _stop_for_outage(self, uid: int, name: str, error: Exception) -> NoReturn:
        """Ends the attempt at `uid` for an outage: not the message's fault, so it is not struck
        (`current_uid` cleared, heartbeated before the failure) and is applied once the store or
        Temporal is back. Temporal retries the attempt with `READ_RETRY`'s backoff."""
        self.progress.current_uid = None
        self.beat()
        logger.warning(
            "IMAP reader of %s: stopped at UID %d, %s; retrying", self._request.mailbox, uid, name
        )
        raise ApplicationError(
            f"applying UID {uid} failed: {name} (an outage: retried)", type=INBOUND_OUTAGE
        ) from error

    def _record(self, problem: ReadProblem) -> None:
        """A message moved past without applying: counted, logged (UID and reason only)."""
        self.progress.counts.problems += 1
        self.progress.problems.append(problem)
        self._problems.add(1, {"reason": problem.reason.split(":")[0]})
        logger.warning(
            "IMAP reader of %s: UID %d (UIDVALIDITY %d) not applied: %s%s",
            self._request.mailbox,
            problem.uid,
            problem.uidvalidity,
            problem.reason,
            f" ({problem.detail})" if problem.detail else "",
        )

    def _result(self, *, more: bool) -> ReadMailboxResult:
        return ReadMailboxResult(
            configured=True,
            cursor=self.progress.cursor,
            more=more,
            counts=self.progress.counts,
            problems=self.progress.problems,
        )


def _resumed_progress() -> ReadProgress | None:
    """The last heartbeat of an earlier attempt of this call, or None (a first attempt, or
    details this code cannot read: the request's cursor is then the safe start)."""
    details = activity.info().heartbeat_details
    if not details:
        return None
    try:
        progress = value_to_type(ReadProgress, details[0], [])
    except Exception:
        logger.warning("read_mailbox: unreadable heartbeat details; starting from the request")
        return None
    return progress if isinstance(progress, ReadProgress) else None


def _starting_resume_date(cursor: MailboxCursor | None, batch: ImapBatch) -> str:
    """The `resume_date` before the batch's first message: the cursor's for a read after it;
    the search's date for a first read or a restart."""
    if cursor is not None and not batch.restarted:
        return cursor.resume_date
    return batch.since or batch.cursor.resume_date


def _imap_failure(error: ImapError) -> ApplicationError:
    """The attempt's failure for an IMAP error: retried with the policy's backoff, or, when the
    settings are wrong (login, TLS, folder), every `CONFIGURATION_RETRY_DELAY`.

    An outage or a wrong setting is expected, not a bug: it is logged here once per attempt as
    one line (the error's class and its message, which names host, port and step, never a
    secret), and the failure is `BENIGN`, so the SDK does not log it again with a traceback
    each retry."""
    kind = IMAP_UNAVAILABLE if error.retryable else IMAP_CONFIGURATION_ERROR
    logger.warning(
        "read_mailbox: %s: %s (%s)",
        type(error).__name__,
        error,
        "retried with backoff"
        if error.retryable
        else f"fix the mailbox's imap settings; retried every {CONFIGURATION_RETRY_DELAY}",
    )
    return ApplicationError(
        str(error),
        type=kind,
        next_retry_delay=None if error.retryable else CONFIGURATION_RETRY_DELAY,
        category=ApplicationErrorCategory.BENIGN,
    )
