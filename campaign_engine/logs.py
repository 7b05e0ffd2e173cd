"""Log set-up shared by every process: JSON lines (one object each) or plain key=value text."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from contextvars import ContextVar, Token
from datetime import UTC, datetime
from typing import Any, Literal

from opentelemetry import trace

LogFormat = Literal["json", "text"]

# Fields a record may carry (`extra=`, a bound request, a Temporal workflow or activity); the
# same names as everywhere else. The API key itself is never one of them: only its id.
FIELDS = (
    "trace_id",
    "key_id",
    "account_group_id",
    "campaign_id",
    "workflow_instance_id",
    "workflow_id",
    "activity_type",
    "method",
    "path",
    "status",
    "duration_ms",
)

_bound: ContextVar[dict[str, Any] | None] = ContextVar("log_fields", default=None)


def bind_request(**fields: Any) -> Token[dict[str, Any] | None]:
    """Starts the current request's fields: every record logged while it runs carries them."""
    return _bound.set({name: value for name, value in fields.items() if value is not None})


def unbind_request(token: Token[dict[str, Any] | None]) -> None:
    """Ends the request's fields, restoring what was bound before `bind_request`."""
    _bound.reset(token)


def bind(**fields: Any) -> None:
    """Adds fields to the current request's (learned as it runs: the key id, the path ids)."""
    current = _bound.get()
    if current is not None:
        current.update({name: value for name, value in fields.items() if value is not None})


def _temporal_fields(record: logging.LogRecord) -> dict[str, Any]:
    """Workflow and activity loggers of the SDK attach these dicts; the ids are in the workflow id.

    Workflow ids read `campaign:{account_group_id}:{campaign_id}:{workflow_instance_id}`
    (`campaign_engine.ids.workflow_id_for`).
    """
    details: Mapping[str, Any] | None = getattr(record, "temporal_activity", None) or getattr(
        record, "temporal_workflow", None
    )
    if not details:
        return {}
    workflow_id = str(details.get("workflow_id", ""))
    fields: dict[str, Any] = {"workflow_id": workflow_id or None}
    if "activity_type" in details:
        fields["activity_type"] = details["activity_type"]
    parts = workflow_id.split(":")
    if len(parts) == 4 and parts[0] == "campaign":
        fields.update(
            account_group_id=parts[1], campaign_id=parts[2], workflow_instance_id=parts[3]
        )
    return fields


def _current_trace_id() -> str | None:
    context = trace.get_current_span().get_span_context()
    return format(context.trace_id, "032x") if context.is_valid else None


def record_fields(record: logging.LogRecord) -> dict[str, Any]:
    """The known fields of a record, from the request, the Temporal context and `extra=`."""
    fields: dict[str, Any] = {**(_bound.get() or {}), **_temporal_fields(record)}
    for name in FIELDS:
        value = getattr(record, name, None)
        if value is not None:
            fields[name] = value
    if "trace_id" not in fields:
        trace_id = _current_trace_id()
        if trace_id is not None:
            fields["trace_id"] = trace_id
    return {name: fields[name] for name in FIELDS if fields.get(name) is not None}


class KeyValueFormatter(logging.Formatter):
    """Plain log lines with the known fields appended as key=value."""

    def format(self, record: logging.LogRecord) -> str:
        """The standard line, then ` name=value` for each known field of the record."""
        line = super().format(record)
        extras = [f"{name}={value}" for name, value in record_fields(record).items()]
        return " ".join([line, *extras])


class JsonFormatter(logging.Formatter):
    """One JSON object per line: timestamp, level, logger, message, then the known fields."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as one JSON object (UTC timestamp in milliseconds, non-ASCII kept as is),
        with `exception` and `stack` when the record has them."""
        entry: dict[str, Any] = {
            "timestamp": datetime.fromtimestamp(record.created, UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            **record_fields(record),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


def configure(level: str, log_format: LogFormat = "text") -> None:
    """Logs to stderr in `log_format` at `level` (a name, e.g. `info`) and above, replacing the
    root logger's handlers; `httpx` and `alembic` log warnings and above only."""
    handler = logging.StreamHandler()
    handler.setFormatter(
        JsonFormatter()
        if log_format == "json"
        else KeyValueFormatter("%(asctime)s %(levelname)s %(name)s %(message)s")
    )
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
    # Their INFO lines repeat what our own request log says.
    for chatty in ("httpx", "alembic"):
        logging.getLogger(chatty).setLevel(logging.WARNING)
