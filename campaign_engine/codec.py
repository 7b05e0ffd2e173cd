"""Payload encryption for everything we hand to Temporal: AES-256-GCM under a rotating key ring.

Temporal stores every workflow input, signal, query answer, activity argument and result, memo and
failure as a `Payload` in its history, unencrypted. Every client we build (API, worker, CLI,
bench, tests: `campaign_engine.temporal.connect`) carries `data_converter(settings)`, whose codec
replaces each payload by

    metadata: encoding = "binary/encrypted"
              encryption-key-id = <key id>            (which key of the ring)
              encryption-compression = "zlib"         (only when the inner bytes were compressed)
    data:     nonce (12 bytes) || AES-256-GCM ciphertext and tag of the serialized inner Payload

so the lead's e-mail, names, company and every draft reach Temporal's database only encrypted.
The metadata above is bound to the ciphertext as GCM associated data: a payload whose key id or
compression flag was altered fails authentication instead of decrypting under the wrong rules.

Nonces are 12 random bytes from `os.urandom` per payload, the length NIST SP 800-38D §8.2.2
recommends for random nonces; with random nonces it caps one key at 2^32 encryptions, so rotate
well before that (`campaign-engine keys rotate-payload-key`).

Keys: `CAMPAIGN_ENGINE_PAYLOAD_KEYS`, comma-separated `id:base64key` entries (32-byte keys). The
**first** entry encrypts; every entry decrypts. Without the setting, one key is generated on first
use in `<state dir>/payload-keys` (mode 0600, created with O_EXCL so two processes starting
together agree on one key), one `id:base64key` per line, newest first.

A payload under a key id the ring does not hold, or whose tag does not verify, raises
`PayloadKeyError` naming the key id: never a wrong value. In a worker that fails the workflow task,
which Temporal retries, so the instance waits (visibly, in the UI and the worker's log) until a
worker with the key picks it up. Payloads without our encoding (histories written before
encryption) pass through unchanged.

Search attributes are not payloads the codec sees: Temporal indexes them in clear, which is why
they carry ids and states only (`workflows/search_attributes.py`).

**Scopes: one data key per account group.** A payload of a campaign instance (workflow id
`campaign:{accountGroupId}:…`, known from the SDK's serialization context: the workflow of a
start, signal, query, activity or failure) is sealed under a key derived from the ring key for that
group alone — HKDF-SHA256 (RFC 5869) of the ring key with the group id in `info` — and carries

    metadata: encryption-account-group = <account group id>

which is also part of the associated data. The codec server (`api/routes/codec.py`) decodes such a
payload only for a caller whose key holds that group. Payloads of no account group (the mailbox
readers, calls without a workflow, and every payload written before scopes existed) are sealed
under the ring key itself, as before: the **deployment scope**, decoded by workers for any workflow
and by the codec server only for operators (keys of every account group). A worker reading a
campaign instance refuses a payload sealed for another account group (see strict mode): a key of
group B cannot produce input for group A's instances.

**Strict mode** (`payload_codec_strict`, on outside `make dev`): a payload without our encoding
is not passed through as it is but marked `encoding: binary/plaintext-unverified` (its own
encoding kept in `plaintext-encoding`), and so is a payload sealed for another account group than
its workflow's. `StrictPayloadConverter` then refuses to turn a marked payload into a workflow
input, activity argument or query argument: `ApplicationError` of type `PlaintextPayloadRefused`,
non-retryable, so a workflow started with an input nobody encrypted fails at once and does
nothing. Signal inputs (which the workflow takes untyped) arrive as a `RawValue` holding the
unmarked original, for the workflow to decide (`workflows.campaign`: operator signals apply,
`approve` is refused).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import fcntl
import os
import re
import secrets
import time
import zlib
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from temporalio.api.common.v1 import Payload
from temporalio.common import RawValue
from temporalio.converter import (
    ActivitySerializationContext,
    CompositePayloadConverter,
    DataConverter,
    DefaultFailureConverterWithEncodedAttributes,
    DefaultPayloadConverter,
    EncodingPayloadConverter,
    PayloadCodec,
    SerializationContext,
    WithSerializationContext,
    WorkflowSerializationContext,
)
from temporalio.exceptions import ApplicationError

from campaign_engine.private_files import make_private_dir, open_private
from campaign_engine.settings import Settings

ENCODING = b"binary/encrypted"
METADATA_ENCODING = "encoding"
METADATA_KEY_ID = "encryption-key-id"
METADATA_COMPRESSION = "encryption-compression"
METADATA_ACCOUNT_GROUP = "encryption-account-group"
# Strict mode's mark on a payload nobody encrypted (or sealed for another account group); the
# workflow package names the same strings (`workflows.campaign`), as it imports nothing of ours.
PLAINTEXT_ENCODING = b"binary/plaintext-unverified"
METADATA_PLAINTEXT_ENCODING = "plaintext-encoding"
METADATA_PLAINTEXT_REASON = "plaintext-reason"
PLAINTEXT_REFUSED_TYPE = "PlaintextPayloadRefused"
COMPRESSION_ZLIB = b"zlib"
NONCE_BYTES = 12
KEY_BYTES = 32
KEY_FILE = "payload-keys"
# From this many serialized bytes on, payloads are compressed before encryption. Measured on
# typical drafts (`python -m bench.codec`, docs/performance-history.md "Payload encryption"): at
# 1 KB zlib saves ~40 % (~450 B) for ~30 µs; below it a payload (ids, signals: 50-300 B) saves
# tens of bytes, no more than the compression flag's own metadata costs.
COMPRESSION_THRESHOLD_BYTES = 1024
# Level 1 keeps 90-95 % of level 6's savings on drafts at a quarter to a half of its time.
COMPRESSION_LEVEL = 1
_AAD_CONTEXT = b"campaign-engine/payload/v1"
_HKDF_INFO = b"campaign-engine/payload/v2/account-group\x00"
_CAMPAIGN_WORKFLOW_ID = re.compile(r"campaign:([0-9a-f]{24}):")
# Derived keys kept per process (key id, group) → cipher; the oldest go first.
_DERIVED_CACHE_ENTRIES = 4096
_KEY_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


class PayloadKeyError(ValueError):
    """A payload cannot be decrypted: its key id is unknown here, or its tag does not verify.

    Deliberately not a Temporal `ApplicationError`: in a worker, a non-retryable application error
    would fail the whole workflow, whereas any other exception fails only the workflow task, which
    Temporal retries once a worker with the right key runs.
    """

    def __init__(self, key_id: str, message: str) -> None:
        super().__init__(message)
        self.key_id = key_id


class KeyRingError(ValueError):
    """A key ring's text is malformed: the message says which entry and why (never the key)."""


