"""Test helpers, apart from the fixtures (`tests/conftest.py`), as sdk-python keeps them.

`api`: a running API; `campaigns`: campaigns and instances through REST; `workflows`: handles,
the UI's details, typed failures, real worker processes; `waiting`: `assert_eventually`.
"""

from tests.helpers.api import ALL_PERMISSIONS, NO_KEY_CACHE, Api, running_api
from tests.helpers.campaigns import (
    TWO_STEP_CAMPAIGN,
    Campaign,
    approve,
    approve_ok,
    create_campaign,
    enrol,
    enrol_to_gate,
    instance_data,
    lead,
    lead_status,
    message_id_of,
    outbox_files,
    replace_campaign,
    wait_for_status,
)
from tests.helpers.waiting import assert_eventually
from tests.helpers.workflows import (
    assert_failed_with,
    current_details,
    handle_of,
    resumed_at,
    worker_process,
)

__all__ = [
    "ALL_PERMISSIONS",
    "NO_KEY_CACHE",
    "TWO_STEP_CAMPAIGN",
    "Api",
    "Campaign",
    "approve",
    "approve_ok",
    "assert_eventually",
    "assert_failed_with",
    "create_campaign",
    "current_details",
    "enrol",
    "enrol_to_gate",
    "handle_of",
    "instance_data",
    "lead",
    "lead_status",
    "message_id_of",
    "outbox_files",
    "replace_campaign",
    "resumed_at",
    "running_api",
    "wait_for_status",
    "worker_process",
]
