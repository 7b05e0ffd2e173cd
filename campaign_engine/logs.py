"""Log set-up shared by every process."""

from __future__ import annotations

import logging

# Request fields the API attaches to its log records (`extra=`); the same names as everywhere else.
FIELDS = ("trace_id", "key_id", "duration_ms")


class KeyValueFormatter(logging.Formatter):
    """Plain log lines with the request's fields appended as key=value."""

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extras = [
            f"{name}={getattr(record, name)}"
            for name in FIELDS
            if getattr(record, name, None) is not None
        ]
        return " ".join([line, *extras])


def configure(level: str) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(KeyValueFormatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
    # Their INFO lines repeat what our own request log says.
    for chatty in ("httpx", "alembic"):
        logging.getLogger(chatty).setLevel(logging.WARNING)
