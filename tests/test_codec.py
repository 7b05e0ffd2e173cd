"""Payload encryption: the codec, its key ring and key file, the codec endpoints, lead data at rest
in Temporal, and key rotation — against real dev servers.

The suite's key ring is the checked-in test key of `tests/keys.py`.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import stat
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from pydantic import SecretStr
from temporalio.api.common.v1 import Payload
from temporalio.client import Client
from temporalio.worker import Worker

from campaign_engine import codec
from campaign_engine.codec import (
    ENCODING,
    METADATA_COMPRESSION,
    METADATA_KEY_ID,
    EncryptionCodec,
    KeyRingError,
    PayloadKeyError,
    parse_key_ring,
)
from campaign_engine.key_usage import payload_key_ids, payload_key_usage
from campaign_engine.keys import ALL_ACCOUNT_GROUPS, Permission
from campaign_engine.settings import Settings
from campaign_engine.store import Store
from campaign_engine.temporal import connect
from devsupport.servers import JwksServer
from entrypoints.devserver import DevServer, temporal_cli
from tests import services
from tests.helpers import (
    Api,
    approve_ok,
    assert_eventually,
    create_campaign,
    enrol,
    handle_of,
    lead,
    outbox_files,
    running_api,
    wait_for_status,
)
from tests.keys import OTHER_KEY, OTHER_KEY_ID, TEST_KEY, TEST_KEY_ID
from worker import build_worker

CAPTURED_UI_REQUEST = json.loads((Path(__file__).parent / "codec_ui_request.json").read_text())
KEY_A = f"{TEST_KEY_ID}:{TEST_KEY}"
KEY_B = f"{OTHER_KEY_ID}:{OTHER_KEY}"


def _codec(text: str = KEY_A, **options: Any) -> EncryptionCodec:
    return EncryptionCodec(parse_key_ring(text), **options)


def _json_payload(value: Any) -> Payload:
    return Payload(metadata={"encoding": b"json/plain"}, data=json.dumps(value).encode())


# --- the codec ------------------------------------------------------------------------------


async def test_round_trip_fresh_nonce_and_metadata() -> None:
    payload = _json_payload({"email": "ada@example.com"})
    first, second = await _codec().encode([payload, payload])
    assert first.metadata["encoding"] == ENCODING
    assert first.metadata[METADATA_KEY_ID] == TEST_KEY_ID.encode()
    assert b"ada@example.com" not in first.data
    # A fresh 12-byte nonce per payload: equal inputs never give equal ciphertexts.
    assert first.data[:12] != second.data[:12] and first.data != second.data
    assert await _codec().decode([first, second]) == [payload, payload]


async def test_compresses_above_the_threshold_only() -> None:
    small = _json_payload("x" * 100)
    large = _json_payload("Dear Ada, " * 500)
    encoded_small, encoded_large = await _codec().encode([small, large])
    assert METADATA_COMPRESSION not in encoded_small.metadata
    assert encoded_large.metadata[METADATA_COMPRESSION] == b"zlib"
    assert len(encoded_large.data) < len(large.SerializeToString()) / 4
    assert await _codec().decode([encoded_small, encoded_large]) == [small, large]


async def test_unencrypted_payloads_pass_through() -> None:
    """Histories written before encryption still decode (as themselves)."""
    plain = _json_payload("from before")
    assert await _codec().decode([plain]) == [plain]


async def test_tampered_metadata_or_data_fails_naming_the_key() -> None:
    [encoded] = await _codec().encode([_json_payload("Hello Ada " * 200)])
    # The compression flag is bound as associated data: dropping it is an authentication error.
    dropped = Payload()
    dropped.CopyFrom(encoded)
    del dropped.metadata[METADATA_COMPRESSION]
    flipped = Payload()
    flipped.CopyFrom(encoded)
    flipped.data = encoded.data[:-1] + bytes([encoded.data[-1] ^ 1])
    for broken in (dropped, flipped):
        with pytest.raises(PayloadKeyError, match=f"key id '{TEST_KEY_ID}'.*authentication"):
            await _codec().decode([broken])


async def test_wrong_material_for_a_key_id_or_an_unknown_id_fails_loudly() -> None:
    [encoded] = await _codec(KEY_A).encode([_json_payload("Ada")])
    impostor = f"{TEST_KEY_ID}:{OTHER_KEY}"
    with pytest.raises(PayloadKeyError, match="authentication") as wrong:
        await _codec(impostor).decode([encoded])
    assert wrong.value.key_id == TEST_KEY_ID
    with pytest.raises(PayloadKeyError, match=f"key id '{TEST_KEY_ID}'.*does not hold") as unknown:
        await _codec(KEY_B).decode([encoded])
    assert unknown.value.key_id == TEST_KEY_ID


async def test_ring_first_key_encrypts_every_key_decrypts() -> None:
    [under_a] = await _codec(KEY_A).encode([_json_payload(1)])
    ring = _codec(f"{KEY_B},{KEY_A}")
    [under_b] = await ring.encode([_json_payload(2)])
    assert under_b.metadata[METADATA_KEY_ID] == OTHER_KEY_ID.encode()
    assert await ring.decode([under_a, under_b]) == [_json_payload(1), _json_payload(2)]


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "at least one key"),
        ("nocolon", "id:base64key"),
        ("a b:" + TEST_KEY, "id:base64key"),
        ("a:not base64!", "not valid base64"),
        ("a:" + base64.b64encode(b"short").decode(), "5 bytes"),
        (f"a:{TEST_KEY},a:{OTHER_KEY}", "repeated: a"),
    ],
)
def test_malformed_rings_are_refused_without_echoing_keys(text: str, problem: str) -> None:
    with pytest.raises(KeyRingError, match=problem) as error:
        parse_key_ring(text)
    assert TEST_KEY not in str(error.value)
    with pytest.raises(ValueError, match=problem):
        Settings(payload_keys=SecretStr(text))


def test_keys_are_never_in_reprs() -> None:
    ring = parse_key_ring(KEY_A)
    assert TEST_KEY not in repr(ring)
    assert TEST_KEY not in repr(Settings(payload_keys=SecretStr(KEY_A)))


# --- the key file ---------------------------------------------------------------------------


def test_generated_key_file_is_private_and_shared_by_racing_processes(tmp_path: Path) -> None:
    settings = Settings(state_dir=tmp_path)
    script = (
        "from campaign_engine.codec import load_key_ring; from campaign_engine.settings import "
        f"Settings; print(load_key_ring(Settings(state_dir={str(tmp_path)!r})).primary.entry())"
    )
    racers = [
        subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, env={**os.environ})
        for _ in range(4)
    ]
    keys = {racer.communicate(timeout=60)[0] for racer in racers}
    assert len(keys) == 1, keys
    path = codec.key_file(settings)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert codec.load_key_ring(settings).primary.entry() == keys.pop().decode().strip()


async def test_rotation_in_the_key_file_and_processes_that_predate_it(tmp_path: Path) -> None:
    settings = Settings(state_dir=tmp_path)
    old_process = codec.codec_for(settings)
    old_id = old_process.ring.primary.id
    ring = codec.add_key_to_file(settings, codec.new_key("k-new"))
    assert ring.ids == ["k-new", old_id]
    assert stat.S_IMODE(codec.key_file(settings).stat().st_mode) == 0o600
    with pytest.raises(KeyRingError, match="already"):
        codec.add_key_to_file(settings, codec.new_key("k-new"))
    new_process = codec.codec_for(settings)
    [written_by_new] = await new_process.encode([_json_payload("after")])
    assert written_by_new.metadata[METADATA_KEY_ID] == b"k-new"
    # A process started before the rotation re-reads the file on meeting the new key id, and
    # keeps encrypting under its own key until restarted.
    assert await old_process.decode([written_by_new]) == [_json_payload("after")]
    [still_old] = await old_process.encode([_json_payload("x")])
    assert still_old.metadata[METADATA_KEY_ID] == old_id.encode()


def test_cli_rotate_payload_key_with_keys_from_settings_changes_nothing(tmp_path: Path) -> None:
    env = {**os.environ, "CAMPAIGN_ENGINE_STATE_DIR": str(tmp_path)}
    cli = str(Path(temporal_cli()).with_name("campaign-engine"))
    from_settings = subprocess.run(
        [cli, "keys", "rotate-payload-key", "--id", "k2"],
        env={**env, "CAMPAIGN_ENGINE_PAYLOAD_KEYS": KEY_A},
        capture_output=True,
        text=True,
        check=True,
    )
    assert "nothing was changed" in from_settings.stdout
    assert '"$CAMPAIGN_ENGINE_PAYLOAD_KEYS,k2:' in from_settings.stdout
    assert TEST_KEY not in from_settings.stdout
    assert not codec.key_file(Settings(state_dir=tmp_path)).exists()
    from_file = subprocess.run(
        [cli, "keys", "rotate-payload-key", "--id", "k2"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    added = json.loads(from_file.stdout)
    assert added["added"] == "k2" and added["ring"][0] == "k2" and len(added["ring"]) == 2


# --- the codec endpoints --------------------------------------------------------------------


def _captured_body() -> str:
    body: str = CAPTURED_UI_REQUEST["body"]
    return body


async def test_codec_decodes_exactly_what_the_ui_sends(api: Api) -> None:
    """The body and headers captured from the Temporal Web UI in a real browser
    (tests/codec_ui_request.json; test_codec_ui.py captures it afresh). Captured before
    account-group scopes, its payload is of the deployment scope: an operator's key reads it."""
    key = await api.issue_key([ALL_ACCOUNT_GROUPS], [Permission.PAYLOADS_DECODE])
    response = await api.http.post(
        CAPTURED_UI_REQUEST["path"],
        content=_captured_body(),
        headers={**CAPTURED_UI_REQUEST["headers"], "Authorization": f"Bearer {key.key}"},
    )
    assert response.status_code == 200, response.text
    [payload] = response.json()["payloads"]
    assert set(response.json()) == {"payloads"}
    assert base64.b64decode(payload["metadata"]["encoding"]) == b"json/plain"
    assert json.loads(base64.b64decode(payload["data"])) == CAPTURED_UI_REQUEST["decodes_to"]


