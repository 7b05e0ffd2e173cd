"""Deploys that never mix versions: Worker Versioning on the real dev server.

Two builds of the production worker (`build_worker`) poll one task queue. Build b2 differs from
b1 the way a release does: a patched change (`Build2Code`: on each approval, a memo written behind
`workflow.patched`), so b1 could not replay a history b2 has written. Temporal routes every task
of an instance to the deployment's current build only: before `campaign-engine deployment
set-current b2`, b1 handles it although b2 polls beside it; after, b2 does although b1 still
polls, and the instance, waiting at its gate, auto-upgrades with no non-determinism error.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from temporalio import workflow
from temporalio.api.enums.v1 import EventType, VersioningBehavior
from temporalio.api.history.v1 import HistoryEvent
from temporalio.client import Client, WorkflowHandle
from temporalio.client import Interceptor as ClientInterceptor
from temporalio.worker import (
    HandleSignalInput,
    Interceptor,
    Replayer,
    WorkflowInboundInterceptor,
    WorkflowInterceptorClassInput,
)

import workflows
from campaign_engine.codec import data_converter
from campaign_engine.settings import Settings
from campaign_engine.store import Store
from entrypoints.devserver import DevServer
from tests.helpers import (
    TWO_STEP_CAMPAIGN,
    Api,
    Campaign,
    approve_ok,
    assert_eventually,
    enrol_to_gate,
    handle_of,
    replace_campaign,
    wait_for_status,
)
from tests.keys import TEST_PAYLOAD_KEYS
from worker import build_worker, versioning
from workflows.campaign import CampaignWorkflow

CLI = str(Path(sys.executable).with_name("campaign-engine"))
PATCH = "versioning-test-memo"
PROBE_SIGNAL = "versioning-probe"
"""A signal no handler knows: the workflow ignores it, but some worker must run a task for it."""
QUICK = {
    **TWO_STEP_CAMPAIGN,
    "steps": [{**TWO_STEP_CAMPAIGN["steps"][0], "delay": 1}, TWO_STEP_CAMPAIGN["steps"][1]],
}


class _Build2Workflow(WorkflowInboundInterceptor):
    async def handle_signal(self, input: HandleSignalInput) -> None:
        # Not for the probe: b2 replays that one from b1's history, where `patched` answers (and
        # memoizes) False.
        if input.signal != PROBE_SIGNAL and workflow.patched(PATCH):
            workflow.upsert_memo({"handledByBuild": "b2"})
        await super().handle_signal(input)


class Build2Code(ClientInterceptor, Interceptor):
    """What build b2 runs beside the campaign workflow: a patched change, as a release brings."""

    def workflow_interceptor_class(
        self, input: WorkflowInterceptorClassInput
    ) -> type[WorkflowInboundInterceptor]:
        """The inbound interceptor writing the memo."""
        return _Build2Workflow


async def _client(
    settings: Settings, identity: str, interceptors: Sequence[ClientInterceptor] = ()
) -> Client:
    """A client of its own, so the history's `identity` fields tell the two workers apart."""
    return await Client.connect(
        settings.temporal_address,
        namespace=settings.temporal_namespace,
        identity=identity,
        interceptors=interceptors,
        data_converter=data_converter(settings),
    )


async def cli(settings: Settings, *args: str) -> tuple[int | None, str, str]:
    """Runs `campaign-engine` with the settings' Temporal, task queue and deployment; returns the
    exit code, stdout and stderr."""
    env = {
        "PATH": os.environ.get("PATH", ""),
        "CAMPAIGN_ENGINE_TEMPORAL_ADDRESS": settings.temporal_address,
        "CAMPAIGN_ENGINE_TASK_QUEUE": settings.task_queue,
        "CAMPAIGN_ENGINE_STATE_DIR": str(settings.state_dir),
        "CAMPAIGN_ENGINE_PAYLOAD_KEYS": TEST_PAYLOAD_KEYS.get_secret_value(),
        "CAMPAIGN_ENGINE_WORKER_DEPLOYMENT_NAME": settings.worker_deployment_name,
    }
    process = await asyncio.create_subprocess_exec(
        CLI,
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(), 60)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    return process.returncode, out.decode(), err.decode()


