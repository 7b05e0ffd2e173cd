"""Plain data and call options of the IMAP mailbox reader (`workflows.mailbox_reader`).

One `MailboxReaderWorkflow` per configured sending mailbox keeps where the reading stands (a
`MailboxCursor`: the folder's UIDVALIDITY and the last UID applied) in its own state, and runs the
`read_mailbox` activity (`activities.inbound`) in a loop: wait for new mail (IDLE, or NOOP polls),
fetch a bounded batch, hand each message to the inbound pipeline in UID order. Deterministic:
constants and dataclasses only, nothing of ours but `workflows`.

Why a workflow per mailbox rather than a Temporal Schedule (docs/how-to/imap-mailboxes.md): the
cursor lives in the workflow's own durable state, so it needs no table; one workflow id
per mailbox means two reads of one mailbox never overlap; and an activity can hold an IMAP IDLE
open, so a reply is applied about a second after it lands, where a schedule's latency is its
interval and every tick is a whole workflow execution.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

from temporalio.common import RetryPolicy

from workflows.activity_options import HEARTBEAT_INTERVAL, HEARTBEAT_TIMEOUT

MAILBOX_READER_WORKFLOW_TYPE = "MailboxReaderWorkflow"
READ_MAILBOX_ACTIVITY = "read_mailbox"
WORKFLOW_ID_PREFIX = "inbound-mailbox:"


def mailbox_reader_id(mailbox: str) -> str:
    """The reader's workflow id: `inbound-mailbox:<lowercase address>`, one per mailbox. The
    address is the deployment's own sending mailbox (a setting), never a lead's."""
    return f"{WORKFLOW_ID_PREFIX}{mailbox.lower()}"


# --- the cursor and what a read found -------------------------------------------------------------


@dataclass
class MailboxCursor:
    """Where reading stands: `inbound.imap.ImapCursor` as plain data the workflow keeps.

    `uidvalidity` the folder's UIDVALIDITY; every message up to `last_uid` has been applied,
    recorded as a problem, or left out on purpose (older than the first read's backfill);
    `resume_date` (ISO date, UTC) the day a read restarts from should UIDVALIDITY change; `since`
    (ISO date) while a first read or a restart has more to catch up, else None.
    """

    uidvalidity: int
    last_uid: int
    resume_date: str
    since: str | None = None


@dataclass
class ReadProblem:
    """A message the reader moved past without applying it: `uid` under `uidvalidity`, `reason`
    (`refused:<why>` the pipeline said it is not a message; `too_large`, `fetch_failed`,
    `vanished`, `connection_lost` from the IMAP reader; `failed` it failed `attempts` times),
    `detail` a response code, a refusal reason or an exception's class: never content or an
    address."""

    uid: int
    uidvalidity: int
    reason: str
    detail: str = ""
    attempts: int = 1


@dataclass
class ReadCounts:
    """Messages per outcome: `applied` (processed now), `duplicates` (processed before: nothing
    applied again), `problems` (moved past without applying: `ReadProblem`)."""

    applied: int = 0
    duplicates: int = 0
    problems: int = 0

    def add(self, other: ReadCounts) -> None:
        """Adds `other`'s counts to these."""
        self.applied += other.applied
        self.duplicates += other.duplicates
        self.problems += other.problems


@dataclass
class ReadMailboxRequest:
    """One `read_mailbox` call: read `mailbox` (a lowercase address of the settings) after
    `cursor` (None: the first read); `wait` False when the last call said more is waiting."""

    mailbox: str
    cursor: MailboxCursor | None
    wait: bool = True


@dataclass
class ReadMailboxResult:
    """What one `read_mailbox` call did. `configured` False: this worker's settings have no
    `imap` block for the mailbox (nothing was read). `cursor` is where the next call starts;
    `more` when messages are already waiting past it (call again without waiting); `problems`
    the messages moved past without applying, oldest first."""

    configured: bool
    cursor: MailboxCursor | None
    more: bool = False
    counts: ReadCounts = field(default_factory=ReadCounts)
    problems: list[ReadProblem] = field(default_factory=list)


@dataclass
class ReadProgress:
    """The `read_mailbox` heartbeat: what a retried attempt resumes from.

    `cursor` is through the last message handled (applied or recorded); `current_uid` the message
    being applied (None between messages, and after an outage that the attempt raised), so an
    attempt that finds it set knows the one before died on that message; `strikes` how many tries
    failed on it so far; `last_error` the class of the last error on it ("" when only deaths).
    `counts` and `problems` are the call's so far."""

    cursor: MailboxCursor | None
    current_uid: int | None = None
    strikes: int = 0
    last_error: str = ""
    counts: ReadCounts = field(default_factory=ReadCounts)
    problems: list[ReadProblem] = field(default_factory=list)


# --- the workflow's input, result and status ------------------------------------------------------


@dataclass
class MailboxReaderInput:
    """The reader's start (and continue-as-new) input: `mailbox` its lowercase address, `cursor`
    None for a first read (or the cursor of an earlier run), the totals and recent problems it
    carries, and `more` when messages were waiting at continue-as-new.

    `unconfigured_checks_to_end` reads in a row that find the mailbox gone from the settings end
    the reader, `unconfigured_recheck_seconds` apart (so one worker of a rolling deploy with
    older settings does not end it); tests shorten them."""

    mailbox: str
    cursor: MailboxCursor | None = None
    more: bool = False
    totals: ReadCounts = field(default_factory=ReadCounts)
    recent_problems: list[ReadProblem] = field(default_factory=list)
    unconfigured_checks_to_end: int = 3
    unconfigured_recheck_seconds: float = 300.0


@dataclass
class MailboxReaderResult:
    """How a reader ended (its mailbox left the settings): the cursor it reached, which a reader
    started again for the mailbox picks up (`worker.mailbox_readers`), and its totals."""

    mailbox: str
    cursor: MailboxCursor | None
    totals: ReadCounts


@dataclass
class MailboxReaderStatus:
    """The `status` query: the cursor, totals since the reader first started, the last
    `RECENT_PROBLEMS_KEPT` problems, when the last read ended (ISO 8601, UTC; "" before the
    first), and how many reads in a row found the mailbox unconfigured."""

    mailbox: str
    cursor: MailboxCursor | None
    totals: ReadCounts
    recent_problems: list[ReadProblem]
    last_read_at: str
    unconfigured_checks: int


RECENT_PROBLEMS_KEPT = 20
"""Problems the workflow keeps (and carries through continue-as-new) for the UI and the query;
older ones are in the logs and the `campaign_inbound_imap_problems` metric."""

ITERATIONS_PER_RUN = 250
"""Reads per run before continue-as-new. A read is six history events (activity scheduled,
started, completed; a workflow task), so a run stays near 1,500 events: cheap to replay when
the worker's cache evicts it, far below Temporal's 10,240-event warning. An idle mailbox reads
every `READ_WAIT_SECONDS`, so that is a new run about every eight hours."""

# --- how the workflow calls `read_mailbox` --------------------------------------------------------

READ_WAIT_SECONDS = 120.0
"""Longest one call waits for new mail (IDLE, or NOOP polls every `poll_interval_seconds`)
before it returns with nothing; a poll interval longer than this is waited whole. Below the
idle timeouts of common load balancers and NATs (Azure's 4 min, AWS NLB's 350 s), which drop a
silent IMAP connection without telling either end; and a login every 2 min per mailbox is far
below what providers throttle."""

READ_HEARTBEAT_INTERVAL = HEARTBEAT_INTERVAL
"""How often a read heartbeats while it waits or applies, the cursor after its last message with
each (2 s, the worker's heartbeat throttle)."""

READ_HEARTBEAT_TIMEOUT = HEARTBEAT_TIMEOUT
"""Silence after which Temporal counts a read as lost (its worker died) and starts another, which
resumes from the last heartbeat's cursor (10 s)."""

READ_START_TO_CLOSE = timedelta(hours=1, minutes=10)
"""Bounds one attempt: the longest wait (a poll interval of up to 1 h) plus applying a batch. A
dead worker is noticed by the heartbeat timeout, not by this."""

READ_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(minutes=5),
    maximum_attempts=0,
)
"""Never gives up: an outage (IMAP, the store, Temporal) retries 1 s, 2 s, ... 256 s, then every
5 min, until it is over, and the cursor never moves past a message not yet applied. A refused
login, TLS or a missing folder (`ImapError.retryable` False) is retried every
`CONFIGURATION_RETRY_DELAY` instead, so a fixed password or token is picked up without a
restart and a provider is not hammered with failing logins."""

CONFIGURATION_RETRY_DELAY = timedelta(minutes=10)
"""Between attempts when the mailbox's settings are wrong (login refused, TLS, folder)."""

MAX_STRIKES = 3
"""Tries that may fail on one message (an error other than an outage, no answer within the
activity's bound, or the worker dying while applying it) before it is recorded as a problem
(`failed`) and the reader moves past it: a poison message never stalls the mailbox, and an error
that passes gets two more chances first."""

AFTER_READ_FAILED = timedelta(minutes=1)
"""Should a read fail for good anyway (the retry policy never lets one), the workflow waits this
long and reads again, rather than end."""