async def test_codec_encode_then_decode_round_trips(api: Api) -> None:
    key = await api.issue_key([uuid.uuid4().hex[:24]], [Permission.PAYLOADS_DECODE])
    auth = {"X-API-Key": key.key, "X-Namespace": "default"}
    plain = {
        "payloads": [
            {
                "metadata": {"encoding": base64.b64encode(b"json/plain").decode()},
                "data": base64.b64encode(b'"Hello Ada"').decode(),
            }
        ]
    }
    encoded = await api.http.post("/codec/encode", json=plain, headers=auth)
    assert encoded.status_code == 200, encoded.text
    [sealed] = encoded.json()["payloads"]
    assert base64.b64decode(sealed["metadata"]["encoding"]) == ENCODING
    decoded = await api.http.post("/codec/decode", json=encoded.json(), headers=auth)
    assert decoded.json() == plain


async def test_codec_refuses_without_key_or_permission(api: Api) -> None:
    no_key = await api.http.post(CAPTURED_UI_REQUEST["path"], content=_captured_body())
    assert no_key.status_code == 401
    assert no_key.json()["error"]["code"] == "UNAUTHORIZED"
    key = await api.issue_key(
        [uuid.uuid4().hex[:24]], [Permission.CAMPAIGNS_READ, Permission.CAMPAIGNS_EXECUTE]
    )
    refused = await api.http.post(
        CAPTURED_UI_REQUEST["path"],
        content=_captured_body(),
        headers={**CAPTURED_UI_REQUEST["headers"], "Authorization": f"Bearer {key.key}"},
    )
    assert refused.status_code == 403
    body = refused.json()
    assert body["success"] is False and body["data"] is None
    assert body["error"]["code"] == "MISSING_PERMISSION"
    assert body["error"]["details"] == "payloads:decode"


