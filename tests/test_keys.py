"""API keys: shown once, stored only as a keyed hash, managed from the CLI."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

import pytest
from temporalio.client import Client

from campaign_engine.ids import new_object_id
from campaign_engine.keys import KeyRing, Permission, load_pepper
from campaign_engine.settings import Settings
from campaign_engine.store import Store
from entrypoints.devserver import free_port
from tests.helpers import Api, Campaign, assert_eventually, running_api

CLI = str(Path(sys.executable).with_name("campaign-engine"))


async def cli(settings: Settings, *args: str) -> tuple[int, str, str]:
    env = {
        **os.environ,
        "CAMPAIGN_ENGINE_STATE_DIR": str(settings.state_dir),
        "CAMPAIGN_ENGINE_DATABASE_URL": settings.resolved_database_url,
    }
    process = await asyncio.create_subprocess_exec(
        CLI, *args, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_keys_are_not_stored_in_clear(api: Api, campaign: Campaign) -> None:
    # Use the key, so whatever the API writes on use is on disk too.
    assert (await api.http.get(campaign.url, headers=campaign.auth)).status_code == 200
    secret = campaign.key.key.split("_", 2)[2]

    files = [p for p in api.settings.state_dir.rglob("*") if p.is_file()]

    assert any(p.name.startswith("campaign-engine.db") for p in files)
    for path in files:
        content = path.read_bytes()
        assert campaign.key.key.encode() not in content, path
        assert secret.encode() not in content, path
    stored = await api.store.get_api_key(campaign.key.id)
    assert stored is not None and len(stored.key_hash) == 64


async def test_key_checked_under_other_pepper_is_rejected(api: Api, campaign: Campaign) -> None:
    other = KeyRing(api.store, b"another pepper")

    assert await other.verify(campaign.key.key) is None
    assert await KeyRing(api.store, load_pepper(api.settings)).verify(campaign.key.key) is not None


async def test_pepper_is_generated_once_and_kept(tmp_path: Path) -> None:
    settings = Settings(state_dir=tmp_path)

    first = load_pepper(settings)

    assert load_pepper(settings) == first
    assert len(first) == 64
    assert (tmp_path / "api-key-pepper").stat().st_mode & 0o777 == 0o600


async def test_keys_cli_create_list_revoke(api: Api) -> None:
    account_group_id = new_object_id()
    code, out, _ = await cli(
        api.settings,
        "keys", "create", "--account-group", account_group_id,
        "--permission", "campaigns:read", "--permission", "campaigns:execute", "--name", "crm",
    )  # fmt: skip
    assert code == 0
    issued = json.loads(out)
    assert issued["permissions"] == ["campaigns:execute", "campaigns:read"]
    url = f"/v1/accounts/{account_group_id}/campaigns/{new_object_id()}"
    headers = {"Authorization": f"Bearer {issued['key']}"}
    assert (await api.http.get(url, headers=headers)).status_code == 404

    code, out, _ = await cli(api.settings, "keys", "list")
    [listed] = [json.loads(line) for line in out.splitlines()]
    assert listed["id"] == issued["id"] and "key" not in listed and listed["revokedAt"] is None

    code, out, _ = await cli(api.settings, "keys", "revoke", issued["id"])
    assert code == 0
    await assert_eventually(
        lambda: api.http.get(url, headers=headers),
        lambda response: response.status_code == 401,
        within=api.settings.api_key_cache_seconds + 0.5,
        what="the revoked key refused",
    )


async def test_a_revoked_key_is_refused_within_the_cache_bound_on_every_api_process(
    settings: Settings, temporal: Client
) -> None:
    # Two API processes on one store, both having just verified (and cached) the key.
    other = settings.model_copy(update={"api_port": free_port()})
    async with running_api(settings, temporal) as first, running_api(other, temporal) as second:
        key = await first.issue_key([new_object_id()])
        headers = {"Authorization": f"Bearer {key.key}"}
        url = f"/v1/accounts/{key.account_groups[0]}/campaigns/{new_object_id()}"
        for api in (first, second):
            assert (await api.http.get(url, headers=headers)).status_code == 404
        revoked_at = asyncio.get_running_loop().time()
        assert await first.store.revoke_api_key(key.id)

        for api in (first, second):
            await assert_eventually(
                lambda api=api: api.http.get(url, headers=headers),  # type: ignore[misc]
                lambda response: response.status_code == 401,
                within=settings.api_key_cache_seconds + 0.5,
                what="the revoked key refused",
            )
        # The bound is the setting: 1 s by default.
        assert settings.api_key_cache_seconds == 1.0
        assert asyncio.get_running_loop().time() - revoked_at < settings.api_key_cache_seconds + 1


@pytest.mark.parametrize("settings_overrides", [{"api_key_cache_seconds": 0}])
async def test_without_the_cache_a_revocation_is_refused_at_once(api: Api) -> None:
    key = await api.issue_key([new_object_id()])
    headers = {"Authorization": f"Bearer {key.key}"}
    url = f"/v1/accounts/{key.account_groups[0]}/campaigns/{new_object_id()}"
    assert (await api.http.get(url, headers=headers)).status_code == 404

    assert await api.store.revoke_api_key(key.id)

    assert (await api.http.get(url, headers=headers)).status_code == 401


async def test_keys_cli_rejects_bad_input(api: Api) -> None:
    bad_group = await cli(
        api.settings, "keys", "create", "--account-group", "acme", "--permission", "campaigns:read"
    )
    bad_permission = await cli(
        api.settings,
        "keys", "create", "--account-group", new_object_id(), "--permission", "campaigns:delete",
    )  # fmt: skip
    unknown = await cli(api.settings, "keys", "revoke", "000000000000")

    assert bad_group[0] == 2 and "24-character" in bad_group[2]
    assert bad_permission[0] == 2 and "campaigns:delete" in bad_permission[2]
    assert unknown[0] == 1 and "no API key" in unknown[2]


async def test_store_keeps_permissions_and_groups(tmp_path: Path) -> None:
    store = await Store.open(f"sqlite+aiosqlite:///{tmp_path / 'keys.db'}")
    try:
        keyring = KeyRing(store, b"pepper")
        issued = await keyring.issue("k", ["b" * 24, "a" * 24], [Permission.CAMPAIGNS_READ])

        principal = await keyring.verify(issued.key)

        assert principal is not None
        assert principal.account_groups == {"a" * 24, "b" * 24}
        assert principal.permissions == {Permission.CAMPAIGNS_READ}
        assert await keyring.verify(issued.key + "x") is None
        assert await keyring.verify("ce_nothing") is None
    finally:
        await store.close()