@dataclass(frozen=True)
class PayloadKey:
    """One AES-256 key and the id recorded beside every payload it encrypts."""

    id: str
    secret: bytes

    def __repr__(self) -> str:  # never the key material, in logs or tracebacks
        return f"PayloadKey(id={self.id!r})"

    def entry(self) -> str:
        """The `id:base64key` form of settings and the key file."""
        return f"{self.id}:{base64.b64encode(self.secret).decode()}"


@dataclass(frozen=True)
class PayloadKeyRing:
    """Keys, newest first: `keys[0]` encrypts, every key decrypts."""

    keys: tuple[PayloadKey, ...]

    def __post_init__(self) -> None:
        if not self.keys:
            raise KeyRingError("a payload key ring needs at least one key")
        ids = [key.id for key in self.keys]
        duplicates = sorted({key_id for key_id in ids if ids.count(key_id) > 1})
        if duplicates:
            raise KeyRingError(f"payload key ids must be unique; repeated: {', '.join(duplicates)}")

    @property
    def primary(self) -> PayloadKey:
        """The key that encrypts: `keys[0]`."""
        return self.keys[0]

    @property
    def ids(self) -> list[str]:
        """The key ids, newest (encrypting) first."""
        return [key.id for key in self.keys]

    def get(self, key_id: str) -> PayloadKey | None:
        """The key with this id, or None when the ring lacks it."""
        return next((key for key in self.keys if key.id == key_id), None)

    def text(self, separator: str = ",") -> str:
        """The ring as `id:base64key` entries, newest first, joined by `separator` (`,` for
        settings, newline for the key file).

        The result holds the key material in clear.
        """
        return separator.join(key.entry() for key in self.keys)


