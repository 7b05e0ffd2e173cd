"""API keys: issued once in clear, stored only as a keyed hash, checked in constant time.

A key reads `ce_<key id>_<secret>`. The key id is public and finds the row; the stored hash is
HMAC-SHA256 under a pepper that lives outside the database, so a leaked table alone verifies
nothing. Keys are random, so a slow password hash would add latency and no safety.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from pathlib import Path

from campaign_engine.private_files import make_private_dir
from campaign_engine.settings import Settings, reveal
from campaign_engine.store import ApiKey, Store, utcnow

KEY_PREFIX = "ce"
PEPPER_FILE = "api-key-pepper"
ALL_ACCOUNT_GROUPS = "*"
"""What an operator's key of every account group stores as its one account group: no account
group id has this form, so it never grants a tenant route; the codec server reads it as "every
group's payloads" (`keys create --all-account-groups`, `payloads:decode` only)."""


class Permission(StrEnum):
    """What an API key may do; a route names the one it requires (403 without it)."""

    CAMPAIGNS_READ = "campaigns:read"
    CAMPAIGNS_WRITE = "campaigns:write"
    CAMPAIGNS_EXECUTE = "campaigns:execute"
    # The codec endpoints (/codec/decode, /codec/encode): decrypts the payloads of the key's
    # account groups (each group's are sealed under its own data key); with a key of every
    # account group (`keys create --all-account-groups`, an operator's), every payload.
    PAYLOADS_DECODE = "payloads:decode"
    # POST .../inbound-messages: hands raw inbound mail (replies, bounces) to the pipeline, which
    # may stop and suppress the account group's leads; what an inbound mail hook's key holds.
    INBOUND_WRITE = "inbound:write"


@dataclass(frozen=True)
class Principal:
    """Who a verified key speaks for. The account groups come from the key, never the request."""

    key_id: str
    name: str
    account_groups: frozenset[str]
    permissions: frozenset[Permission]

    @property
    def all_account_groups(self) -> bool:
        """An operator's key of every account group (`ALL_ACCOUNT_GROUPS`): every payload, and
        no tenant route (no path's account group id is `*`)."""
        return ALL_ACCOUNT_GROUPS in self.account_groups


class KeyKindError(ValueError):
    """A key that mixes kinds: `--all-account-groups` beside account group ids or with any
    permission but `payloads:decode`."""


def check_key_kind(account_groups: list[str], permissions: list[Permission]) -> None:
    """Refuses a key of every account group unless it is exactly that: `ALL_ACCOUNT_GROUPS`
    alone, with `payloads:decode` alone. Raises KeyKindError saying what to change."""
    if ALL_ACCOUNT_GROUPS not in account_groups:
        return
    if set(account_groups) != {ALL_ACCOUNT_GROUPS}:
        raise KeyKindError("--all-account-groups stands alone: name no --account-group beside it")
    if set(permissions) != {Permission.PAYLOADS_DECODE}:
        raise KeyKindError(
            "a key of every account group may hold payloads:decode only (an operator's key "
            "for reading payloads); issue tenant permissions on keys of named account groups"
        )


@dataclass(frozen=True)
class IssuedKey:
    """A freshly issued key: the only time `key` is seen in clear (the store keeps its hash)."""

    id: str
    key: str
    name: str
    account_groups: list[str]
    permissions: list[str]
    created_at: datetime

    def to_json(self) -> str:
        """The object `keys create` prints once: id, key, name, accountGroups, permissions,
        createdAt (ISO 8601)."""
        return json.dumps(
            {
                "id": self.id,
                "key": self.key,
                "name": self.name,
                "accountGroups": self.account_groups,
                "permissions": self.permissions,
                "createdAt": self.created_at.isoformat(),
            }
        )


def load_pepper(settings: Settings) -> bytes:
    """The configured pepper, else one generated under state_dir on first use and kept."""
    return load_secret(reveal(settings.api_key_pepper), Path(settings.state_dir) / PEPPER_FILE)


def load_secret(configured: str | None, path: Path) -> bytes:
    """`configured` when set, else the secret in `path`, generated there on first use.

    The file is created with mode 0600 and O_EXCL, so when two processes start together exactly
    one secret wins and both use it. 64 hex characters (256 bits) from `secrets`.
    """
    if configured:
        return configured.encode()
    try:
        return path.read_bytes().strip()
    except FileNotFoundError:
        pass
    make_private_dir(path.parent)
    pepper = secrets.token_hex(32).encode()
    try:
        # O_EXCL: when two processes start together, exactly one pepper wins and both use it.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_bytes().strip()
    with os.fdopen(fd, "wb") as file:
        file.write(pepper)
    return pepper


