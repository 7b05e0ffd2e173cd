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
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from temporalio.api.common.v1 import Payload
from temporalio.converter import (
    DataConverter,
    DefaultFailureConverterWithEncodedAttributes,
    PayloadCodec,
)

from campaign_engine.private_files import make_private_dir, open_private
from campaign_engine.settings import Settings

ENCODING = b"binary/encrypted"
METADATA_ENCODING = "encoding"
METADATA_KEY_ID = "encryption-key-id"
METADATA_COMPRESSION = "encryption-compression"
COMPRESSION_ZLIB = b"zlib"
NONCE_BYTES = 12
KEY_BYTES = 32
KEY_FILE = "payload-keys"
# From this many serialized bytes on, payloads are compressed before encryption. Measured on typical
# drafts (`python -m bench.codec`, docs/performance.md "Payload encryption"): at 1 KB zlib saves
# ~40 % (~450 B) for ~30 µs; below it a payload (ids, signals: 50-300 B) saves tens of bytes, no
# more than the compression flag's own metadata costs.
COMPRESSION_THRESHOLD_BYTES = 1024
# Level 1 keeps 90-95 % of level 6's savings on drafts at a quarter to a half of its time.
COMPRESSION_LEVEL = 1
_AAD_CONTEXT = b"campaign-engine/payload/v1"
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
    """GCM associated data: our context string and the metadata we wrote, length-prefixed."""
    parts = [_AAD_CONTEXT]
    for name in (METADATA_ENCODING, METADATA_KEY_ID, METADATA_COMPRESSION):
        value = metadata.get(name)
        if value is not None:
            parts += [name.encode(), value]
    return b"".join(len(part).to_bytes(4, "big") + part for part in parts)


class EncryptionCodec(PayloadCodec):
    """AES-256-GCM over each serialized payload, zlib first for payloads above a threshold.

    `reload` (given for a file-managed ring) is asked for a fresh ring when a payload names a key
    id this one lacks: a process started before `keys rotate-payload-key` then still reads what a
    newer process wrote. `compression_threshold=None` never compresses.
    """

    def __init__(
        self,
        ring: PayloadKeyRing,
        *,
        reload: Callable[[], PayloadKeyRing] | None = None,
        compression_threshold: int | None = COMPRESSION_THRESHOLD_BYTES,
    ) -> None:
        super().__init__()
        self._ring = ring
        self._reload = reload
        self._threshold = compression_threshold
        self._ciphers = {key.id: AESGCM(key.secret) for key in ring.keys}

    @property
    def ring(self) -> PayloadKeyRing:
        """The ring this codec holds now: after a reload it has learnt newer keys, its first key
        unchanged."""
        return self._ring

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        """Each payload encrypted under the ring's first key (see the module docstring)."""
        return [self.encrypt(payload) for payload in payloads]

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        """Each encrypted payload decrypted; others unchanged. Raises PayloadKeyError."""
        return [self.decrypt(payload) for payload in payloads]

    def encrypt(self, payload: Payload) -> Payload:
        """`payload` serialized, zlib-compressed first when at least the threshold long and
        compression shrinks it, sealed under the ring's first key (layout: module docstring)."""
        key = self._ring.primary
        plain = payload.SerializeToString()
        metadata = {METADATA_ENCODING: ENCODING, METADATA_KEY_ID: key.id.encode()}
        if self._threshold is not None and len(plain) >= self._threshold:
            compressed = zlib.compress(plain, COMPRESSION_LEVEL)
            if len(compressed) < len(plain):
                plain = compressed
                metadata[METADATA_COMPRESSION] = COMPRESSION_ZLIB
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._ciphers[key.id].encrypt(nonce, plain, _associated_data(metadata))
        return Payload(metadata=metadata, data=nonce + sealed)

    def decrypt(self, payload: Payload) -> Payload:
        """The inner payload of one of ours; a payload without our encoding comes back unchanged.

        Raises PayloadKeyError (naming the key id) for a key id the ring lacks (after reloading a
        file-managed ring), a tag that does not verify, or an unknown compression.
        """
        if payload.metadata.get(METADATA_ENCODING) != ENCODING:
            return payload
        metadata = dict(payload.metadata)
        key_id = metadata.get(METADATA_KEY_ID, b"").decode(errors="replace")
        cipher = self._cipher(key_id)
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
        return Payload.FromString(plain)

    def _cipher(self, key_id: str) -> AESGCM:
        cipher = self._ciphers.get(key_id)
        if cipher is None and self._reload is not None:
            ring = self._reload()
            # Keep encrypting under the key this process started with; learn the others.
            self._ciphers = {key.id: AESGCM(key.secret) for key in ring.keys} | self._ciphers
            self._ring = PayloadKeyRing(
                (self._ring.primary, *(k for k in ring.keys if k.id != self._ring.primary.id))
            )
            cipher = self._ciphers.get(key_id)
        if cipher is None:
            raise PayloadKeyError(
                key_id,
                f"payload encrypted under key id {key_id!r}, which this process's payload key "
                f"ring ({', '.join(self._ring.ids)}) does not hold: add that key to "
                "CAMPAIGN_ENGINE_PAYLOAD_KEYS (or the payload-keys file) on every API and worker",
            )
        return cipher


def codec_for(settings: Settings) -> EncryptionCodec:
    """The codec of these settings' key ring. Raises KeyRingError for a malformed ring."""
    ring = load_key_ring(settings)
    reload = None if keys_from_settings(settings) else (lambda: load_key_ring(settings))
    return EncryptionCodec(ring, reload=reload)


def data_converter(settings: Settings) -> DataConverter:
    """What every Temporal client of ours carries: the codec, and failures whose message and
    stack trace (which can quote a draft) travel as an encrypted payload
    (`encode_common_attributes`), shown as "Encoded failure" to readers without the key.

    With `payload_encryption` off (only to measure the codec's cost) it is Temporal's default.
    """
    if not settings.payload_encryption:
        return DataConverter.default
    return DataConverter(
        payload_codec=codec_for(settings),
        failure_converter_class=DefaultFailureConverterWithEncodedAttributes,
    )
