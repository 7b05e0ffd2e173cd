"""The review queue: a campaign's instances from Temporal's visibility store, newest gate first.

Shapes: `visibility_query` builds the list query from the path's ids and validated filters only
(every value is checked against its own rule — 24-hex id, `WorkflowStatus`, bool — and then
quoted; no caller text is ever concatenated in). `PageTokens` turns the position after a page's
last item into an opaque, signed `pageToken` and back; a token that was altered, forged, or
issued for another query is refused with `ValidationFailed` (400, `details: pageToken`).

Order: `GateOpenedAt` descending (newest gate first), instances that never opened a gate last,
ties by `workflowInstanceId`. Temporal's SQLite and SQL visibility stores refuse `ORDER BY`
("operation is not supported: 'ORDER BY' clause", tried on the dev server 1.32), so the API
reads every match of the scoped query (at most `MAX_SCAN`, 1,000 a visibility page) and sorts
them itself; the token is a keyset position, not a visibility page token, so a page never
repeats or skips an item that did not move.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from dataclasses import dataclass
from datetime import UTC, datetime

from api.errors import ValidationFailed
from api.execution_status import CLOSED_AS, OPEN_LEAD_STATUSES, VISIBILITY_NAMES
from campaign_engine.ids import is_object_id
from workflows.types import WorkflowStatus

MAX_SCAN = 10_000
"""Most visibility rows one queue request reads (one campaign's instances, after the filters)."""
DEFAULT_PAGE_SIZE = 20
MAX_PAGE_SIZE = 100


@dataclass(frozen=True)
class QueueFilters:
    """The queue's filters, already validated (None: not filtered)."""

    has_pending_approval: bool | None = None
    workflow_status: WorkflowStatus | None = None
    lead_id: str | None = None


@dataclass(frozen=True)
class QueueItem:
    """One instance as visibility indexes it."""

    workflow_instance_id: str
    lead_id: str | None
    workflow_status: WorkflowStatus | None
    latest_step: str | None
    has_pending_approval: bool
    gate_id: str | None
    gate_opened_at: datetime | None
    gate_expires_at: datetime | None

    def position(self) -> Position:
        """Where this item sorts (`Position`)."""
        return Position(self.gate_opened_at, self.workflow_instance_id)


@dataclass(frozen=True)
class Position:
    """A place in the queue's order: newest `gate_opened_at` first, None last, then id."""

    gate_opened_at: datetime | None
    workflow_instance_id: str

    def key(self) -> tuple[bool, float, str]:
        """The sort key: ascending order of it is the queue's order."""
        opened = self.gate_opened_at
        return (opened is None, -opened.timestamp() if opened else 0.0, self.workflow_instance_id)


def _quoted_id(value: str) -> str:
    # Defence in depth: the route validated it already; nothing but 24 hex reaches a query.
    if not is_object_id(value):
        raise ValueError(f"not an object id: {value!r}")
    return f"'{value}'"


def visibility_query(account_group_id: str, campaign_id: str, filters: QueueFilters) -> str:
    """The visibility list query of one campaign's instances with `filters`.

    Scoped by the path's ids (another account group's campaign simply matches nothing); runs
    that continued as new are left out (their successor is the instance). Only running
    executions have a pending approval: one terminated at its gate still indexes
    `HasPendingApproval = true`, and is listed under `hasPendingApproval=false` and the status
    its execution's end gives it (`_status_clause`). Raises `ValueError`
    for a value that is not what its filter allows (a bug: routes validate first).
    """
    clauses = [
        f"AccountGroupId = {_quoted_id(account_group_id)}",
        f"CampaignId = {_quoted_id(campaign_id)}",
        "ExecutionStatus != 'ContinuedAsNew'",
    ]
    if filters.has_pending_approval is True:
        clauses.append(f"HasPendingApproval = true AND ExecutionStatus = '{_RUNNING}'")
    elif filters.has_pending_approval is False:
        clauses.append(f"(HasPendingApproval = false OR ExecutionStatus != '{_RUNNING}')")
    if filters.workflow_status is not None:
        clauses.append(_status_clause(WorkflowStatus(filters.workflow_status)))
    if filters.lead_id is not None:
        clauses.append(f"LeadId = {_quoted_id(filters.lead_id)}")
    return " AND ".join(clauses)


_RUNNING = "Running"
_OPEN = ", ".join(f"'{status.value}'" for status in sorted(OPEN_LEAD_STATUSES))


def _status_clause(wanted: WorkflowStatus) -> str:
    """The visibility clause of instances whose lead reads `wanted` (`api.execution_status`):
    what the workflow indexed (`LeadWorkflowStatus`), unless the execution closed without the
    workflow saying so — a terminated, timed-out, failed or (before `cancel-as-stop`) cancelled
    execution still indexes `pending`."""
    if wanted in OPEN_LEAD_STATUSES:
        return f"LeadWorkflowStatus = '{wanted.value}' AND ExecutionStatus = '{_RUNNING}'"
    closing = sorted(
        VISIBILITY_NAMES[execution]
        for execution, (status, _) in CLOSED_AS.items()
        if status == wanted
    )
    if not closing:
        return f"LeadWorkflowStatus = '{wanted.value}'"
    names = ", ".join(f"'{name}'" for name in closing)
    return (
        f"(LeadWorkflowStatus = '{wanted.value}' OR "
        f"(LeadWorkflowStatus IN ({_OPEN}) AND ExecutionStatus IN ({names})))"
    )


class PageTokens:
    """Signs and reads `pageToken`s: base64url of `{"q", "t", "w"}` and an HMAC-SHA256 of it.

    `q` binds the token to its query (a token of another campaign or other filters is refused),
    `t`/`w` are the last item's `gateOpenedAt` (ISO-8601 or null) and `workflowInstanceId`.
    """

    def __init__(self, key: bytes) -> None:
        self._key = hashlib.sha256(b"campaign-engine page tokens:" + key).digest()

    def issue(self, query: str, after: Position) -> str:
        """The token of the page that starts after `after`."""
        payload = json.dumps(
            {
                "q": _query_digest(query),
                "t": after.gate_opened_at.isoformat() if after.gate_opened_at else None,
                "w": after.workflow_instance_id,
            },
            separators=(",", ":"),
        ).encode()
        signature = hmac.new(self._key, payload, hashlib.sha256).digest()
        return _b64(payload) + "." + _b64(signature)

    def read(self, query: str, token: str) -> Position:
        """The position a token names; `ValidationFailed` (400, `pageToken`) for any token we
        did not issue for this very query."""
        try:
            encoded_payload, encoded_signature = token.split(".")
            payload = _unb64(encoded_payload)
            signature = _unb64(encoded_signature)
        except ValueError as error:
            raise _bad_token() from error
        expected = hmac.new(self._key, payload, hashlib.sha256).digest()
        if not hmac.compare_digest(expected, signature):
            raise _bad_token()
        try:
            data = json.loads(payload)
            opened = datetime.fromisoformat(data["t"]) if data["t"] is not None else None
            instance_id = data["w"]
            digest = data["q"]
        except (ValueError, KeyError, TypeError) as error:
            raise _bad_token() from error
        if digest != _query_digest(query) or not isinstance(instance_id, str):
            raise _bad_token()
        if opened is not None and opened.tzinfo is None:
            opened = opened.replace(tzinfo=UTC)
        return Position(opened, instance_id)


def _query_digest(query: str) -> str:
    return hashlib.sha256(query.encode()).hexdigest()[:32]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    if not text or len(text) > 2000:
        raise ValueError("empty or too long")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _bad_token() -> ValidationFailed:
    return ValidationFailed(
        "pageToken: not a token this query issued; start again without it", details="pageToken"
    )


def page_of(
    items: list[QueueItem], after: Position | None, page_size: int
) -> tuple[list[QueueItem], Position | None]:
    """Sorts `items` in the queue's order and cuts the page after `after`; returns the page and
    the position to continue from (None on the last page)."""
    ordered = sorted(items, key=lambda item: item.position().key())
    if after is not None:
        start = after.key()
        ordered = [item for item in ordered if item.position().key() > start]
    page = ordered[:page_size]
    more = len(ordered) > page_size
    return page, page[-1].position() if more and page else None
