"""The payload codec's boundary (issue 24, items 1 and 4): strict mode refuses inputs nobody with a
payload key wrote, and each account group's payloads decode only for keys of that group — against
the real `temporal` CLI, dev server, worker and API.
"""

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import json_format
from temporalio.api.common.v1 import Payload
from temporalio.client import Client, WorkflowFailureError
from temporalio.common import RawValue
from temporalio.converter import DataConverter, WorkflowSerializationContext
from temporalio.exceptions import ApplicationError

from campaign_engine import codec
from campaign_engine.codec import (
    ENCODING,
    METADATA_ACCOUNT_GROUP,
    PLAINTEXT_ENCODING,
    PLAINTEXT_REFUSED_TYPE,
    EncryptionCodec,
    PayloadKeyError,
    PayloadScopeError,
    StrictPayloadConverter,
    parse_key_ring,
)
from campaign_engine.ids import new_object_id, workflow_id_for
from campaign_engine.keys import ALL_ACCOUNT_GROUPS, KeyKindError, Permission
from campaign_engine.settings import Settings
from campaign_engine.store import Store
from campaign_engine.temporal import connect
from entrypoints.dev import dev_settings
from entrypoints.devserver import DevServer, temporal_cli
from tests import histories, services
from tests.helpers import (
    Api,
    Campaign,
    assert_eventually,
    create_campaign,
    enrol,
    enrol_to_gate,
    handle_of,
    outbox_files,
    wait_for_status,
)
from tests.histories import replays
from tests.keys import TEST_KEY, TEST_KEY_ID
from worker import build_worker
from workflows import campaign as campaign_workflow
from workflows.campaign import CampaignWorkflow
from workflows.types import CampaignInput, CampaignSnapshot, CampaignStep, Lead

KEY_A = f"{TEST_KEY_ID}:{TEST_KEY}"
GROUP_A = "a" * 24
GROUP_B = "b" * 24


def _codec(*, strict: bool = False) -> EncryptionCodec:
    return EncryptionCodec(parse_key_ring(KEY_A), strict=strict)


def _of_workflow(codec_: EncryptionCodec, group: str) -> EncryptionCodec:
    context = WorkflowSerializationContext("default", workflow_id_for(group, "c" * 24, "d" * 24))
    return codec_.with_context(context)


def _json(value: Any) -> Payload:
    return Payload(metadata={"encoding": b"json/plain"}, data=json.dumps(value).encode())


def _wire(payloads: list[Payload]) -> dict[str, Any]:
    """Payloads as the codec protocol's JSON body."""
    return {"payloads": [json_format.MessageToDict(p) for p in payloads]}


# --- scopes ---------------------------------------------------------------------------------


async def test_a_workflows_payloads_are_sealed_for_its_account_group() -> None:
    of_a = _of_workflow(_codec(), GROUP_A)
    [sealed] = await of_a.encode([_json({"email": "ada@example.com"})])
    assert sealed.metadata["encoding"] == ENCODING
    assert sealed.metadata[METADATA_ACCOUNT_GROUP] == GROUP_A.encode()
    assert await _codec().decode([sealed]) == [_json({"email": "ada@example.com"})]
    # The group is bound as associated data and in the key: relabelled, or with the label
    # dropped (the ring key itself), it fails authentication.
    for label in (GROUP_B.encode(), None):
        moved = Payload()
        moved.CopyFrom(sealed)
        if label is None:
            del moved.metadata[METADATA_ACCOUNT_GROUP]
        else:
            moved.metadata[METADATA_ACCOUNT_GROUP] = label
        with pytest.raises(PayloadKeyError, match="authentication"):
            await _codec().decode([moved])
    # Two groups' data keys differ from each other and from the ring key.
    secret = parse_key_ring(KEY_A).primary.secret
    keys = {codec.derive_group_key(secret, GROUP_A), codec.derive_group_key(secret, GROUP_B)}
    assert len(keys | {secret}) == 3