def hash_key(pepper: bytes, key: str) -> str:
    """HMAC-SHA256 of the whole key under `pepper`, as 64 lowercase hex characters."""
    return hmac.new(pepper, key.encode(), hashlib.sha256).hexdigest()


def parse_key_id(key: str) -> str | None:
    """The key id of a `ce_<key id>_<secret>` key, or None when the key does not have that form."""
    prefix, _, rest = key.partition("_")
    key_id, _, secret = rest.partition("_")
    if prefix != KEY_PREFIX or not key_id or not secret:
        return None
    return key_id


class KeyRing:
    """Issues, lists, revokes and verifies API keys against the store."""

    # Recording every use would be a write per request; once a minute per key tells operators
    # which keys are alive without that cost.
    LAST_USED_RESOLUTION_SECONDS = 60.0

    CACHE_ENTRIES = 10_000
    """Verified keys kept per process at most; the oldest go first."""

    def __init__(self, store: Store, pepper: bytes, *, cache_seconds: float = 0.0) -> None:
        """`cache_seconds` > 0 keeps a verified key's principal that long in this process, so a
        request within it needs no store round trip; a key revoked (or changed) in the store is
        then refused by every process within `cache_seconds`. 0 asks the store every time."""
        self._store = store
        self._pepper = pepper
        self._last_touched: dict[str, datetime] = {}
        self._cache_seconds = cache_seconds
        # HMAC of the whole key → (principal, monotonic expiry). Keyed by the HMAC, not the key,
        # so a wrong secret for a known key id never hits, and no key sits in memory in clear.
        self._verified: OrderedDict[str, tuple[Principal, float]] = OrderedDict()

    async def issue(
        self, name: str, account_groups: list[str], permissions: list[Permission]
    ) -> IssuedKey:
        """Stores a new key for these account groups and permissions (duplicates dropped).
        `[ALL_ACCOUNT_GROUPS]` with `[payloads:decode]` is an operator's key of every group.

        Returns the key in clear; only its HMAC is stored, so it cannot be shown again. Raises
        KeyKindError for a key of every account group that is not exactly that.
        """
        check_key_kind(account_groups, permissions)
        key_id = secrets.token_hex(6)
        key = f"{KEY_PREFIX}_{key_id}_{secrets.token_urlsafe(32)}"
        row = ApiKey(
            key_id=key_id,
            name=name,
            key_hash=hash_key(self._pepper, key),
            account_groups=sorted(set(account_groups)),
            permissions=sorted({p.value for p in permissions}),
            created_at=utcnow(),
            revoked_at=None,
            last_used_at=None,
        )
        await self._store.add_api_key(row)
        return IssuedKey(key_id, key, name, row.account_groups, row.permissions, row.created_at)

    async def verify(self, key: str) -> Principal | None:
        """The key's principal, or None when it is malformed, unknown, wrong or revoked.

        With a cache (`cache_seconds`), a key verified less than that long ago in this process is
        answered from memory: revocation takes effect within `cache_seconds` everywhere.
        """
        key_id = parse_key_id(key)
        if key_id is None:
            return None
        digest = hash_key(self._pepper, key)
        cached = self._verified.get(digest)
        if cached is not None and cached[1] > time.monotonic():
            return cached[0]
        row = await self._store.get_api_key(key_id)
        if row is None or row.revoked_at is not None:
            self._verified.pop(digest, None)
            return None
        if not hmac.compare_digest(row.key_hash, digest):
            return None
        await self._note_use(key_id)
        principal = Principal(
            key_id=row.key_id,
            name=row.name,
            account_groups=frozenset(row.account_groups),
            permissions=frozenset(Permission(p) for p in row.permissions),
        )
        if self._cache_seconds > 0:
            self._verified[digest] = (principal, time.monotonic() + self._cache_seconds)
            self._verified.move_to_end(digest)
            while len(self._verified) > self.CACHE_ENTRIES:
                self._verified.popitem(last=False)
        return principal

    async def _note_use(self, key_id: str) -> None:
        now = utcnow()
        last = self._last_touched.get(key_id)
        if last is not None and (now - last).total_seconds() < self.LAST_USED_RESOLUTION_SECONDS:
            return
        self._last_touched[key_id] = now
        await self._store.touch_api_key(key_id, now)
