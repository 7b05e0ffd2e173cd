"""Failed authentications are throttled per client address: 401s up to the budget, then 429 with
`Retry-After`, whoever the caller claims to be in `X-Forwarded-For` unless a trusted proxy says it.

Every test runs the real API (uvicorn on a free port) and calls it over HTTP from 127.0.0.1.
"""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from campaign_engine.ids import new_object_id
from campaign_engine.settings import Settings
from entrypoints.devserver import free_port
from tests.helpers import Api, create_campaign, running_api

DEFAULT_BUDGET = 60
"""`auth_failure_limit`'s default (60/minute), as docs/reference/settings.md documents it."""

WRONG_KEY_ATTEMPTS = 150


def _default_budget() -> dict[str, Any]:
    # The `settings` fixture raises the budget for the rest of the suite; these tests run the
    # shipped default.
    return {"auth_failure_limit": Settings.model_fields["auth_failure_limit"].default}


def _wrong_key(n: int) -> dict[str, str]:
    # A well-formed key of a key id that does not exist, and junk: both are failures.
    if n % 2:
        return {"Authorization": f"Bearer ce_{new_object_id()}_{uuid.uuid4().hex}"}
    return {"X-API-Key": f"guess-{n}"}


def _assert_throttled(response: httpx.Response) -> None:
    assert response.status_code == 429, response.text
    body = response.json()
    assert body["success"] is False
    assert body["error"]["code"] == "RATE_LIMITED"
    assert body["error"]["details"] == "FAILED_AUTHENTICATIONS"
    assert body["traceId"] == response.headers["X-Trace-Id"]
    assert 1 <= int(response.headers["Retry-After"]) <= 60


def test_default_budget_is_at_most_a_hundred_failures_a_minute() -> None:
    assert Settings.model_fields["auth_failure_limit"].default == f"{DEFAULT_BUDGET}/minute"
    assert Settings.model_fields["trusted_proxies"].default_factory() == []  # type: ignore[misc,call-arg]


@pytest.mark.parametrize("settings_overrides", [_default_budget()])
async def test_150_wrong_keys_are_429_past_the_budget(settings: Settings) -> None:
    async with running_api(settings, temporal=None) as api:
        campaign = await create_campaign(api)
        answers = [
            await api.http.get(campaign.url, headers=_wrong_key(n))
            for n in range(WRONG_KEY_ATTEMPTS)
        ]
        # Throttled before the key is looked at: the right key from the same address is refused
        # too, or the 429s would still tell a guesser when a key was right.
        right_key = await api.http.get(campaign.url, headers=campaign.auth)
        # Routes without a key are not authentication: still served.
        health = await api.http.get("/healthz")

    statuses = [answer.status_code for answer in answers]
    assert statuses == [401] * DEFAULT_BUDGET + [429] * (WRONG_KEY_ATTEMPTS - DEFAULT_BUDGET)
    for answer in answers[DEFAULT_BUDGET:]:
        _assert_throttled(answer)
    _assert_throttled(right_key)
    assert health.status_code == 200


@pytest.mark.parametrize("settings_overrides", [{"auth_failure_limit": "5/minute"}])
async def test_missing_keys_and_other_schemes_spend_the_budget(api: Api) -> None:
    url = f"/v1/accounts/{new_object_id()}/campaigns/{new_object_id()}"
    failures = [
        {},
        {"Authorization": "Basic YWRhOmxvdmVsYWNl"},
        {"Authorization": "Bearer"},
        {"X-API-Key": ""},
        {"Authorization": "Bearer not-a-key"},
    ]
    answers = [await api.http.get(url, headers=headers) for headers in failures]
    over = await api.http.get(url)
    # The codec endpoints authenticate the same way and share the budget.
    codec = await api.http.post("/codec/decode", json={"payloads": []})

    assert [answer.status_code for answer in answers] == [401] * len(failures)
    _assert_throttled(over)
    _assert_throttled(codec)


@pytest.mark.parametrize("settings_overrides", [{"auth_failure_limit": "10/minute"}])
async def test_successful_authentications_spend_nothing(api: Api) -> None:
    campaign = await create_campaign(api)
    answers = [await api.http.get(campaign.url, headers=campaign.auth) for _ in range(30)]

    assert {answer.status_code for answer in answers} == {200}


@pytest.mark.parametrize("settings_overrides", [_default_budget()])
async def test_x_forwarded_for_does_not_escape_the_budget_by_default(api: Api) -> None:
    url = f"/v1/accounts/{new_object_id()}/campaigns/{new_object_id()}"
    answers = [
        await api.http.get(
            url,
            headers={
                **_wrong_key(n),
                # A fresh "client" every time, in every spelling proxies use.
                "X-Forwarded-For": f"198.51.100.{n % 250 + 1}",
                "Forwarded": f"for=203.0.113.{n % 250 + 1}",
                "X-Real-IP": f"192.0.2.{n % 250 + 1}",
            },
        )
        for n in range(WRONG_KEY_ATTEMPTS)
    ]

    statuses = [answer.status_code for answer in answers]
    assert statuses == [401] * DEFAULT_BUDGET + [429] * (WRONG_KEY_ATTEMPTS - DEFAULT_BUDGET)