async def test_decrypt_for_a_caller_holds_to_its_groups() -> None:
    [of_a] = await _of_workflow(_codec(), GROUP_A).encode([_json("A's lead")])
    [legacy] = await _codec().encode([_json("before scopes")])
    plain = _json("not secret")
    reader = _codec()
    assert reader.decrypt_for(of_a, frozenset({GROUP_A})) == _json("A's lead")
    assert reader.decrypt_for(plain, frozenset({GROUP_B})) == plain
    with pytest.raises(PayloadScopeError) as refused:
        reader.decrypt_for(of_a, frozenset({GROUP_B}))
    assert refused.value.account_group == GROUP_A
    with pytest.raises(PayloadScopeError) as deployment:
        reader.decrypt_for(legacy, frozenset({GROUP_A}))
    assert deployment.value.account_group is None
    # A key of every group (None) reads all, the payloads of before scopes included.
    assert reader.decrypt_for(of_a, None) == _json("A's lead")
    assert reader.decrypt_for(legacy, None) == _json("before scopes")


# --- strict mode ----------------------------------------------------------------------------


async def test_strict_marks_plaintext_and_other_groups_payloads() -> None:
    strict_a = _of_workflow(_codec(strict=True), GROUP_A)
    [of_b] = await _of_workflow(_codec(), GROUP_B).encode([_json("B wrote this")])
    [legacy] = await _codec().encode([_json("deployment")])
    [of_a] = await strict_a.encode([_json("A")])
    plain, foreign, old, own = await strict_a.decode([_json("forged"), of_b, legacy, of_a])
    assert plain.metadata["encoding"] == PLAINTEXT_ENCODING
    assert foreign.metadata["encoding"] == PLAINTEXT_ENCODING
    assert b"account group " + GROUP_B.encode() in foreign.metadata["plaintext-reason"]
    assert (old, own) == (_json("deployment"), _json("A"))
    assert codec.unmark_plaintext(plain) == _json("forged")
    # Not strict, plaintext passes as it always did.
    assert await _of_workflow(_codec(), GROUP_A).decode([_json("x")]) == [_json("x")]


def test_strict_converter_refuses_marked_typed_values_and_hands_signals_a_raw_value() -> None:
    marked = codec.mark_plaintext(_json({"account_group_id": GROUP_A}), "not encrypted")
    converter = StrictPayloadConverter()
    with pytest.raises(ApplicationError) as refused:
        converter.from_payloads([marked], [CampaignInput])
    assert refused.value.type == PLAINTEXT_REFUSED_TYPE and refused.value.non_retryable
    [raw] = converter.from_payloads([marked], None)
    assert isinstance(raw, RawValue) and campaign_workflow.is_unverified(raw)
    assert converter.from_payloads([_json(1)], None) == [1]


def test_the_workflow_package_names_the_codecs_mark() -> None:
    assert campaign_workflow.PLAINTEXT_ENCODING == codec.PLAINTEXT_ENCODING
    assert campaign_workflow.PLAINTEXT_ORIGINAL_ENCODING == codec.METADATA_PLAINTEXT_ENCODING


def test_make_dev_turns_strict_off_unless_set() -> None:
    assert Settings().payload_codec_strict is True
    assert dev_settings(Settings()).payload_codec_strict is False
    assert dev_settings(Settings(payload_codec_strict=True)).payload_codec_strict is True


# --- a plaintext workflow input from the temporal CLI ---------------------------------------


def _forged_input(account_group_id: str, mailbox: str | None) -> CampaignInput:
    """What an attacker who reaches Temporal types: a one-step campaign without approval."""
    return CampaignInput(
        account_group_id=account_group_id,
        campaign_id=new_object_id(),
        workflow_instance_id=new_object_id(),
        lead=Lead(id=new_object_id(), email="victim@example.com", first_name="Vic"),
        campaign=CampaignSnapshot(
            name="Urgent",
            steps=[
                CampaignStep(
                    id="intro",
                    subject="Your account is locked",
                    body="Reset it at https://bigbank.example.evil/",
                    requires_approval=False,
                )
            ],
            mailbox=mailbox,
        ),
    )


