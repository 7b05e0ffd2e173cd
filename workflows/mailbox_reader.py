"""The IMAP reader of one sending mailbox: a durable cursor and a loop of `read_mailbox` calls.

`MailboxReaderWorkflow` (id `inbound-mailbox:<address>`, started by every worker for every mailbox
with an `imap` block, `worker.mailbox_readers`) keeps its `MailboxCursor` in its state and calls
the `read_mailbox` activity (`activities.inbound`) again and again: each call waits for new mail
(IDLE, or polls), applies a bounded batch in UID order and answers the cursor after it. The
activity heartbeats the cursor after each message, so an attempt that is lost (its worker died)
resumes where it stopped, and retries an outage until it is over; a message is never skipped
unrecorded and, the pipeline being idempotent per message, never applied twice. Every
`ITERATIONS_PER_RUN` reads (or when Temporal suggests it) the run continues as new with the
cursor, totals and recent problems.

A mailbox taken out of the settings: the activity answers `configured=False`; after
`unconfigured_checks_to_end` such answers in a row, `unconfigured_recheck_seconds` apart, the
workflow ends with its cursor as its result, which a reader started again later picks up.

Deterministic: no I/O, no clock but `workflow.now()`.
"""

from __future__ import annotations

from dataclasses import replace

from temporalio import workflow
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    # `import workflows.x as x`: passed through, not re-imported per run (workflows/campaign.py).
    import workflows.mailbox_types as types


@workflow.defn(name=types.MAILBOX_READER_WORKFLOW_TYPE)
class MailboxReaderWorkflow:
    """Reads one mailbox for as long as it is configured (module docstring)."""

    def __init__(self) -> None:
        self._mailbox = ""
        self._cursor: types.MailboxCursor | None = None
        self._totals = types.ReadCounts()
        self._problems: list[types.ReadProblem] = []
        self._last_read_at = ""
        self._unconfigured = 0

    @workflow.run
    async def run(self, input: types.MailboxReaderInput) -> types.MailboxReaderResult:
        """Reads until the mailbox has been unconfigured `unconfigured_checks_to_end` times in a
        row; continues as new every `ITERATIONS_PER_RUN` reads."""
        self._mailbox = input.mailbox
        self._cursor = input.cursor
        self._totals = replace(input.totals)
        self._problems = list(input.recent_problems)[-types.RECENT_PROBLEMS_KEPT :]
        more = input.more
        reads = 0
        self._publish()
        while True:
            try:
                result: types.ReadMailboxResult = await workflow.execute_activity(
                    types.READ_MAILBOX_ACTIVITY,
                    types.ReadMailboxRequest(self._mailbox, self._cursor, wait=not more),
                    result_type=types.ReadMailboxResult,
                    start_to_close_timeout=types.READ_START_TO_CLOSE,
                    heartbeat_timeout=types.READ_HEARTBEAT_TIMEOUT,
                    retry_policy=types.READ_RETRY,
                )
            except ActivityError as error:
                # The policy retries every failure; only one raised non-retryable by mistake
                # gets here. The cursor is unchanged: wait, then read again.
                workflow.logger.error("reading %s failed: %s", self._mailbox, error.cause)
                await workflow.sleep(types.AFTER_READ_FAILED)
                continue
            self._last_read_at = workflow.now().isoformat()
            if not result.configured:
                self._unconfigured += 1
                self._publish()
                if self._unconfigured >= input.unconfigured_checks_to_end:
                    workflow.logger.info(
                        "mailbox %s is no longer configured: its reader ends", self._mailbox
                    )
                    return types.MailboxReaderResult(self._mailbox, self._cursor, self._totals)
                await workflow.sleep(input.unconfigured_recheck_seconds)
                continue
            self._unconfigured = 0
            self._cursor = result.cursor
            self._totals.add(result.counts)
            self._problems = (self._problems + result.problems)[-types.RECENT_PROBLEMS_KEPT :]
            more = result.more
            reads += 1
            self._publish()
            if reads >= types.ITERATIONS_PER_RUN or workflow.info().is_continue_as_new_suggested():
                workflow.continue_as_new(
                    replace(
                        input,
                        cursor=self._cursor,
                        more=more,
                        totals=self._totals,
                        recent_problems=self._problems,
                    )
                )

    @workflow.query
    def status(self) -> types.MailboxReaderStatus:
        """Where reading stands: cursor, totals, recent problems (`MailboxReaderStatus`)."""
        return types.MailboxReaderStatus(
            mailbox=self._mailbox,
            cursor=self._cursor,
            totals=self._totals,
            recent_problems=list(self._problems),
            last_read_at=self._last_read_at,
            unconfigured_checks=self._unconfigured,
        )

    def _publish(self) -> None:
        """The Web UI's current details: the counts, the cursor and the last problems."""
        totals, cursor = self._totals, self._cursor
        lines = [
            f"**IMAP reader of {self._mailbox}**",
            f"{totals.applied} applied, {totals.duplicates} seen before, "
            f"{totals.problems} moved past without applying",
            "cursor: "
            + (
                f"UIDVALIDITY {cursor.uidvalidity}, last UID {cursor.last_uid}"
                if cursor is not None
                else "none yet (first read)"
            ),
        ]
        if self._last_read_at:
            lines.append(f"last read ended {self._last_read_at}")
        if self._unconfigured:
            lines.append(f"not in this worker's settings ({self._unconfigured} reads in a row)")
        for problem in self._problems[-5:]:
            lines.append(
                f"- UID {problem.uid}: {problem.reason}"
                + (f" ({problem.detail})" if problem.detail else "")
            )
        workflow.set_current_details("\n".join(lines))