def parse_key(entry: str) -> PayloadKey:
    """`id:base64key` → a key. Raises KeyRingError for a bad id or a key that is not 32 bytes."""
    key_id, colon, encoded = entry.strip().partition(":")
    key_id = key_id.strip()
    if not colon or not _KEY_ID.fullmatch(key_id):
        raise KeyRingError(
            f"payload key entry {key_id[:64]!r} must read `id:base64key`, the id 1-64 of "
            "A-Z a-z 0-9 . _ - (starting with a letter or digit)"
        )
    encoded = encoded.strip()
    try:
        # Standard or URL-safe alphabet, padding optional.
        secret = base64.b64decode(
            encoded.replace("-", "+").replace("_", "/") + "=" * (-len(encoded) % 4),
            validate=True,
        )
    except (binascii.Error, ValueError):
        raise KeyRingError(f"payload key {key_id!r} is not valid base64") from None
    if len(secret) != KEY_BYTES:
        raise KeyRingError(
            f"payload key {key_id!r} is {len(secret)} bytes; AES-256 needs {KEY_BYTES}"
        )
    return PayloadKey(key_id, secret)


def parse_key_ring(text: str) -> PayloadKeyRing:
    """Comma- or newline-separated `id:base64key` entries, newest (the encrypting one) first."""
    entries = [entry for entry in re.split(r"[,\n]", text) if entry.strip()]
    return PayloadKeyRing(tuple(parse_key(entry) for entry in entries))


def new_key(key_id: str | None = None) -> PayloadKey:
    """A fresh random key; its id defaults to the UTC time, e.g. `k20261129T040102` (sortable)."""
    key_id = key_id or datetime.now(UTC).strftime("k%Y%m%dT%H%M%S")
    if not _KEY_ID.fullmatch(key_id):
        raise KeyRingError(f"payload key id {key_id!r} is not 1-64 of A-Z a-z 0-9 . _ -")
    return PayloadKey(key_id, secrets.token_bytes(KEY_BYTES))


def key_file(settings: Settings) -> Path:
    """Where the file-managed ring lives: `<state dir>/payload-keys`."""
    return Path(settings.state_dir) / KEY_FILE


def keys_from_settings(settings: Settings) -> bool:
    """True when the ring comes from CAMPAIGN_ENGINE_PAYLOAD_KEYS, False when from the key file."""
    return settings.payload_keys is not None


def load_key_ring(settings: Settings) -> PayloadKeyRing:
    """The configured ring, else the key file's, created with one fresh key on first use.

    Raises KeyRingError when the setting or the file is malformed.
    """
    if settings.payload_keys is not None:
        return parse_key_ring(settings.payload_keys.get_secret_value())
    path = key_file(settings)
    try:
        return parse_key_ring(path.read_text())
    except FileNotFoundError:
        pass
    make_private_dir(path.parent)
    ring = PayloadKeyRing((new_key(),))
    try:
        # O_EXCL: of two processes starting together exactly one creates the file; the other
        # reads the winner's key, so both encrypt and decrypt alike.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return _read_complete(path)
    with os.fdopen(fd, "w") as file:
        file.write(ring.text("\n") + "\n")
    return ring