async def test_codec_failures_are_400_envelopes_naming_the_key(api: Api) -> None:
    key = await api.issue_key([ALL_ACCOUNT_GROUPS], [Permission.PAYLOADS_DECODE])
    auth = {"Authorization": f"Bearer {key.key}"}
    [foreign] = await _codec(KEY_B).encode([_json_payload("x")])
    body = {
        "payloads": [
            {
                "metadata": {k: base64.b64encode(v).decode() for k, v in foreign.metadata.items()},
                "data": base64.b64encode(foreign.data).decode(),
            }
        ]
    }
    unknown = await api.http.post("/codec/decode", json=body, headers=auth)
    assert unknown.status_code == 400
    assert unknown.json()["error"]["code"] == "PAYLOAD_DECODE_FAILED"
    assert unknown.json()["error"]["details"] == OTHER_KEY_ID
    garbage = await api.http.post("/codec/decode", json={"payloads": "no"}, headers=auth)
    assert garbage.status_code == 400 and garbage.json()["error"]["code"] == "VALIDATION_ERROR"
    other_namespace = await api.http.post(
        "/codec/decode", content=_captured_body(), headers={**auth, "X-Namespace": "elsewhere"}
    )
    assert other_namespace.status_code == 400
    assert other_namespace.json()["error"]["details"] == "X-Namespace"


