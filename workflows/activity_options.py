"""How the campaign workflow calls each of its activities: timeouts and retry policies.

One `ActivityCallOptions` per activity (`DRAFT`, `DELIVERY`, `NOTIFY`, `BUSINESS_DAYS`,
`RELEASE_SEND_SLOT`), each value with the reason it is what it is. Deterministic: constants only,
no settings, no I/O; the workflow passes them as keyword arguments of `execute_activity` /
`start_activity`.

Replay: an activity command's timeouts and retry policy are not compared when a history is
replayed, so changing a value here never breaks a running instance; an activity already
scheduled keeps the options it was scheduled with (its retries included) until it ends. Turning
an activity into a local activity, by contrast, changes the command and needs `workflow.patched`.

Every retry policy caps its attempts: a failure that a retry cannot mend (a calculation, a
refusal) must end, and the workflow decides what its end means (see each option).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from temporalio.common import RetryPolicy

from workflows.types import ActivityErrorType

HEARTBEAT_INTERVAL = timedelta(seconds=2)
"""How often a heartbeating activity (delivery, draft) heartbeats, from its start to its end (the
first beat one interval in: the heartbeat timeout runs from the start anyway, and most attempts
end sooner); the worker's heartbeat throttle is set to it (`worker.build_worker`), so a stop's
cancellation reaches a running attempt within about this long."""
HEARTBEAT_TIMEOUT = timedelta(seconds=10)
"""Silence after which Temporal counts a heartbeating attempt as lost (its worker died or its
event loop is stuck) and retries it: five intervals, so a worker busy for a few seconds is not
mistaken for a dead one."""


@dataclass(frozen=True)
class ActivityCallOptions:
    """The options of one activity call.

    `start_to_close` bounds one attempt, from the moment a worker starts it; `heartbeat` (None:
    the activity does not heartbeat) is the longest silence allowed between its heartbeats;
    `retry` decides what is retried, how soon and how often.
    """

    start_to_close: timedelta
    retry: RetryPolicy
    heartbeat: timedelta | None = None


DRAFT_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    maximum_interval=timedelta(minutes=1),
    maximum_attempts=10,
    non_retryable_error_types=[ActivityErrorType.TEMPLATE_RENDER_ERROR.value],
)
"""A template that fails for this lead fails the same way again (non-retryable, raised so by the
activity); what is retried is a lost worker, a heartbeat timeout, or a render queue that was full
(`RenderQueueFull`, retried after the queue's own estimate of its wait): ten attempts within
about four minutes of backoff, then the instance fails `DRAFT_FAILED`."""

DRAFT_START_TO_CLOSE = timedelta(minutes=15)
"""An attempt includes its wait for a render process: each worker renders at most
`RENDER_PROCESSES` templates at a time (`activities.templates.render_async`), and a draft that
arrives in a burst waits, heartbeating, for its turn, so a template's time budget is its own
render time (counted inside the render process), never the queue's. The worst wait on one
worker: 100 drafts (the SDK's default activity slots; `build_worker` sets none) x 2 templates x
6 s (`DRAFT_SECONDS` + `HARD_TIMEOUT_GRACE_SECONDS`, after which a render is killed) / 2 render
processes = 600 s, plus about a second to restart each killed process; 15 min holds that. A dead
worker is noticed by the heartbeat timeout, not by this. `tests/test_activity_options.py`
checks the arithmetic against those constants."""

DRAFT = ActivityCallOptions(
    start_to_close=DRAFT_START_TO_CLOSE, heartbeat=HEARTBEAT_TIMEOUT, retry=DRAFT_RETRY
)
"""`draft_content`: renders subject and body in the worker's render pool."""

DELIVERY_MAX_ATTEMPTS = 20
"""Attempts of one delivery (the instance GET shows it as `maximumAttempts`)."""
DELIVERY_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(minutes=5),
    maximum_attempts=DELIVERY_MAX_ATTEMPTS,
    # The activity raises these as non-retryable already; listed so the policy says so too.
    non_retryable_error_types=[
        ActivityErrorType.PERMANENT_DELIVERY_ERROR.value,
        ActivityErrorType.INVALID_ADDRESS.value,
        ActivityErrorType.COMPOSITION_ERROR.value,
        ActivityErrorType.SMTPUTF8_UNSUPPORTED.value,
        ActivityErrorType.INVALID_SEND_WINDOW.value,
    ],
)
"""Transient failures (SMTP 4xx, the server unreachable) back off 1 s, 2 s, ... 256 s, then every
5 min: the 20th and last attempt starts about 64 min (511 s + 11 x 300 s) after the first, long
enough for a restart or greylisting, short enough that a dead server is reported the same hour;
then the instance fails `DELIVERY_FAILED`."""

DELIVERY = ActivityCallOptions(
    start_to_close=timedelta(minutes=2), heartbeat=HEARTBEAT_TIMEOUT, retry=DELIVERY_RETRY
)
"""`deliver_message`: store reads, a mailbox slot, the ledger claim and the send. It heartbeats
from its start (the timeout runs from there), so a worker that dies anywhere in it is noticed in
`HEARTBEAT_TIMEOUT` and a stop reaches it before the hand-over; 2 min bounds an attempt stuck on a
live worker (a stalled database, an SMTP server that stops answering)."""

NOTIFY_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=2),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(minutes=10),
    maximum_attempts=10,
    non_retryable_error_types=[ActivityErrorType.PERMANENT_NOTIFICATION_ERROR.value],
)
"""A reviewer who misses a webhook still finds the gate in the UI or the API; after about an
hour of failures the notice is given up (logged), and the campaign never waits on it."""