async def _history(handle: WorkflowHandle[Any, Any]) -> list[HistoryEvent]:
    return [event async for event in handle.fetch_history_events()]


def _task_builds(events: list[HistoryEvent]) -> list[tuple[int, str]]:
    """(event id, build id) of every completed workflow task."""
    return [
        (event.event_id, event.workflow_task_completed_event_attributes.deployment_version.build_id)
        for event in events
        if event.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED
    ]


def _failed_tasks(events: list[HistoryEvent]) -> list[HistoryEvent]:
    return [
        event
        for event in events
        if event.event_type
        in {EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED, EventType.EVENT_TYPE_WORKFLOW_TASK_TIMED_OUT}
    ]


@pytest.fixture
def deployment(settings: Settings) -> Settings:
    """The test's settings in a Worker Deployment of its own (the session's other workers are
    versions of the release's deployment, on their own task queues)."""
    return settings.model_copy(
        update={"worker_deployment_name": f"versioning-{uuid.uuid4().hex[:12]}"}
    )


async def test_a_waiting_instance_moves_to_the_new_build_only_once_it_is_current(
    api: Api, campaign: Campaign, deployment: Settings, store: Store, temporal: Client
) -> None:
    await replace_campaign(api, campaign, QUICK)
    b1 = build_worker(
        await _client(deployment, "worker-b1"),
        deployment.model_copy(update={"worker_build_id": "b1"}),
        store,
    )
    b2 = build_worker(
        await _client(deployment, "worker-b2", [Build2Code()]),
        deployment.model_copy(update={"worker_build_id": "b2", "worker_become_current": "never"}),
        store,
    )
    async with contextlib.AsyncExitStack() as workers:
        # The first deploy: the deployment had no current version, so b1 made itself current.
        await workers.enter_async_context(b1)
        assert b1.versioning_outcome == "current"
        instance_id = await enrol_to_gate(api, campaign)
        handle = handle_of(temporal, campaign, instance_id)

        # The new release starts beside it, on the same queue; it is not current.
        await workers.enter_async_context(b2)
        assert b2.versioning_outcome == "not-current"
        await handle.signal(PROBE_SIGNAL)

        async def tasks_after_probe() -> list[tuple[int, str]]:
            events = await _history(handle)
            [signaled] = [
                e.event_id
                for e in events
                if e.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED
            ]
            return [task for task in _task_builds(events) if task[0] > signaled]

        await assert_eventually(tasks_after_probe, what="a workflow task for the probe")
        assert {build for _, build in _task_builds(await _history(handle))} == {"b1"}

        # The operator's step, as the README gives it.
        code, out, err = await cli(deployment, "deployment", "set-current", "b2")
        assert code == 0, err
        switched = json.loads(out)
        assert (switched["previousBuildId"], switched["currentBuildId"]) == ("b1", "b2")
        switch_point = (await _history(handle))[-1].event_id
        code, out, err = await cli(deployment, "deployment", "status")
        assert code == 0, err
        status = json.loads(out)
        assert status["currentBuildId"] == "b2"
        assert status["taskQueueRoutesTo"] == {"workflow": "b2", "activity": "b2"}
        assert {v["buildId"]: v["status"] for v in status["versions"]} == {
            "b2": "current",
            "b1": "draining",
        }

        # b1 still polls the queue, and has the instance in its cache; b2 takes the approval.
        await approve_ok(api, campaign, instance_id)
        await wait_for_status(
            api, campaign, instance_id, hasPendingApproval=True, latestStep="follow-up"
        )
        # The old build goes away; nothing waits for it.
        await b1.shutdown()
        await approve_ok(api, campaign, instance_id)
        await handle.result()
        # A lead enrolled now reaches its gate too.
        await enrol_to_gate(api, campaign)

    events = await _history(handle)
    assert _failed_tasks(events) == []
    builds = _task_builds(events)
    assert {build for event_id, build in builds if event_id < switch_point} == {"b1"}
    assert {build for event_id, build in builds if event_id > switch_point} == {"b2"}
    activity_workers = {
        event.activity_task_started_event_attributes.identity
        for event in events
        if event.event_id > switch_point
        and event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED
    }
    assert activity_workers == {"worker-b2"}
    described = await handle.describe()
    assert await described.memo_value("handledByBuild") == "b2"
    versioning_info = described.raw_description.workflow_execution_info.versioning_info
    assert versioning_info.deployment_version.build_id == "b2"
    assert versioning_info.behavior == VersioningBehavior.VERSIONING_BEHAVIOR_AUTO_UPGRADE

    # Why the routing matters: b1's code cannot replay what b2 wrote; b2's can.
    history = await handle.fetch_history()
    converter = data_converter(Settings(payload_keys=TEST_PAYLOAD_KEYS))
    old = await Replayer(workflows=[CampaignWorkflow], data_converter=converter).replay_workflow(
        history, raise_on_replay_failure=False
    )
    assert old.replay_failure is not None
    assert "nondetermin" in str(old.replay_failure).lower()
    new = await Replayer(
        workflows=[CampaignWorkflow], data_converter=converter, interceptors=[Build2Code()]
    ).replay_workflow(history, raise_on_replay_failure=False)
    assert new.replay_failure is None