UI_ORIGIN = "http://localhost:8080"


@pytest.mark.parametrize("settings_overrides", [{"codec_cors_origins": [UI_ORIGIN]}])
async def test_codec_cors_answers_configured_origins_only(api: Api) -> None:
    preflight = {
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": CAPTURED_UI_REQUEST["preflight"][
            "Access-Control-Request-Headers"
        ],
    }
    allowed = await api.http.options("/codec/decode", headers={**preflight, "Origin": UI_ORIGIN})
    assert allowed.status_code == 204
    assert allowed.headers["Access-Control-Allow-Origin"] == UI_ORIGIN
    assert "POST" in allowed.headers["Access-Control-Allow-Methods"]
    granted = {
        h.strip().lower() for h in allowed.headers["Access-Control-Allow-Headers"].split(",")
    }
    assert {"content-type", "x-namespace", "authorization"} <= set(granted)
    refused = await api.http.options(
        "/codec/decode", headers={**preflight, "Origin": "https://evil.example"}
    )
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "CORS_ORIGIN_NOT_ALLOWED"
    assert "Access-Control-Allow-Origin" not in refused.headers
    # Answers carry CORS for the allowed origin only, errors included (the UI reads them).
    answer = await api.http.post(
        "/codec/decode", content=_captured_body(), headers={"Origin": UI_ORIGIN}
    )
    assert answer.status_code == 401
    assert answer.headers["Access-Control-Allow-Origin"] == UI_ORIGIN
    other = await api.http.post(
        "/codec/decode", content=_captured_body(), headers={"Origin": "https://evil.example"}
    )
    assert "Access-Control-Allow-Origin" not in other.headers
    # The rest of the API answers no CORS at all.
    health = await api.http.get("/healthz", headers={"Origin": UI_ORIGIN})
    assert "Access-Control-Allow-Origin" not in health.headers


@pytest.mark.parametrize(
    "settings_overrides", [{"codec_allow_local_ui_without_key": True, "temporal_ui_port": 8233}]
)
async def test_local_ui_decodes_without_a_key_only_when_allowed(api: Api) -> None:
    local = {**CAPTURED_UI_REQUEST["headers"], "Origin": "http://127.0.0.1:8233"}
    response = await api.http.post(
        CAPTURED_UI_REQUEST["path"], content=_captured_body(), headers=local
    )
    assert response.status_code == 200, response.text
    assert response.headers["Access-Control-Allow-Origin"] == "http://127.0.0.1:8233"
    elsewhere = {**local, "Origin": "http://127.0.0.1:9999"}
    other = await api.http.post(
        CAPTURED_UI_REQUEST["path"], content=_captured_body(), headers=elsewhere
    )
    assert other.status_code == 401


async def test_local_ui_needs_a_key_by_default(api: Api) -> None:
    local = {**CAPTURED_UI_REQUEST["headers"], "Origin": "http://127.0.0.1:8233"}
    response = await api.http.post(
        CAPTURED_UI_REQUEST["path"], content=_captured_body(), headers=local
    )
    assert response.status_code == 401


# --- lead data at rest ----------------------------------------------------------------------

PHILIPPA = {
    "email": "philippa.quernby@zanzibar-quill.example",
    "firstName": "Philippa",
    "lastName": "Quernbyworth",
    "company": "Xylophonic Widgets Ltd",
}
SECRET_SUBJECT = "Quokka terms for Philippa"
SECRET_CAMPAIGN: dict[str, Any] = {
    "name": "At rest",
    "approvalTimeout": "P7D",
    "steps": [
        {
            "id": "intro",
            "subject": "Quokka terms for {{ lead.firstName }}",
            "body": "Dear {{ lead.firstName }} {{ lead.lastName }} of {{ lead.company }}",
            "requiresApproval": True,
        }
    ],
}