def _read_complete(path: Path) -> PayloadKeyRing:
    # The winner may not have written its line yet: an empty file is "not yet", for a moment.
    for _ in range(100):
        text = path.read_text()
        if text.endswith("\n"):
            return parse_key_ring(text)
        time.sleep(0.01)
    return parse_key_ring(path.read_text())


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    lock = path.with_name(path.name + ".lock")
    with os.fdopen(open_private(lock, os.O_WRONLY | os.O_APPEND), "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def add_key_to_file(settings: Settings, key: PayloadKey) -> PayloadKeyRing:
    """Puts `key` first in the key file (it encrypts from the next process start on); returns
    the new ring. The file is replaced atomically (mode 0600) under an flock, so two rotations
    never lose each other's key. Raises KeyRingError if the id is already in the ring.
    """
    path = key_file(settings)
    load_key_ring(settings)  # creates the file when this is the first key ever
    with _locked(path):
        current = parse_key_ring(path.read_text())
        if current.get(key.id) is not None:
            raise KeyRingError(f"payload key id {key.id!r} is already in {path}")
        ring = PayloadKeyRing((key, *current.keys))
        temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as file:
            file.write(ring.text("\n") + "\n")
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    return ring


def _associated_data(metadata: dict[str, bytes]) -> bytes:
    """GCM associated data: our context string and the metadata we wrote, length-prefixed.

    The account group joins it only when present, so payloads of the deployment scope (and
    every payload written before scopes) authenticate exactly as before."""
    parts = [_AAD_CONTEXT]
    for name in (METADATA_ENCODING, METADATA_KEY_ID, METADATA_COMPRESSION, METADATA_ACCOUNT_GROUP):
        value = metadata.get(name)
        if value is not None:
            parts += [name.encode(), value]
    return b"".join(len(part).to_bytes(4, "big") + part for part in parts)


def account_group_of(workflow_id: str | None) -> str | None:
    """The account group of a campaign instance's workflow id (`campaign:{ag}:…`, see
    `campaign_engine.ids.workflow_id_for`); None for any other workflow id or none."""
    match = _CAMPAIGN_WORKFLOW_ID.match(workflow_id or "")
    return match.group(1) if match else None


def workflow_id_of(context: SerializationContext | None) -> str | None:
    """The workflow a serialization context is about (a workflow's own payloads, or an activity
    a workflow started), None when the SDK gave none."""
    if isinstance(context, WorkflowSerializationContext | ActivitySerializationContext):
        return context.workflow_id
    return None


def derive_group_key(secret: bytes, account_group_id: str) -> bytes:
    """The 32-byte data key of one account group under one ring key: HKDF-SHA256 (RFC 5869),
    no salt (the ring key is already uniformly random, §3.1), `info` = our context string, a NUL
    and the group id, so keys of two groups are independent and neither reveals the ring key."""
    return HKDF(
        algorithm=hashes.SHA256(),
        length=KEY_BYTES,
        salt=None,
        info=_HKDF_INFO + account_group_id.encode(),
    ).derive(secret)


def mark_plaintext(payload: Payload, reason: str) -> Payload:
    """Strict mode's mark: `payload` with `encoding: binary/plaintext-unverified`, its own
    encoding kept in `plaintext-encoding` and why in `plaintext-reason`; data unchanged."""
    metadata = dict(payload.metadata)
    metadata[METADATA_PLAINTEXT_ENCODING] = metadata.pop(METADATA_ENCODING, b"")
    metadata[METADATA_ENCODING] = PLAINTEXT_ENCODING
    metadata[METADATA_PLAINTEXT_REASON] = reason.encode()
    return Payload(metadata=metadata, data=payload.data)


def unmark_plaintext(payload: Payload) -> Payload:
    """The payload `mark_plaintext` was given (unmarked payloads come back unchanged)."""
    if payload.metadata.get(METADATA_ENCODING) != PLAINTEXT_ENCODING:
        return payload
    metadata = dict(payload.metadata)
    original = metadata.pop(METADATA_PLAINTEXT_ENCODING, b"")
    metadata.pop(METADATA_PLAINTEXT_REASON, None)
    metadata.pop(METADATA_ENCODING)
    if original:
        metadata[METADATA_ENCODING] = original
    return Payload(metadata=metadata, data=payload.data)


class PayloadScopeError(ValueError):
    """A caller's account groups do not include the payload's (`account_group` is None for a
    payload of the deployment scope, which only keys of every account group decode)."""

    def __init__(self, account_group: str | None) -> None:
        scope = f"account group {account_group}" if account_group else "the deployment scope"
        super().__init__(
            f"payload sealed for {scope}: the caller's key does not hold it"
            + ("" if account_group else " (only keys of every account group decode it)")
        )
        self.account_group = account_group


class _Keys:
    """The ring and its ciphers, shared by a codec and every copy `with_context` makes, so a
    reload by one is seen by all."""

    def __init__(self, ring: PayloadKeyRing, reload: Callable[[], PayloadKeyRing] | None) -> None:
        self.ring = ring
        self.reload = reload
        self.ciphers = {key.id: AESGCM(key.secret) for key in ring.keys}
        self.secrets = {key.id: key.secret for key in ring.keys}
        self.derived: OrderedDict[tuple[str, str], AESGCM] = OrderedDict()

    def cipher(self, key_id: str, account_group: str | None) -> AESGCM:
        """The ring key `key_id`'s cipher, or its data key of `account_group`."""
        base = self.ciphers.get(key_id)
        if base is None and self.reload is not None:
            ring = self.reload()
            # Keep encrypting under the key this process started with; learn the others.
            self.ciphers = {key.id: AESGCM(key.secret) for key in ring.keys} | self.ciphers
            self.secrets = {key.id: key.secret for key in ring.keys} | self.secrets
            self.ring = PayloadKeyRing(
                (self.ring.primary, *(k for k in ring.keys if k.id != self.ring.primary.id))
            )
            base = self.ciphers.get(key_id)
        if base is None:
            raise PayloadKeyError(
                key_id,
                f"payload encrypted under key id {key_id!r}, which this process's payload key "
                f"ring ({', '.join(self.ring.ids)}) does not hold: add that key to "
                "CAMPAIGN_ENGINE_PAYLOAD_KEYS (or the payload-keys file) on every API and worker",
            )
        if account_group is None:
            return base
        slot = (key_id, account_group)
        cipher = self.derived.get(slot)
        if cipher is None:
            cipher = AESGCM(derive_group_key(self.secrets[key_id], account_group))
            self.derived[slot] = cipher
            while len(self.derived) > _DERIVED_CACHE_ENTRIES:
                self.derived.popitem(last=False)
        else:
            self.derived.move_to_end(slot)
        return cipher


class EncryptionCodec(PayloadCodec, WithSerializationContext):
    """AES-256-GCM over each serialized payload, zlib first for payloads above a threshold.

    `reload` (given for a file-managed ring) is asked for a fresh ring when a payload names a key
    id this one lacks: a process started before `keys rotate-payload-key` then still reads what a
    newer process wrote. `compression_threshold=None` never compresses. `strict` marks payloads
    nobody encrypted, or sealed for another account group than the workflow's, instead of
    passing them on (module docstring). The SDK calls `with_context` for each workflow and
    activity, which picks the scope; without a context, the deployment scope.
    """

    def __init__(
        self,
        ring: PayloadKeyRing,
        *,
        reload: Callable[[], PayloadKeyRing] | None = None,
        compression_threshold: int | None = COMPRESSION_THRESHOLD_BYTES,
        strict: bool = False,
    ) -> None:
        super().__init__()
        self._keys = _Keys(ring, reload)
        self._threshold = compression_threshold
        self._strict = strict
        # The workflow the payloads belong to (None: unknown, no scope check) and its group.
        self._workflow_id: str | None = None
        self._account_group: str | None = None

    @property
    def ring(self) -> PayloadKeyRing:
        """The ring this codec holds now: after a reload it has learnt newer keys, its first key
        unchanged."""
        return self._keys.ring

    @property
    def strict(self) -> bool:
        """Whether payloads nobody encrypted are marked (refused) rather than passed on."""
        return self._strict

    @property
    def account_group(self) -> str | None:
        """The account group this codec seals for; None: the deployment scope."""
        return self._account_group

    def with_context(self, context: SerializationContext) -> EncryptionCodec:
        """A codec for the payloads of `context`'s workflow: sealing for its account group (a
        campaign instance) or the deployment scope (any other workflow); same ring."""
        return self._scoped(workflow_id_of(context), account_group_of(workflow_id_of(context)))

    def for_account_group(self, account_group: str | None) -> EncryptionCodec:
        """A codec sealing for `account_group` (None: the deployment scope), of no workflow."""
        return self._scoped(None, account_group)

    def _scoped(self, workflow_id: str | None, account_group: str | None) -> EncryptionCodec:
        copy = object.__new__(EncryptionCodec)
        copy.__dict__.update(self.__dict__)
        copy._workflow_id = workflow_id
        copy._account_group = account_group
        return copy

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        """Each payload encrypted under the ring's first key (see the module docstring)."""
        return [self.encrypt(payload) for payload in payloads]

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        """Each encrypted payload decrypted; others unchanged (marked in strict mode). Raises
        PayloadKeyError."""
        return [self.decrypt(payload) for payload in payloads]

    def encrypt(self, payload: Payload) -> Payload:
        """`payload` serialized, zlib-compressed first when at least the threshold long and
        compression shrinks it, sealed under the ring's first key — its data key of this codec's
        account group, if any (layout: module docstring)."""
        key = self._keys.ring.primary
        plain = payload.SerializeToString()
        metadata = {METADATA_ENCODING: ENCODING, METADATA_KEY_ID: key.id.encode()}
        if self._account_group is not None:
            metadata[METADATA_ACCOUNT_GROUP] = self._account_group.encode()
        if self._threshold is not None and len(plain) >= self._threshold:
            compressed = zlib.compress(plain, COMPRESSION_LEVEL)
            if len(compressed) < len(plain):
                plain = compressed
                metadata[METADATA_COMPRESSION] = COMPRESSION_ZLIB
        nonce = os.urandom(NONCE_BYTES)
        cipher = self._keys.cipher(key.id, self._account_group)
        sealed = cipher.encrypt(nonce, plain, _associated_data(metadata))
        return Payload(metadata=metadata, data=nonce + sealed)

    def decrypt(self, payload: Payload) -> Payload:
        """The inner payload of one of ours; a payload without our encoding comes back unchanged
        (strict: marked). Strict, with a workflow known: a payload sealed for another account
        group than the workflow's comes back marked too.

        Raises PayloadKeyError (naming the key id) for a key id the ring lacks (after reloading a
        file-managed ring), a tag that does not verify, or an unknown compression.
        """
        if payload.metadata.get(METADATA_ENCODING) != ENCODING:
            if self._strict and payload.metadata.get(METADATA_ENCODING) != PLAINTEXT_ENCODING:
                return mark_plaintext(payload, "not encrypted")
            return payload
        inner, account_group = self._open(payload)
        if (
            self._strict
            and self._workflow_id is not None
            and account_group is not None
            and account_group != self._account_group
        ):
            return mark_plaintext(
                inner,
                f"sealed for account group {account_group}, not the workflow's "
                f"({self._account_group or 'none'})",
            )
        return inner

    def decrypt_for(self, payload: Payload, account_groups: frozenset[str] | None) -> Payload:
        """`decrypt` for a caller holding `account_groups` (None: every group), never strict:
        payloads without our encoding come back as they are (they hold nothing secret).

        Raises PayloadScopeError — before any decryption — when the payload is sealed for a
        group the caller lacks, or for the deployment scope and the caller lacks some group;
        PayloadKeyError as `decrypt`.
        """
        if payload.metadata.get(METADATA_ENCODING) != ENCODING:
            return payload
        account_group = _account_group_in(payload)
        if account_groups is not None and (
            account_group is None or account_group not in account_groups
        ):
            raise PayloadScopeError(account_group)
        return self._open(payload)[0]

    def _open(self, payload: Payload) -> tuple[Payload, str | None]:
        metadata = dict(payload.metadata)
        key_id = metadata.get(METADATA_KEY_ID, b"").decode(errors="replace")
        account_group = _account_group_in(payload)
        cipher = self._keys.cipher(key_id, account_group)
        try:
            plain = cipher.decrypt(
                payload.data[:NONCE_BYTES], payload.data[NONCE_BYTES:], _associated_data(metadata)
            )
        except InvalidTag:
            raise PayloadKeyError(
                key_id,
                f"payload encrypted under key id {key_id!r} failed authentication (AES-GCM tag): "
                "the key material configured for that id is not the one that encrypted it, or "
                "the payload or its metadata were altered",
            ) from None
        compression = metadata.get(METADATA_COMPRESSION)
        if compression == COMPRESSION_ZLIB:
            plain = zlib.decompress(plain)
        elif compression is not None:
            raise PayloadKeyError(
                key_id, f"payload under key id {key_id!r} names unknown compression {compression!r}"
            )
        return Payload.FromString(plain), account_group


def _account_group_in(payload: Payload) -> str | None:
    """The account group a payload of ours names in its metadata; None for the deployment scope.
    Raises PayloadKeyError when the value is no account group id (nothing of ours writes that)."""
    raw = payload.metadata.get(METADATA_ACCOUNT_GROUP)
    if raw is None:
        return None
    group = raw.decode(errors="replace")
    if not re.fullmatch(r"[0-9a-f]{24}", group):
        key_id = payload.metadata.get(METADATA_KEY_ID, b"").decode(errors="replace")
        raise PayloadKeyError(key_id, f"payload names account group {group[:64]!r}: not an id")
    return group


class PlaintextMarkConverter(EncodingPayloadConverter):
    """Turns strict mode's marked payloads into values: never a typed one (`ApplicationError`
    `PlaintextPayloadRefused`, non-retryable: a workflow input or an activity argument nobody
    encrypted fails the workflow or activity); an untyped one (a signal's `*inputs`) becomes a
    `RawValue` of the marked payload, for the workflow to decide."""

    @property
    def encoding(self) -> str:
        """`binary/plaintext-unverified`."""
        return PLAINTEXT_ENCODING.decode()

    def to_payload(self, value: Any) -> Payload | None:
        """Never: nothing of ours writes marked payloads."""
        return None

    def from_payload(self, payload: Payload, type_hint: type | None = None) -> Any:
        """See the class docstring."""
        if type_hint is None or type_hint is object:
            return RawValue(payload)
        reason = payload.metadata.get(METADATA_PLAINTEXT_REASON, b"").decode(errors="replace")
        raise ApplicationError(
            f"a payload {reason or 'not encrypted'} was refused: with "
            "CAMPAIGN_ENGINE_PAYLOAD_CODEC_STRICT, inputs must be encrypted under this "
            "deployment's payload keys (sent through our API or the codec endpoint)",
            type=PLAINTEXT_REFUSED_TYPE,
            non_retryable=True,
        )


class StrictPayloadConverter(CompositePayloadConverter):
    """Temporal's default converters and `PlaintextMarkConverter`."""

    def __init__(self) -> None:
        super().__init__(
            *DefaultPayloadConverter.default_encoding_payload_converters,
            PlaintextMarkConverter(),
        )


def codec_for(settings: Settings) -> EncryptionCodec:
    """The codec of these settings' key ring. Raises KeyRingError for a malformed ring."""
    ring = load_key_ring(settings)
    reload = None if keys_from_settings(settings) else (lambda: load_key_ring(settings))
    return EncryptionCodec(ring, reload=reload, strict=settings.payload_codec_strict)


def data_converter(settings: Settings) -> DataConverter:
    """What every Temporal client of ours carries: the codec, and failures whose message and
    stack trace (which can quote a draft) travel as an encrypted payload
    (`encode_common_attributes`), shown as "Encoded failure" to readers without the key.

    Its payload converter is `StrictPayloadConverter` (Temporal's default beside the one for
    strict mode's marks; without strict mode no payload is ever marked).
    With `payload_encryption` off (only to measure the codec's cost) it is Temporal's default.
    """
    if not settings.payload_encryption:
        return DataConverter.default
    return DataConverter(
        payload_converter_class=StrictPayloadConverter,
        payload_codec=codec_for(settings),
        failure_converter_class=DefaultFailureConverterWithEncodedAttributes,
    )