async def test_set_current_for_a_build_no_worker_polls_fails_naming_it(
    deployment: Settings,
) -> None:
    code, out, err = await cli(
        deployment, "deployment", "set-current", "no-such-build", "--within", "1"
    )

    assert code == 1 and out == ""
    assert "no-such-build" in err and "Traceback" not in err


async def test_status_of_a_deployment_no_worker_has_joined_exits_1(deployment: Settings) -> None:
    code, out, err = await cli(deployment, "deployment", "status")

    assert code == 1 and out == ""
    assert deployment.worker_deployment_name in err


async def test_a_restarted_worker_of_the_current_build_gets_tasks_at_once(
    deployment: Settings, store: Store, temporal: Client
) -> None:
    settings = deployment.model_copy(
        update={"worker_build_id": "r1", "worker_become_current": "never"}
    )
    first = build_worker(temporal, settings, store)
    async with first:
        assert first.versioning_outcome == "not-current"  # `never`: the operator's call
        code, _, err = await cli(settings, "deployment", "set-current", "r1")
        assert code == 0, err
    # The same build again (a restart, another replica): already current, nothing to do.
    again = build_worker(temporal, settings, store)
    async with again:
        assert again.versioning_outcome == "current"
        assert await versioning.routed_build_ids(temporal, settings.task_queue) == {
            "workflow": "r1",
            "activity": "r1",
        }


def test_the_default_build_id_is_the_version_and_a_hash_of_the_workflow_sources() -> None:
    build = versioning.default_build_id()
    version, _, digest = build.rpartition("-")

    assert version == "0.1.0" and len(digest) == 12
    assert digest == versioning.workflows_digest()[:12]
    assert versioning.build_id(Settings()) == build
    assert versioning.build_id(Settings(worker_build_id="2026.12.1")) == "2026.12.1"


def test_a_change_to_workflow_code_changes_the_digest(tmp_path: Path) -> None:
    source = Path(workflows.__file__).parent
    copy = tmp_path / "workflows"
    copy.mkdir()
    for path in source.glob("*.py"):
        (copy / path.name).write_bytes(path.read_bytes())

    assert versioning.workflows_digest(copy) == versioning.workflows_digest()
    (copy / "campaign.py").write_text((copy / "campaign.py").read_text() + "\n# changed\n")
    assert versioning.workflows_digest(copy) != versioning.workflows_digest()


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("worker_deployment_name", "campaign.engine"),
        ("worker_deployment_name", ""),
        ("worker_build_id", "has space"),
        ("worker_build_id", "__unversioned__"),
        ("worker_build_id", "x" * 256),
    ],
)
def test_names_temporal_would_refuse_are_refused_at_start(field: str, value: str) -> None:
    with pytest.raises(ValueError, match=field):
        Settings.model_validate({field: value})


def test_an_unversioned_worker_has_no_deployment_config() -> None:
    assert versioning.deployment_config(Settings(worker_versioning=False)) is None
    config = versioning.deployment_config(Settings(worker_build_id="b7"))
    assert config is not None and config.use_worker_versioning
    assert (config.version.deployment_name, config.version.build_id) == ("campaign-engine", "b7")


def test_dev_servers_enable_worker_deployments() -> None:
    assert "system.enableDeploymentVersions=true" in DevServer().command()