def readable(value: Any) -> Iterator[bytes]:
    """Every string in a JSON value, and what it decodes to when it is base64."""
    if isinstance(value, dict):
        for item in value.values():
            yield from readable(item)
    elif isinstance(value, list):
        for item in value:
            yield from readable(item)
    elif isinstance(value, str):
        yield value.encode()
        with contextlib.suppress(ValueError):
            yield base64.b64decode(value, validate=True)


@asynccontextmanager
async def stack(server: DevServer, settings: Settings) -> AsyncIterator[tuple[Client, Api]]:
    """A client, worker and API of these settings (their payload key ring) on `server`."""
    settings = settings.model_copy(update={"temporal_address": server.address})
    client = await connect(settings)
    store = await Store.open(settings.resolved_database_url)
    try:
        async with build_worker(client, settings, store), running_api(settings, client) as api:
            yield client, api
    finally:
        await store.close()


async def test_no_lead_data_in_temporals_database_or_history(
    settings: Settings, tmp_path: Path
) -> None:
    db_file = tmp_path / "temporal.db"
    server = DevServer(db_file=db_file)
    await server.start()
    try:
        async with stack(server, settings) as (client, api):
            campaign = await create_campaign(api, SECRET_CAMPAIGN)
            instance_id = await enrol(api, campaign, lead(**PHILIPPA))
            status = await wait_for_status(api, campaign, instance_id, hasPendingApproval=True)
            assert status["hasPendingApproval"]
            read = await api.http.get(campaign.instance_url(instance_id), headers=campaign.auth)
            pending = read.json()["data"]["pendingContent"]
            assert pending["subject"] == SECRET_SUBJECT
            assert (
                PHILIPPA["company"] in pending["body"] and PHILIPPA["lastName"] in pending["body"]
            )
            approved = await api.http.post(
                f"{campaign.instance_url(instance_id)}/approve", headers=campaign.auth
            )
            assert approved.status_code == 200, approved.text
            assert approved.json()["data"]["action"] == "approved"
            await wait_for_status(api, campaign, instance_id, workflowStatus="completed")
            [delivered] = outbox_files(api.settings)
            message = delivered.read_text()
            assert SECRET_SUBJECT in message and PHILIPPA["email"] in message
            # The client decodes what Temporal keeps: the workflow's input is all there.
            handle = handle_of(client, campaign, instance_id)
            show = await asyncio.create_subprocess_exec(
                str(temporal_cli()),
                *("workflow", "show", "--address", server.address, "--workflow-id", handle.id),
                *("-o", "json"),
                stdout=asyncio.subprocess.PIPE,
            )
            shown, _ = await show.communicate()
            assert show.returncode == 0
            events = json.loads(shown)["events"]
            assert len(events) > 10
            # The CLI decrypts through the API's codec endpoint with a `payloads:decode` key.
            operator = await api.issue_key(
                [campaign.account_group_id], [Permission.PAYLOADS_DECODE]
            )
            decoded = await asyncio.create_subprocess_exec(
                str(temporal_cli()),
                *("workflow", "show", "--address", server.address, "--workflow-id", handle.id),
                *("-o", "json", "--codec-endpoint", f"{api.http.base_url}/codec"),
                *("--codec-auth", f"Bearer {operator.key}"),
                stdout=asyncio.subprocess.PIPE,
            )
            decoded_out, _ = await decoded.communicate()
            assert decoded.returncode == 0
            decoded_texts = b"\n".join(readable(json.loads(decoded_out)))
            assert SECRET_SUBJECT.encode() in decoded_texts
            assert PHILIPPA["email"].encode() in decoded_texts
            # Every payload but the search attributes (ids and states) is encrypted.
            history = await handle.fetch_history()
            assert {k for event in history.events for k in payload_key_ids(event)} == {TEST_KEY_ID}
    finally:
        await server.stop()
    secrets = [*PHILIPPA.values(), SECRET_SUBJECT]
    for event in events:
        # `-o json` shows payload data base64-encoded: look at it decoded too.
        texts = b"\n".join(readable(event))
        for secret in secrets:
            assert secret.encode() not in texts, (secret, event)
    files = sorted(db_file.parent.glob(db_file.name + "*"))
    assert files
    for path in files:
        data = path.read_bytes()
        for secret in secrets:
            for encoded in {secret.encode(), secret.encode("utf-16-le")}:
                assert encoded not in data, (secret, path.name)
    # ...and the ids, which search attributes carry, are there: the scan does read the file.
    assert campaign.campaign_id.encode() in b"".join(p.read_bytes() for p in files)


