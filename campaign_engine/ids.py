"""Ids: 24-hex ObjectIds, as the reference page uses for account groups, campaigns, instances."""

from __future__ import annotations

import re
import secrets

OBJECT_ID_PATTERN = r"^[0-9a-f]{24}$"
_OBJECT_ID = re.compile(OBJECT_ID_PATTERN)


def is_object_id(value: str) -> bool:
    return _OBJECT_ID.match(value) is not None


def new_object_id() -> str:
    return secrets.token_hex(12)
