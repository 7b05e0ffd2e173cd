"""Identity: the ids of the reference page and the one place Temporal ids are derived from them.

Account groups, campaigns, leads and workflow instances are 24-character lowercase hex ids
(ObjectId style), as the reference page's examples show. A workflow instance's id is derived from
its account group, campaign and lead, so a lead is enrolled in a campaign once; its Temporal
workflow id is derived from all three path ids, so a caller scoped to one account group or
campaign can never name an instance of another — that id simply does not exist.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass

OBJECT_ID_PATTERN = r"^[0-9a-f]{24}$"
_OBJECT_ID = re.compile(OBJECT_ID_PATTERN)


def is_object_id(value: str) -> bool:
    """True for a 24-character lowercase hex id."""
    return _OBJECT_ID.match(value) is not None


def new_object_id() -> str:
    """A fresh random 24-character lowercase hex id."""
    return secrets.token_hex(12)


def workflow_id_for(account_group_id: str, campaign_id: str, workflow_instance_id: str) -> str:
    """The Temporal workflow id of an instance: `campaign:{ag}:{campaign}:{instance}`."""
    return f"campaign:{account_group_id}:{campaign_id}:{workflow_instance_id}"


def workflow_instance_id_for(account_group_id: str, campaign_id: str, lead_id: str) -> str:
    """One instance per lead and campaign: the first 24 hex digits of SHA-256 over the three ids,
    so a retried enrolment finds the first instance, never a twin."""
    digest = hashlib.sha256(f"{account_group_id}:{campaign_id}:{lead_id}".encode()).hexdigest()
    return digest[:24]


@dataclass(frozen=True)
class InstanceRef:
    """A workflow instance as the API names it: the three ids of its path."""

    account_group_id: str
    campaign_id: str
    workflow_instance_id: str

    @classmethod
    def of_lead(cls, account_group_id: str, campaign_id: str, lead_id: str) -> InstanceRef:
        """The instance a lead has (or would have) in a campaign."""
        return cls(
            account_group_id,
            campaign_id,
            workflow_instance_id_for(account_group_id, campaign_id, lead_id),
        )

    @property
    def workflow_id(self) -> str:
        """Its Temporal workflow id (`workflow_id_for`)."""
        return workflow_id_for(self.account_group_id, self.campaign_id, self.workflow_instance_id)


def message_id_for(workflow_id: str, step_id: str) -> str:
    """Deterministic per (instance, step): the key that makes delivery at most once.

    ':' is not allowed in a Message-ID's left part (RFC 5322 dot-atom), so the workflow id's
    separators become dots.
    """
    return f"<{workflow_id.replace(':', '.')}.{step_id}@campaign-engine>"


_MESSAGE_ID = re.compile(
    r"^<(campaign\.[0-9a-f]{24}\.[0-9a-f]{24}\.[0-9a-f]{24})\.[A-Za-z0-9_-]+@campaign-engine>$"
)


def workflow_id_of_message_id(message_id: str) -> str | None:
    """The workflow id a `message_id_for` Message-ID was made from, or None for any other
    text (step ids have no dots, so the instance's part ends at the last one)."""
    match = _MESSAGE_ID.match(message_id)
    return match.group(1).replace(".", ":") if match else None