# --- rotation -------------------------------------------------------------------------------


ONE_STEP: dict[str, Any] = {
    "name": "Rotation",
    "approvalTimeout": "P7D",
    "steps": [{"id": "intro", "subject": "Hi {{ lead.firstName }}", "body": "B"}],
}


async def test_rotation_keeps_old_instances_running_and_a_removed_key_fails_loudly(
    settings: Settings,
) -> None:
    server = DevServer()
    await server.start()
    try:
        ring_a = settings.model_copy(update={"payload_keys": SecretStr(KEY_A)})
        ring_ba = settings.model_copy(update={"payload_keys": SecretStr(f"{KEY_B},{KEY_A}")})
        ring_b = settings.model_copy(update={"payload_keys": SecretStr(KEY_B)})
        async with stack(server, ring_a) as (_, api):
            campaign = await create_campaign(api, ONE_STEP)
            to_approve = await enrol(api, campaign)
            stranded = await enrol(api, campaign)
            for instance_id in (to_approve, stranded):
                await wait_for_status(api, campaign, instance_id, hasPendingApproval=True)

        # Rotated: new processes encrypt under B and still read A.
        async with stack(server, ring_ba) as (client, api):
            usage = (await payload_key_usage(client, parse_key_ring(f"{KEY_B},{KEY_A}"))).as_json()
            assert usage["keys"][TEST_KEY_ID]["openRuns"] == 2
            assert usage["retirable"] == []
            await approve_ok(api, campaign, to_approve)
            await wait_for_status(api, campaign, to_approve, workflowStatus="completed")
            assert len(outbox_files(api.settings)) == 1
            history = await handle_of(client, campaign, to_approve).fetch_history()
            key_ids = {key_id for event in history.events for key_id in payload_key_ids(event)}
            assert key_ids == {TEST_KEY_ID, OTHER_KEY_ID}

        # A removed while an open instance still holds payloads under it: its next workflow
        # task fails (and retries) with an error naming A; nothing is decoded wrongly.
        async with stack(server, ring_b) as (client, api):
            handle = handle_of(client, campaign, stranded)
            await handle.signal("approve", {"decided_by": "rotation test"})
            failure_messages: list[str] = []

            async def task_failed_naming_a() -> bool:
                async for event in handle.fetch_history_events():
                    if event.HasField("workflow_task_failed_event_attributes"):
                        failure = event.workflow_task_failed_event_attributes.failure
                        # Failure messages are encrypted too (under B, which this client holds).
                        error = await client.data_converter.decode_failure(failure)
                        failure_messages.append(str(error))
                return any(f"'{TEST_KEY_ID}'" in message for message in failure_messages)

            await assert_eventually(task_failed_naming_a, within=40)
            assert "does not hold" in failure_messages[-1]
            assert len(outbox_files(api.settings)) == 1  # the first instance's message only
            assert (await handle.describe()).status is not None
            usage = (await payload_key_usage(client, parse_key_ring(KEY_B))).as_json()
            assert usage["missing"] == [TEST_KEY_ID]
    finally:
        await server.stop()


@pytest.mark.parametrize("settings_overrides", [{"payload_keys": None}])
def test_without_the_setting_processes_of_one_state_dir_share_the_generated_key(
    settings: Settings,
) -> None:
    assert settings.payload_keys is None
    first, second = codec.codec_for(settings), codec.codec_for(settings)
    assert first.ring.ids == second.ring.ids
    assert codec.key_file(settings).exists()


# --- forwarded access tokens (a Web UI with its own login) ----------------------------------

ISSUER = "https://login.acme.example/"
AUDIENCE = "temporal-ui"


def _token(private_key: Any, *, kid: str = "idp-1", **claims: Any) -> str:
    now = int(time.time())
    body = {"iss": ISSUER, "aud": AUDIENCE, "sub": "ops@acme", "iat": now, "exp": now + 300}
    return jwt.encode({**body, **claims}, private_key, algorithm="RS256", headers={"kid": kid})


