"""Which payload keys open workflows still need: when an old key can be retired.

A worker replays an evicted workflow from its whole history, so every payload of every open run
(its input, signals, activity results, failures) must stay decryptable until the run closes.
`payload_key_usage` asks visibility for the open runs (`ExecutionStatus = 'Running'`) and reads
each run's history raw, as Temporal stores it (no codec: only the `encryption-key-id` metadata
beside each payload is looked at, nothing is decrypted). It reads the whole history, not a sample:
a single payload under the old key anywhere in it is enough to stall the run if the key goes, and
continue-as-new keeps our histories short (docs/explanation/workflow.md, "Long lives").

A key the ring holds that no open run references can be retired. Closed runs kept for the
namespace's retention period still hold payloads under it; once it is gone, the UI and CLI show
those encrypted.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from temporalio.api.common.v1 import Header, Payload, SearchAttributes
from temporalio.api.history.v1 import MarkerRecordedEventAttributes
from temporalio.client import Client

from campaign_engine.codec import ENCODING, METADATA_ENCODING, METADATA_KEY_ID, PayloadKeyRing

OPEN_RUNS_QUERY = "ExecutionStatus = 'Running'"
EXAMPLES_PER_KEY = 5
UNENCRYPTED = "(unencrypted)"
_PAYLOAD = Payload.DESCRIPTOR.full_name
# Payloads the codec never sees, by design: search attributes (indexed in clear: ids and states
# only), headers (trace context), and the SDK core's own patch markers (`workflow.patched`: the
# patch id only), which it writes and reads itself.
_NOT_ENCODED = {SearchAttributes.DESCRIPTOR.full_name, Header.DESCRIPTOR.full_name}
PATCH_MARKER = "core_patch"


def payload_key_ids(message: Message) -> Iterator[str]:
    """The key id of every payload inside `message`, at any depth (maps and lists included);
    `UNENCRYPTED` for a payload without our encoding. Search attributes and headers, which the
    codec does not encode, are skipped, and so are patch markers."""
    if isinstance(message, MarkerRecordedEventAttributes) and message.marker_name == PATCH_MARKER:
        return
    for descriptor, value in message.ListFields():
        kind = descriptor.message_type
        if descriptor.type != FieldDescriptor.TYPE_MESSAGE or kind is None:
            continue
        if kind.full_name in _NOT_ENCODED:
            continue
        if kind.GetOptions().map_entry:
            if kind.fields_by_name["value"].type != FieldDescriptor.TYPE_MESSAGE:
                continue
            items: list[Message] = list(value.values())
        elif descriptor.is_repeated:
            items = list(value)
        else:
            items = [value]
        for item in items:
            if item.DESCRIPTOR.full_name == _PAYLOAD:
                assert isinstance(item, Payload)
                if item.metadata.get(METADATA_ENCODING) == ENCODING:
                    yield item.metadata.get(METADATA_KEY_ID, b"").decode(errors="replace")
                else:
                    yield UNENCRYPTED
            else:
                yield from payload_key_ids(item)


@dataclass
class KeyUsage:
    """Open runs per key id. `as_json()` is what `keys payload-key-usage` prints."""

    ring: list[str]
    open_runs: int = 0
    runs_by_key: dict[str, int] = field(default_factory=dict)
    examples: dict[str, list[str]] = field(default_factory=dict)

    def note(self, workflow_id: str, key_ids: set[str]) -> None:
        """Counts one open run whose history references `key_ids`; keeps up to `EXAMPLES_PER_KEY`
        workflow ids per key."""
        self.open_runs += 1
        for key_id in key_ids:
            self.runs_by_key[key_id] = self.runs_by_key.get(key_id, 0) + 1
            examples = self.examples.setdefault(key_id, [])
            if len(examples) < EXAMPLES_PER_KEY:
                examples.append(workflow_id)

    @property
    def retirable(self) -> list[str]:
        """Ring keys, other than the encrypting (first) one, that no open run references."""
        return [key_id for key_id in self.ring[1:] if key_id not in self.runs_by_key]

    @property
    def missing(self) -> list[str]:
        """Key ids open runs reference that the ring lacks: those runs cannot progress here."""
        return sorted(set(self.runs_by_key) - set(self.ring) - {UNENCRYPTED})

    def as_json(self) -> dict[str, Any]:
        """The report `keys payload-key-usage` prints: per ring key (and per missing key) its open
        runs, whether the ring holds it and example workflow ids, plus `retirable` and `missing`."""
        return {
            "ring": self.ring,
            "encryptsWith": self.ring[0],
            "openRuns": self.open_runs,
            "keys": {
                key_id: {
                    "openRuns": self.runs_by_key.get(key_id, 0),
                    "inRing": key_id in self.ring,
                    "examples": self.examples.get(key_id, []),
                }
                for key_id in [*self.ring, *self.missing]
            },
            "unencryptedRuns": self.runs_by_key.get(UNENCRYPTED, 0),
            "retirable": self.retirable,
            "missing": self.missing,
        }


async def payload_key_usage(
    client: Client, ring: PayloadKeyRing, *, concurrency: int = 8
) -> KeyUsage:
    """Reads every open run's history (at most `concurrency` at once) and counts, per key id,
    the runs with at least one payload under it. Temporal RPC errors propagate."""
    usage = KeyUsage(ring=ring.ids)
    limit = asyncio.Semaphore(concurrency)

    async def scan(workflow_id: str, run_id: str | None) -> None:
        async with limit:
            handle = client.get_workflow_handle(workflow_id, run_id=run_id)
            key_ids: set[str] = set()
            async for event in handle.fetch_history_events():
                key_ids.update(payload_key_ids(event))
            usage.note(workflow_id, key_ids)

    scans = [
        asyncio.create_task(scan(execution.id, execution.run_id))
        async for execution in client.list_workflows(OPEN_RUNS_QUERY)
    ]
    await asyncio.gather(*scans)
    return usage
