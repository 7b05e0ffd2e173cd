"""The receiver's verifier the webhooks how-to shows (`campaign_engine.webhook_signatures`): a
notice of ours verifies once, in time; a replay, a stale or future timestamp, another id or body
do not."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import time
from pathlib import Path

import pytest

from campaign_engine.webhook_signatures import (
    ID_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    InvalidSignature,
    ReplayedEvent,
    StaleTimestamp,
    WebhookVerifier,
    sign,
    signed_headers,
)

SECRET = "s3cret-signing-key-of-the-campaign"
BODY = b'{"event":"approval.pending","campaignId":"c"}'
NOW = 1_800_000_000.0


def notice(event_id: str = "campaign:a:b:c:g:approval.pending", at: float = NOW) -> dict[str, str]:
    return signed_headers(SECRET, event_id, BODY, now=at)


def test_the_signature_is_standard_webhooks_v1_over_id_timestamp_and_body() -> None:
    headers = notice()

    # Computed here from the spec's definition, not with the code under test.
    expected = hmac.new(
        SECRET.encode(), f"{headers[ID_HEADER]}.{int(NOW)}.".encode() + BODY, hashlib.sha256
    ).digest()
    assert headers[TIMESTAMP_HEADER] == str(int(NOW))
    assert headers[SIGNATURE_HEADER] == "v1," + base64.b64encode(expected).decode()


def test_a_fresh_notice_verifies_once_and_its_replay_is_refused() -> None:
    verifier = WebhookVerifier(SECRET)
    headers = notice()

    assert verifier.verify(headers, BODY, now=NOW + 3) == headers[ID_HEADER]
    with pytest.raises(ReplayedEvent):
        verifier.verify(headers, BODY, now=NOW + 4)
    # A retry of the same event (new timestamp, same id) is a duplicate as well.
    with pytest.raises(ReplayedEvent):
        verifier.verify(notice(at=NOW + 60), BODY, now=NOW + 61)


def test_a_receiver_that_failed_forgets_the_id_and_accepts_the_retry() -> None:
    verifier = WebhookVerifier(SECRET)
    event_id = verifier.verify(notice(), BODY, now=NOW)

    verifier.forget(event_id)

    assert verifier.verify(notice(at=NOW + 30), BODY, now=NOW + 30) == event_id


@pytest.mark.parametrize("skew", [-301, 301, -86_400, 86_400])
def test_a_timestamp_outside_five_minutes_is_refused(skew: int) -> None:
    verifier = WebhookVerifier(SECRET)

    with pytest.raises(StaleTimestamp):
        verifier.verify(notice(), BODY, now=NOW + skew)
    # Refused without being remembered: the same id, fresh, still verifies.
    assert verifier.verify(notice(at=NOW + skew), BODY, now=NOW + skew)


@pytest.mark.parametrize("skew", [-300, 0, 300])
def test_a_timestamp_within_five_minutes_verifies(skew: int) -> None:
    assert WebhookVerifier(SECRET).verify(notice(), BODY, now=NOW + skew)


def test_a_replay_with_a_refreshed_timestamp_does_not_verify() -> None:
    # What an attacker holding a captured notice (but no secret) can do: change the timestamp.
    stale = notice(at=NOW - 3600)
    refreshed = {**stale, TIMESTAMP_HEADER: str(int(NOW))}

    with pytest.raises(InvalidSignature):
        WebhookVerifier(SECRET).verify(refreshed, BODY, now=NOW)


@pytest.mark.parametrize(
    "change",
    [
        {ID_HEADER: "campaign:a:b:c:g:approval.resolved"},
        {SIGNATURE_HEADER: "v1,AAAA"},
        {SIGNATURE_HEADER: "v2," + notice()[SIGNATURE_HEADER].partition(",")[2]},
        {TIMESTAMP_HEADER: "soon"},
        {ID_HEADER: ""},
    ],
)
def test_a_notice_altered_or_malformed_is_refused(change: dict[str, str]) -> None:
    with pytest.raises(InvalidSignature):
        WebhookVerifier(SECRET).verify({**notice(), **change}, BODY, now=NOW)


def test_another_body_or_secret_is_refused() -> None:
    with pytest.raises(InvalidSignature):
        WebhookVerifier(SECRET).verify(notice(), BODY + b" ", now=NOW)
    with pytest.raises(InvalidSignature):
        WebhookVerifier("another-secret-entirely").verify(notice(), BODY, now=NOW)


def test_rotating_receivers_accept_either_secret_and_any_listed_signature() -> None:
    old = signed_headers("the-old-secret-of-the-hook", "e1", BODY, now=NOW)
    new = notice("e2")
    both = {**new, SIGNATURE_HEADER: f"v1,bm90LWl0 {new[SIGNATURE_HEADER]}"}
    verifier = WebhookVerifier(SECRET, "the-old-secret-of-the-hook")

    assert verifier.verify(old, BODY, now=NOW) == "e1"
    assert verifier.verify(both, BODY, now=NOW) == "e2"


def test_header_names_are_case_insensitive() -> None:
    headers = {name.title(): value for name, value in notice().items()}

    assert WebhookVerifier(SECRET).verify(headers, BODY, now=NOW)


def test_ids_are_remembered_at_least_the_tolerance_and_then_forgotten() -> None:
    verifier = WebhookVerifier(SECRET, remember_seconds=0)
    verifier.verify(notice(), BODY, now=NOW)

    # Within twice the tolerance the id is held whatever `remember_seconds` says.
    with pytest.raises(ReplayedEvent):
        verifier.verify(notice(at=NOW + 299), BODY, now=NOW + 299)
    assert verifier.verify(notice(at=NOW + 601), BODY, now=NOW + 601)


def test_sign_matches_signed_headers() -> None:
    headers = notice("e")
    assert sign(SECRET, "e", headers[TIMESTAMP_HEADER], BODY) == headers[SIGNATURE_HEADER]


def test_the_documented_receiver_answers_as_documented() -> None:
    # The receiver of the webhooks how-to (docs/how-to/webhooks.md), run as written: ours once
    # (204), the replay (200), a forgery (401), a failed handler (503) and its retry accepted.
    readme = (Path(__file__).parents[1] / "docs" / "how-to" / "webhooks.md").read_text()
    [block] = [
        code
        for code in re.findall(r"```python\n(.*?)```", readme, re.DOTALL)
        if "def receive(" in code
    ]
    handled: list[dict[str, object]] = []
    failing = {"on": False}

    def handle(payload: dict[str, object]) -> None:
        if failing["on"]:
            raise RuntimeError("the receiver's database is down")
        handled.append(payload)

    scope: dict[str, object] = {"secret": SECRET, "handle": handle}
    exec(compile(block, "docs/how-to/webhooks.md", "exec"), scope)
    receive = scope["receive"]
    assert callable(receive)

    fresh = signed_headers(SECRET, "e1", BODY)
    assert receive(fresh, BODY) == 204
    assert receive(fresh, BODY) == 200
    assert receive(signed_headers("not-the-secret-at-all", "e2", BODY), BODY) == 401
    assert receive(signed_headers(SECRET, "e3", BODY, now=time.time() - 600), BODY) == 401
    failing["on"] = True
    assert receive(signed_headers(SECRET, "e4", BODY), BODY) == 503
    failing["on"] = False
    assert receive(signed_headers(SECRET, "e4", BODY), BODY) == 204
    assert len(handled) == 2