async def test_codec_accepts_a_forwarded_access_token_that_verifies(
    settings: Settings, temporal: Client
) -> None:
    private_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = jwt.algorithms.RSAAlgorithm.to_jwk(private_key.public_key(), as_dict=True)
    idp = JwksServer(keys=[{**jwk, "kid": "idp-1", "use": "sig", "alg": "RS256"}])
    await idp.start()
    oidc = {
        "codec_oidc_jwks_url": idp.url,
        "codec_oidc_issuer": ISSUER,
        "codec_oidc_audience": AUDIENCE,
    }
    try:
        async with running_api(settings.model_copy(update=oidc), temporal) as api:

            async def decode(token: str) -> Any:
                return await api.http.post(
                    CAPTURED_UI_REQUEST["path"],
                    content=_captured_body(),
                    headers={**CAPTURED_UI_REQUEST["headers"], "Authorization": f"Bearer {token}"},
                )

            granted = await decode(_token(private_key, scope="openid payloads:decode"))
            assert granted.status_code == 200, granted.text
            [payload] = granted.json()["payloads"]
            assert (
                json.loads(base64.b64decode(payload["data"])) == CAPTURED_UI_REQUEST["decodes_to"]
            )
            as_role = await decode(_token(private_key, roles=["payloads:decode"]))
            assert as_role.status_code == 200, as_role.text

            no_scope = await decode(_token(private_key, scope="openid profile"))
            assert no_scope.status_code == 403
            assert no_scope.json()["error"]["code"] == "MISSING_PERMISSION"
            assert no_scope.json()["error"]["details"] == "payloads:decode"

            other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            hmac_token = jwt.encode(
                {
                    "iss": ISSUER,
                    "aud": AUDIENCE,
                    "sub": "x",
                    "exp": int(time.time()) + 60,
                    "scope": "payloads:decode",
                },
                "guessable-secret-of-thirty-two-bytes",
                algorithm="HS256",
                headers={"kid": "idp-1"},
            )
            for refused in (
                _token(private_key, aud="another-app", scope="payloads:decode"),
                _token(private_key, iss="https://evil.example/", scope="payloads:decode"),
                _token(private_key, exp=int(time.time()) - 10, scope="payloads:decode"),
                _token(other_key, scope="payloads:decode"),  # not the provider's signature
                _token(private_key, kid="unknown", scope="payloads:decode"),
                hmac_token,  # symmetric algorithms are never accepted
                "not-a-jwt",
            ):
                answer = await decode(refused)
                assert answer.status_code == 401, (refused, answer.text)
                assert answer.json()["error"]["code"] == "UNAUTHORIZED"
            # The provider's keys were fetched once, then twice at most (an unknown kid refreshes
            # them no more than once a minute).
            assert 1 <= idp.fetches <= 2
            # API keys keep working beside tokens (an operator's: the payload predates scopes).
            key = await api.issue_key([ALL_ACCOUNT_GROUPS], [Permission.PAYLOADS_DECODE])
            assert (await decode(key.key)).status_code == 200
    finally:
        await idp.stop()


def test_oidc_settings_come_together() -> None:
    with pytest.raises(ValueError, match="together"):
        Settings(codec_oidc_jwks_url="https://login.acme.example/jwks")


async def test_cli_payload_key_usage_reports_open_runs_per_key(
    api: Api, worker: Worker, settings: Settings
) -> None:
    campaign = await create_campaign(api, ONE_STEP)
    instance_id = await enrol(api, campaign)
    await wait_for_status(api, campaign, instance_id, hasPendingApproval=True)
    ring = f"{KEY_B},{KEY_A}"  # rotated: B encrypts, A still decrypts
    report = await asyncio.create_subprocess_exec(
        services.CLI,
        *("keys", "payload-key-usage"),
        env=services.process_env(settings, CAMPAIGN_ENGINE_PAYLOAD_KEYS=ring),
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await report.communicate()
    assert report.returncode == 0
    usage = json.loads(out)
    assert usage["ring"] == [OTHER_KEY_ID, TEST_KEY_ID]
    assert usage["encryptsWith"] == OTHER_KEY_ID
    # The session server holds other tests' open runs too: all under the test key A.
    assert usage["keys"][TEST_KEY_ID]["openRuns"] >= 1
    assert usage["keys"][OTHER_KEY_ID]["openRuns"] == 0
    assert usage["retirable"] == [] and usage["missing"] == []
    assert usage["unencryptedRuns"] == 0