async def _cli_start(
    server: DevServer, settings: Settings, forged: CampaignInput, tmp_path: Path, *flags: str
) -> str:
    """`temporal workflow start --type CampaignWorkflow … --input-file forged.json`; returns the
    workflow id."""
    workflow_id = workflow_id_for(
        forged.account_group_id, forged.campaign_id, forged.workflow_instance_id
    )
    path = tmp_path / f"forged-{forged.workflow_instance_id}.json"
    path.write_bytes(DataConverter.default.payload_converter.to_payload(forged).data)
    started = await asyncio.create_subprocess_exec(
        str(temporal_cli()),
        *("workflow", "start", "--address", server.address, "--type", "CampaignWorkflow"),
        *("--task-queue", settings.task_queue, "--workflow-id", workflow_id),
        *("--input-file", str(path), *flags),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await started.communicate()
    assert started.returncode == 0, err.decode()
    return workflow_id


async def test_a_plaintext_input_from_the_cli_fails_the_workflow_and_sends_nothing(
    settings: Settings, temporal: Client, temporal_server: DevServer, tmp_path: Path
) -> None:
    assert settings.payload_codec_strict  # the default
    forged = _forged_input(new_object_id(), "Security Team <security@bigbank.example>")
    store = await Store.open(settings.resolved_database_url)
    try:
        async with build_worker(temporal, settings, store):
            workflow_id = await _cli_start(temporal_server, settings, forged, tmp_path)
            with pytest.raises(WorkflowFailureError) as failed:
                await temporal.get_workflow_handle(workflow_id).result()
        cause = failed.value.cause
        assert isinstance(cause, ApplicationError), cause
        assert cause.type == PLAINTEXT_REFUSED_TYPE
        assert "CAMPAIGN_ENGINE_PAYLOAD_CODEC_STRICT" in cause.message
        history = await temporal.get_workflow_handle(workflow_id).fetch_history()
        assert not [
            e for e in history.events if e.HasField("activity_task_scheduled_event_attributes")
        ]
        assert outbox_files(settings) == []

        # The same kind of input (the deployment's own sender, so only strictness differs)
        # to a worker without strict mode — what every worker did before — goes out unapproved.
        loose = settings.model_copy(
            update={"payload_codec_strict": False, "task_queue": settings.task_queue + "-loose"}
        )
        loose_client = await connect(loose)
        async with build_worker(loose_client, loose, store):
            sent_id = await _cli_start(
                temporal_server, loose, _forged_input(new_object_id(), None), tmp_path
            )
            await loose_client.get_workflow_handle(sent_id).result()
        [message] = outbox_files(loose)
        assert "Your account is locked" in message.read_text()
    finally:
        await store.close()


async def test_an_input_sealed_for_another_account_group_fails_the_workflow(
    api: Api, temporal: Client, temporal_server: DevServer, tmp_path: Path
) -> None:
    """A key of group B (which may encode B's payloads through the codec endpoint) cannot make
    an input for an instance of group A: the worker refuses it as it refuses plaintext."""
    settings = api.settings
    key_b = await api.issue_key([GROUP_B], [Permission.PAYLOADS_DECODE])
    forged = _forged_input(GROUP_A, None)
    store = await Store.open(settings.resolved_database_url)
    try:
        async with build_worker(temporal, settings, store):
            workflow_id = await _cli_start(
                temporal_server, settings, forged, tmp_path,
                "--codec-endpoint", f"{api.http.base_url}/codec",
                "--codec-auth", f"Bearer {key_b.key}",
            )  # fmt: skip
            with pytest.raises(WorkflowFailureError) as failed:
                await temporal.get_workflow_handle(workflow_id).result()
    finally:
        await store.close()
    history = await temporal.get_workflow_handle(workflow_id).fetch_history()
    [sealed] = history.events[0].workflow_execution_started_event_attributes.input.payloads
    assert sealed.metadata[METADATA_ACCOUNT_GROUP] == GROUP_B.encode()
    assert isinstance(failed.value.cause, ApplicationError)
    assert failed.value.cause.type == PLAINTEXT_REFUSED_TYPE
    assert outbox_files(settings) == []


# --- operator signals under strict mode -----------------------------------------------------


async def _cli_signal(
    server: DevServer, workflow_id: str, name: str, value: str, *flags: str
) -> None:
    process = await asyncio.create_subprocess_exec(
        str(temporal_cli()),
        *("workflow", "signal", "--address", server.address, "--workflow-id", workflow_id),
        *("--name", name, "--input", value, *flags),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await process.communicate()
    assert process.returncode == 0, err.decode()


async def test_a_plaintext_approve_is_refused_an_operators_encoded_one_applies(
    api: Api, campaign: Campaign, worker: Any, temporal: Client, temporal_server: DevServer
) -> None:
    instance_id = await enrol_to_gate(api, campaign)
    handle = handle_of(temporal, campaign, instance_id)
    await _cli_signal(temporal_server, handle.id, "approve", '{"decided_by": "mallory"}')
    status = await handle.query(CampaignWorkflow.lead_status)
    assert status.has_pending_approval
    assert status.signal_input_problems and "strict payload codec" in str(
        status.signal_input_problems[-1]
    )
    assert outbox_files(api.settings) == []
    # An operator's key of every account group encodes through the codec endpoint.
    operator = await api.issue_key([ALL_ACCOUNT_GROUPS], [Permission.PAYLOADS_DECODE])
    await _cli_signal(
        temporal_server, handle.id, "approve", '{"decided_by": "ops@acme"}',
        "--codec-endpoint", f"{api.http.base_url}/codec", "--codec-auth", f"Bearer {operator.key}",
    )  # fmt: skip

    async def sent() -> bool:
        return len(outbox_files(api.settings)) == 1

    await assert_eventually(sent)
    decided = (await handle.query(CampaignWorkflow.lead_status)).gate_decisions
    assert decided[-1].decided_by == "ops@acme"
    # Its history holds a plaintext payload: close it, so the session server's open runs stay
    # all encrypted for `keys payload-key-usage` (tests/test_codec.py).
    await handle.terminate("test done")


# --- the codec endpoint decodes the caller's account groups only ----------------------------


async def test_a_key_of_another_group_cannot_decode_a_groups_campaign_and_lead(
    api: Api, worker: Any, temporal: Client
) -> None:
    campaign_a = await create_campaign(api)
    instance_id = await enrol(api, campaign_a)
    await wait_for_status(api, campaign_a, instance_id, hasPendingApproval=True)
    history = await handle_of(temporal, campaign_a, instance_id).fetch_history()
    started = history.events[0].workflow_execution_started_event_attributes
    [lead_and_campaign] = started.input.payloads
    assert (
        lead_and_campaign.metadata[METADATA_ACCOUNT_GROUP] == campaign_a.account_group_id.encode()
    )
    drafts = [
        payload
        for event in history.events
        if event.HasField("activity_task_completed_event_attributes")
        for payload in event.activity_task_completed_event_attributes.result.payloads
    ]
    assert drafts
    body = _wire([lead_and_campaign, *drafts])

    async def decode(key: str) -> Any:
        return await api.http.post(
            "/codec/decode", json=body, headers={"Authorization": f"Bearer {key}"}
        )

    other_group = await api.issue_key([new_object_id()], [Permission.PAYLOADS_DECODE])
    refused = await decode(other_group.key)
    assert refused.status_code == 403, refused.text
    assert refused.json()["error"]["code"] == "PAYLOAD_SCOPE_DENIED"
    assert refused.json()["error"]["details"] == campaign_a.account_group_id
    assert "ada@example.com" not in refused.text

    for key in (
        await api.issue_key([campaign_a.account_group_id], [Permission.PAYLOADS_DECODE]),
        await api.issue_key([ALL_ACCOUNT_GROUPS], [Permission.PAYLOADS_DECODE]),
    ):
        granted = await decode(key.key)
        assert granted.status_code == 200, granted.text
        [lead_payload, *_] = granted.json()["payloads"]
        decoded = json.loads(base64.b64decode(lead_payload["data"]))
        assert decoded["lead"]["email"] == "ada@example.com"
        assert decoded["account_group_id"] == campaign_a.account_group_id


async def test_recorded_histories_payloads_decode_for_operators_only(api: Api) -> None:
    """The migration path: payloads of before scopes (every recorded history) are the
    deployment scope — workers replay them (tests/test_replay.py) and operators read them."""
    [path, *_] = histories.histories()
    started = replays.load(path).events[0].workflow_execution_started_event_attributes
    [payload] = started.input.payloads
    assert METADATA_ACCOUNT_GROUP not in payload.metadata
    group = json.loads((await codec.codec_for(api.settings).decode([payload]))[0].data)[
        "account_group_id"
    ]
    tenant = await api.issue_key([group], [Permission.PAYLOADS_DECODE])
    operator = await api.issue_key([ALL_ACCOUNT_GROUPS], [Permission.PAYLOADS_DECODE])
    refused = await api.http.post(
        "/codec/decode", json=_wire([payload]), headers={"X-API-Key": tenant.key}
    )
    assert refused.status_code == 403
    assert refused.json()["error"]["details"] == "deployment"
    granted = await api.http.post(
        "/codec/decode", json=_wire([payload]), headers={"X-API-Key": operator.key}
    )
    assert granted.status_code == 200, granted.text


async def test_encode_seals_for_the_keys_one_group(api: Api) -> None:
    plain = _wire([_json("note")])
    one = await api.issue_key([GROUP_A], [Permission.PAYLOADS_DECODE])
    sealed = await api.http.post("/codec/encode", json=plain, headers={"X-API-Key": one.key})
    assert sealed.status_code == 200, sealed.text
    [payload] = sealed.json()["payloads"]
    assert base64.b64decode(payload["metadata"][METADATA_ACCOUNT_GROUP]) == GROUP_A.encode()
    several = await api.issue_key([GROUP_A, GROUP_B], [Permission.PAYLOADS_DECODE])
    ambiguous = await api.http.post("/codec/encode", json=plain, headers={"X-API-Key": several.key})
    assert ambiguous.status_code == 403
    assert ambiguous.json()["error"]["details"] == "ambiguous"


# --- keys of every account group ------------------------------------------------------------


def test_cli_all_account_groups_is_a_separate_explicit_kind(settings: Settings) -> None:
    def create(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [services.CLI, "keys", "create", *args],
            env=services.process_env(settings),
            capture_output=True,
            text=True,
        )

    operator = create("--all-account-groups", "--permission", "payloads:decode")
    assert operator.returncode == 0, operator.stderr
    assert json.loads(operator.stdout)["accountGroups"] == [ALL_ACCOUNT_GROUPS]
    for refused in (
        (
            "--all-account-groups",
            "--permission",
            "payloads:decode",
            "--permission",
            "campaigns:read",
        ),
        ("--all-account-groups", "--account-group", GROUP_A, "--permission", "payloads:decode"),
        ("--permission", "payloads:decode"),
    ):
        answer = create(*refused)
        assert answer.returncode == 2, (refused, answer.stdout)
        assert "error:" in answer.stderr


async def test_a_key_of_every_group_reaches_no_tenant_route(api: Api) -> None:
    campaign = await create_campaign(api)
    with pytest.raises(KeyKindError):
        await api.issue_key([ALL_ACCOUNT_GROUPS], [Permission.CAMPAIGNS_READ])
    operator = await api.issue_key([ALL_ACCOUNT_GROUPS], [Permission.PAYLOADS_DECODE])
    answer = await api.http.get(campaign.url, headers={"Authorization": f"Bearer {operator.key}"})
    assert answer.status_code == 403