NOTIFY = ActivityCallOptions(start_to_close=timedelta(seconds=30), retry=NOTIFY_RETRY)
"""`notify_pending_approval`: one signed POST, bounded by the webhook timeout (10 s by default)."""

BUSINESS_DAYS_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=10),
    maximum_attempts=5,
    non_retryable_error_types=[ActivityErrorType.INVALID_SEND_WINDOW.value],
)
"""A calculation of about a millisecond: the same input gives the same answer, so a retry helps
only when the attempt was lost (a worker died, a worker without the time zone data): five
attempts within about 15 s of backoff. An unusable window or zone is not retried at all. When
it fails for good, the instance fails `DELAY_FAILED` (its next send time cannot be known)."""

BUSINESS_DAYS = ActivityCallOptions(start_to_close=timedelta(seconds=10), retry=BUSINESS_DAYS_RETRY)
"""`business_days_later`: the end of a `businessDays` delay."""

RELEASE_SEND_SLOT_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=10),
    maximum_attempts=5,
)
"""One row deleted from the store: retried through a short outage (five attempts within about
15 s of backoff), then given up. A slot left behind only counts against its mailbox's cap on
that day (a later message waits for the next free slot); a stopped instance must not stay open
retrying it."""

RELEASE_SEND_SLOT = ActivityCallOptions(
    start_to_close=timedelta(seconds=30), retry=RELEASE_SEND_SLOT_RETRY
)
"""`release_send_slot`: gives back the mailbox slot of a stopped instance's waiting message.
When it fails for good the workflow logs a warning and ends the instance as stopped anyway."""

__all__ = [
    "BUSINESS_DAYS",
    "BUSINESS_DAYS_RETRY",
    "DELIVERY",
    "DELIVERY_MAX_ATTEMPTS",
    "DELIVERY_RETRY",
    "DRAFT",
    "DRAFT_RETRY",
    "DRAFT_START_TO_CLOSE",
    "HEARTBEAT_INTERVAL",
    "HEARTBEAT_TIMEOUT",
    "NOTIFY",
    "NOTIFY_RETRY",
    "RELEASE_SEND_SLOT",
    "RELEASE_SEND_SLOT_RETRY",
    "ActivityCallOptions",
]