@pytest.mark.parametrize(
    "settings_overrides",
    [{"auth_failure_limit": "5/minute", "trusted_proxies": ["127.0.0.1"]}],
)
async def test_trusted_proxy_names_the_client(api: Api) -> None:
    url = f"/v1/accounts/{new_object_id()}/campaigns/{new_object_id()}"
    attacker = {"X-Forwarded-For": "198.51.100.7"}
    spent = [await api.http.get(url, headers={**attacker, **_wrong_key(n)}) for n in range(5)]
    over = await api.http.get(url, headers={**attacker, **_wrong_key(5)})
    # The proxy appends the peer it saw; what the client wrote before it is the client's word.
    prepended = await api.http.get(
        url, headers={"X-Forwarded-For": "192.0.2.1, 198.51.100.7", **_wrong_key(6)}
    )
    # Another client behind the same proxy has a budget of its own, and so does the proxy.
    neighbour = await api.http.get(url, headers={"X-Forwarded-For": "198.51.100.8"})
    proxy_itself = await api.http.get(url)

    assert [answer.status_code for answer in spent] == [401] * 5
    _assert_throttled(over)
    _assert_throttled(prepended)
    assert neighbour.status_code == 401, neighbour.text
    assert proxy_itself.status_code == 401, proxy_itself.text


@pytest.mark.parametrize(
    "settings_overrides",
    # A proxy elsewhere: 127.0.0.1 is then an ordinary client whose header is ignored.
    [{"auth_failure_limit": "5/minute", "trusted_proxies": ["10.9.8.7", "192.0.2.0/24"]}],
)
async def test_x_forwarded_for_from_an_untrusted_peer_is_ignored(api: Api) -> None:
    url = f"/v1/accounts/{new_object_id()}/campaigns/{new_object_id()}"
    answers = [
        await api.http.get(url, headers={"X-Forwarded-For": f"198.51.100.{n + 1}"})
        for n in range(6)
    ]

    assert [answer.status_code for answer in answers[:5]] == [401] * 5
    _assert_throttled(answers[5])


async def test_the_budget_is_shared_across_api_processes_on_redis(
    settings: Settings, redis_url: str
) -> None:
    """Two APIs on one Redis count one address's failures together (a fresh address per run,
    named by a trusted proxy, so no other test's counters)."""
    settings = settings.model_copy(
        update={
            "auth_failure_limit": "4/minute",
            "rate_limit_storage_uri": redis_url,
            "trusted_proxies": ["127.0.0.1"],
        }
    )
    client = f"2001:db8::{uuid.uuid4().hex[:4]}"
    url = f"/v1/accounts/{new_object_id()}/campaigns/{new_object_id()}"
    headers = {"X-Forwarded-For": client, "X-API-Key": "wrong"}
    other = settings.model_copy(update={"api_port": free_port()})
    async with running_api(settings, temporal=None) as a, running_api(other, temporal=None) as b:
        spent = [await (a, b)[n % 2].http.get(url, headers=headers) for n in range(4)]
        over = [await a.http.get(url, headers=headers), await b.http.get(url, headers=headers)]

    assert [answer.status_code for answer in spent] == [401] * 4
    for answer in over:
        _assert_throttled(answer)


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("CAMPAIGN_ENGINE_AUTH_FAILURE_LIMIT", "lots"),
        ("CAMPAIGN_ENGINE_TRUSTED_PROXIES", "10.0.0.1,proxy.example"),
        ("CAMPAIGN_ENGINE_TRUSTED_PROXIES", "10.0.0.0/33"),
    ],
)
def test_unreadable_settings_are_refused_naming_the_field(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)

    with pytest.raises(ValidationError) as refused:
        Settings()

    field = variable.removeprefix("CAMPAIGN_ENGINE_").lower()
    assert field in str(refused.value)
    assert value not in str(refused.value)


def test_trusted_proxies_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CAMPAIGN_ENGINE_TRUSTED_PROXIES", " 10.0.0.5 , 10.1.0.0/16,::1 ")

    assert Settings().trusted_proxies == ["10.0.0.5", "10.1.0.0/16", "::1"]


async def test_rate_limit_storage_down_lets_failed_authentications_through_unthrottled(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    """Fail open, as the key budget does: a Redis outage costs the throttle, never the API."""
    settings = settings.model_copy(
        update={
            "auth_failure_limit": "1/minute",
            "rate_limit_storage_uri": f"redis://127.0.0.1:{free_port()}",
            "rate_limit_storage_timeout_seconds": 0.3,
        }
    )
    url = f"/v1/accounts/{new_object_id()}/campaigns/{new_object_id()}"
    async with running_api(settings, temporal=None) as api:
        answers = [await api.http.get(url, headers={"X-API-Key": "wrong"}) for _ in range(3)]

    assert [answer.status_code for answer in answers] == [401, 401, 401]
    assert "authentication not throttled" in caplog.text
