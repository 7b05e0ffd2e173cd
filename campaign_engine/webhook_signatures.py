"""Webhook notice signatures, both sides: how the worker signs, how a receiver verifies.

The scheme is the Standard Webhooks one (https://www.standardwebhooks.com/, "Signature
scheme"), so a receiver can use any of its verifiers or this module:

    webhook-id:        <event id>          stable across the retries of one notice
    webhook-timestamp: <Unix seconds>      when this attempt was signed
    webhook-signature: v1,<base64 HMAC-SHA256 over "<id>.<timestamp>.<body>">

The HMAC key is the campaign's webhook `secret` as UTF-8 bytes. (Standard Webhooks' own
libraries take a `whsec_<base64 key>` secret: give them `"whsec_" + base64(secret)`.) The
signature covers the event id, so a captured notice cannot be replayed under another id, and the
timestamp, so it cannot be replayed later than the receiver's tolerance; the receiver closes the
remaining window (a replay within the tolerance) by remembering the event ids it has accepted.

`WebhookVerifier` is the receiver's half, stdlib only: copy this file into a receiver, or import
it. It checks the signature (constant-time), the timestamp within ±`tolerance_seconds` (5 min by
default, Standard Webhooks' recommendation), and refuses an event id it has already accepted.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import threading
import time
from collections.abc import Mapping

ID_HEADER = "webhook-id"
TIMESTAMP_HEADER = "webhook-timestamp"
SIGNATURE_HEADER = "webhook-signature"
SIGNATURE_VERSION = "v1"
DEFAULT_TOLERANCE_SECONDS = 300
"""±5 minutes between a notice's timestamp and the receiver's clock."""
DEFAULT_REMEMBER_SECONDS = 24 * 3600
"""How long a verifier remembers an accepted event id: at least the tolerance window (a replay
within it is refused), and longer to drop the duplicates of a retry whose answer was lost."""


def sign(secret: str, event_id: str, timestamp: str, body: bytes) -> str:
    """The `webhook-signature` value: `v1,<base64 HMAC-SHA256(secret, "id.timestamp.body")>`.

    `secret` is the campaign's webhook secret (its UTF-8 bytes are the key), `event_id` the
    `webhook-id`, `timestamp` the `webhook-timestamp` (decimal Unix seconds) and `body` the exact
    request body bytes.
    """
    signed = f"{event_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret.encode(), signed, hashlib.sha256).digest()
    return f"{SIGNATURE_VERSION},{base64.b64encode(digest).decode()}"


def signed_headers(
    secret: str, event_id: str, body: bytes, now: float | None = None
) -> dict[str, str]:
    """The three headers of one attempt, signed at `now` (Unix seconds; default the clock)."""
    timestamp = str(int(time.time() if now is None else now))
    return {
        ID_HEADER: event_id,
        TIMESTAMP_HEADER: timestamp,
        SIGNATURE_HEADER: sign(secret, event_id, timestamp, body),
    }


class VerificationFailed(ValueError):
    """A notice the receiver must refuse (answer 400/401, do not act on it); the subclass says
    why."""


class InvalidSignature(VerificationFailed):
    """Headers missing or malformed, or no `v1` signature matches: not from us, or altered."""


class StaleTimestamp(VerificationFailed):
    """Signed correctly, but its timestamp is outside the tolerance: a replay, or a clock off."""


class ReplayedEvent(VerificationFailed):
    """Signed correctly and in time, but this event id was accepted already: a replay (or a
    retry of a notice already handled: answer it 2xx, do not act on it twice)."""


class WebhookVerifier:
    """Verifies the notices of one webhook secret; remembers the event ids it accepted.

    `secrets` are the secrets to accept (several while rotating: the old and the new); an
    attempt verifies when one of its space-separated `v1,` signatures matches one of them.
    The memory of event ids is this object's (one receiver process); receivers with several
    processes pass `seen`, anything with the `EventIdMemory` methods, e.g. over Redis `SET NX EX`.
    Thread-safe.
    """

    def __init__(
        self,
        *secrets: str,
        tolerance_seconds: int = DEFAULT_TOLERANCE_SECONDS,
        remember_seconds: int = DEFAULT_REMEMBER_SECONDS,
        seen: EventIdMemory | None = None,
    ) -> None:
        if not secrets or not all(secrets):
            raise ValueError("a webhook verifier needs at least one non-empty secret")
        self._keys = [secret.encode() for secret in secrets]
        self._tolerance = tolerance_seconds
        self._remember = max(remember_seconds, 2 * tolerance_seconds)
        self._seen = seen if seen is not None else EventIdMemory()

    def verify(self, headers: Mapping[str, str], body: bytes, now: float | None = None) -> str:
        """Returns the event id of a notice that is ours, fresh and new; raises
        `InvalidSignature`, `StaleTimestamp` or `ReplayedEvent` otherwise.

        `headers` are the request's (looked up in lowercase: pass a case-insensitive mapping or
        lowercase keys), `body` its exact bytes (before any JSON parsing), `now` Unix seconds
        (default the clock). The signature is checked before anything else is trusted; the id
        is remembered only once everything else passed. A receiver that then fails to act on the
        notice calls `forget(event_id)` before answering 5xx, so our retry is accepted.
        """
        lowered = {name.lower(): value for name, value in headers.items()}
        event_id = lowered.get(ID_HEADER, "")
        timestamp = lowered.get(TIMESTAMP_HEADER, "")
        signatures = lowered.get(SIGNATURE_HEADER, "")
        if not event_id or not timestamp.isdigit() or not signatures:
            raise InvalidSignature(
                f"missing or malformed {ID_HEADER}, {TIMESTAMP_HEADER} or {SIGNATURE_HEADER}"
            )
        signed = f"{event_id}.{timestamp}.".encode() + body
        expected = [
            base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()) for key in self._keys
        ]
        offered = [
            value.encode()
            for version, _, value in (part.partition(",") for part in signatures.split())
            if version == SIGNATURE_VERSION
        ]
        # Every pair compared, in constant time each: no early exit tells which part matched.
        matched = False
        for candidate in offered:
            for digest in expected:
                matched |= hmac.compare_digest(candidate, digest)
        if not matched:
            raise InvalidSignature("no signature matches")
        current = time.time() if now is None else now
        if abs(current - int(timestamp)) > self._tolerance:
            raise StaleTimestamp(
                f"timestamp {timestamp} is more than {self._tolerance} s from now ({int(current)})"
            )
        if not self._seen.remember(event_id, current + self._remember, current):
            raise ReplayedEvent(f"event {event_id} was accepted already")
        return event_id

    def forget(self, event_id: str) -> None:
        """Forgets an accepted event id: our next retry of it will verify again."""
        self._seen.forget(event_id)


class EventIdMemory:
    """Event ids accepted, each until its expiry (Unix seconds); in this process's memory.

    Expired ids are dropped as new ones come (at most once a minute, all at once), so memory is
    bounded by the notices of `remember_seconds`.
    """

    def __init__(self) -> None:
        self._until: dict[str, float] = {}
        self._lock = threading.Lock()
        self._pruned_at = 0.0

    def remember(self, event_id: str, until: float, now: float) -> bool:
        """True when `event_id` was not held (it is now, until `until`); False when it was."""
        with self._lock:
            if now - self._pruned_at > 60:
                self._until = {key: end for key, end in self._until.items() if end > now}
                self._pruned_at = now
            held = self._until.get(event_id)
            if held is not None and held > now:
                return False
            self._until[event_id] = until
            return True

    def forget(self, event_id: str) -> None:
        """Drops `event_id` (no error when it is not held)."""
        with self._lock:
            self._until.pop(event_id, None)
