"""Worker Versioning: which build a worker is, and which build Temporal sends the tasks to.

Every worker runs as one version (deployment name + build id) of one Temporal Worker Deployment.
Temporal sends the task queue's workflow and activity tasks only to workers of the deployment's
*current* version, so during a rolling deploy a task the new code advanced never lands on an old
worker (where it would fail as non-deterministic), and the new workers receive nothing until an
operator, or the first deploy, makes their build current. Campaign instances are AUTO_UPGRADE
(`worker.build_worker`): when a new version becomes current, an instance waiting at a gate moves
to it on its next task, and the new code replays its history (hence `workflow.patched`).
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import importlib.metadata
import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from google.protobuf.timestamp_pb2 import Timestamp
from temporalio.api.deployment.v1 import WorkerDeploymentVersion as VersionMessage
from temporalio.api.enums.v1 import TaskQueueType, WorkerDeploymentVersionStatus
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import (
    DeleteWorkerDeploymentVersionRequest,
    DescribeTaskQueueRequest,
    DescribeWorkerDeploymentRequest,
    SetWorkerDeploymentCurrentVersionRequest,
)
from temporalio.client import Client
from temporalio.common import VersioningBehavior, WorkerDeploymentVersion
from temporalio.service import RPCError, RPCStatusCode
from temporalio.worker import WorkerDeploymentConfig

import workflows
from campaign_engine.settings import Settings

logger = logging.getLogger("campaign_engine.worker")

DEFAULT_WITHIN_SECONDS = 30.0
"""How long making a build current may take by default: its first worker must have polled (a
fraction of a second after it starts) and every task queue must route to it (about 0.2 s more)."""

_RETRY_SECONDS = 0.05
# A describe of the deployment took up to 1 s on the dev server right after a change.
_RPC_TIMEOUT = timedelta(seconds=10)
# Temporal answers these while a version it has not seen poll yet is named, or while a task queue
# the current build polls has no poller of the new one yet: retried until pollers arrive.
_NOT_YET = frozenset({RPCStatusCode.NOT_FOUND, RPCStatusCode.FAILED_PRECONDITION})
_TASK_TYPES = (TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW, TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY)
_STATUS_PREFIX = "WORKER_DEPLOYMENT_VERSION_STATUS_"


class DeploymentError(RuntimeError):
    """A deployment operation did not succeed in time; the message says what Temporal answered."""


def workflows_digest(root: Path | None = None) -> str:
    """SHA-256 (hex) of the `workflows` package's sources (or of the package at `root`): every
    `*.py` under it, by relative path and content. Bytecode does not count, nor do other
    packages: only workflow code is replayed, so only it can make a build incompatible with
    running instances."""
    root = root or Path(workflows.__file__).parent
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()


@functools.cache
def default_build_id() -> str:
    """This release's build id: `<package version>-<first 12 hex of workflows_digest()>`, e.g.
    `0.1.0-3f9c2a71b0de`. Any change to workflow code is a new build id, so it can never be
    mistaken for the version already running; the same sources give the same id on every
    machine and in the image. `unknown-…` when the package is not installed."""
    try:
        version = importlib.metadata.version("campaign-engine")
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    return f"{version}-{workflows_digest()[:12]}"


def build_id(settings: Settings) -> str:
    """`settings.worker_build_id`, else `default_build_id()`."""
    return settings.worker_build_id or default_build_id()


def deployment_config(settings: Settings) -> WorkerDeploymentConfig | None:
    """The worker's deployment version, versioned, AUTO_UPGRADE by default; None when
    `settings.worker_versioning` is off (an unversioned worker)."""
    if not settings.worker_versioning:
        return None
    return WorkerDeploymentConfig(
        version=WorkerDeploymentVersion(
            deployment_name=settings.worker_deployment_name, build_id=build_id(settings)
        ),
        use_worker_versioning=True,
        # An instance may wait at a gate for a year: pinned to its start's build, every old
        # build would have to keep running until its last instance ends.
        default_versioning_behavior=VersioningBehavior.AUTO_UPGRADE,
    )


# --- reading the deployment ----------------------------------------------------------------------


def _time(stamp: Timestamp) -> datetime | None:
    return stamp.ToDatetime(tzinfo=UTC) if stamp.seconds or stamp.nanos else None


def _status(value: WorkerDeploymentVersionStatus.ValueType) -> str:
    return WorkerDeploymentVersionStatus.Name(value).removeprefix(_STATUS_PREFIX).lower()


@dataclass(frozen=True)
class VersionSummary:
    """One version of a deployment: its build id, its status (`inactive`: never current;
    `current`; `ramping`; `draining`: no longer current, may still run pinned instances;
    `drained`), when Temporal first saw it poll and since when it is current (UTC or None)."""

    build_id: str
    status: str
    created_at: datetime | None
    current_since: datetime | None

    def as_json(self) -> dict[str, Any]:
        """camelCase JSON, times ISO 8601."""
        return {
            "buildId": self.build_id,
            "status": self.status,
            "createdAt": self.created_at.isoformat() if self.created_at else None,
            "currentSince": self.current_since.isoformat() if self.current_since else None,
        }


@dataclass(frozen=True)
class DeploymentStatus:
    """A Worker Deployment as Temporal describes it: the current and ramping builds (None when
    there is none: tasks then go to unversioned workers), the ramp in percent, every version
    newest first."""

    name: str
    current_build_id: str | None
    ramping_build_id: str | None
    ramping_percentage: float
    versions: tuple[VersionSummary, ...]

    def as_json(self) -> dict[str, Any]:
        """camelCase JSON."""
        return {
            "deploymentName": self.name,
            "currentBuildId": self.current_build_id,
            "rampingBuildId": self.ramping_build_id,
            "rampingPercentage": self.ramping_percentage,
            "versions": [version.as_json() for version in self.versions],
        }


async def describe_deployment(client: Client, deployment_name: str) -> DeploymentStatus | None:
    """The deployment's status, or None when Temporal has no such deployment (no worker of it has
    polled yet). Raises `temporalio.service.RPCError` for any other failure."""
    try:
        response = await client.workflow_service.describe_worker_deployment(
            DescribeWorkerDeploymentRequest(
                namespace=client.namespace, deployment_name=deployment_name
            ),
            timeout=_RPC_TIMEOUT,
        )
    except RPCError as error:
        if error.status == RPCStatusCode.NOT_FOUND:
            return None
        raise
    info = response.worker_deployment_info
    routing = info.routing_config
    versions = sorted(
        (
            VersionSummary(
                build_id=summary.deployment_version.build_id,
                status=_status(summary.status),
                created_at=_time(summary.create_time),
                current_since=_time(summary.current_since_time),
            )
            for summary in info.version_summaries
        ),
        key=lambda version: version.created_at or datetime.min.replace(tzinfo=UTC),
        reverse=True,
    )
    return DeploymentStatus(
        name=info.name,
        current_build_id=routing.current_deployment_version.build_id or None,
        ramping_build_id=routing.ramping_deployment_version.build_id or None,
        ramping_percentage=routing.ramping_version_percentage,
        versions=tuple(versions),
    )


async def routed_build_ids(client: Client, task_queue: str) -> dict[str, str | None]:
    """The build each task type of `task_queue` is routed to now, as the queue itself knows it:
    `{"workflow": build id or None, "activity": …}` (None: unversioned, or not yet told)."""
    routed: dict[str, str | None] = {}
    for task_type in _TASK_TYPES:
        response = await client.workflow_service.describe_task_queue(
            DescribeTaskQueueRequest(
                namespace=client.namespace,
                task_queue=TaskQueue(name=task_queue),
                task_queue_type=task_type,
            ),
            timeout=_RPC_TIMEOUT,
        )
        name = TaskQueueType.Name(task_type).removeprefix("TASK_QUEUE_TYPE_").lower()
        current = response.versioning_info.current_deployment_version
        routed[name] = current.build_id or None
    return routed


# --- changing it ---------------------------------------------------------------------------------


async def wait_until_routed(
    client: Client, *, task_queue: str, build: str, within: float = DEFAULT_WITHIN_SECONDS
) -> float:
    """Waits until both task types of `task_queue` route to `build`; returns the seconds it took.

    Setting a current version returns before every task queue knows: measured on the dev server,
    a signal sent at once still went to the old build's worker (its sticky queue), while the
    queue's own description answered the new build about 0.15 s later (that describe waits for
    the queue's update), after which tasks went to the new build. Raises `DeploymentError` when
    not routed within `within` seconds.
    """
    loop = asyncio.get_running_loop()
    started = loop.time()
    while True:
        routed = await routed_build_ids(client, task_queue)
        if all(routed_to == build for routed_to in routed.values()):
            return loop.time() - started
        if loop.time() - started > within:
            raise DeploymentError(
                f"task queue {task_queue} still routes to {routed} {within:.0f} s after build "
                f"{build} became current"
            )
        await asyncio.sleep(_RETRY_SECONDS)


async def set_current(
    client: Client,
    *,
    deployment_name: str,
    build: str,
    task_queue: str,
    within: float = DEFAULT_WITHIN_SECONDS,
) -> float:
    """Makes `build` the current version of `deployment_name`, then waits until `task_queue`
    routes its tasks to it (`wait_until_routed`); returns the seconds both took.

    Retries while Temporal does not know the version yet or sees no poller of it (a worker of that
    build registers it by polling); a version already current is simply confirmed. Raises
    `DeploymentError` when not done within `within` seconds, or at once for an answer no retry
    changes (e.g. a build id Temporal refuses).
    """
    loop = asyncio.get_running_loop()
    started = loop.time()
    request = SetWorkerDeploymentCurrentVersionRequest(
        namespace=client.namespace,
        deployment_name=deployment_name,
        build_id=build,
        identity=client.identity,
    )
    while True:
        try:
            await client.workflow_service.set_worker_deployment_current_version(
                request, timeout=_RPC_TIMEOUT
            )
            break
        except RPCError as error:
            if error.status not in _NOT_YET or loop.time() - started > within:
                raise DeploymentError(
                    f"build {build} did not become current in deployment {deployment_name}: "
                    f"{error.message} (is a worker of that build polling? A deployment holds at "
                    "most 100 versions by default: `campaign-engine deployment prune`)"
                ) from error
        await asyncio.sleep(_RETRY_SECONDS)
    remaining = max(within - (loop.time() - started), 1.0)
    await wait_until_routed(client, task_queue=task_queue, build=build, within=remaining)
    return loop.time() - started


async def prune(client: Client, deployment_name: str) -> list[str]:
    """Deletes the deployment's versions that are neither current nor ramping and that Temporal
    lets go: it refuses one with a poller seen in the last 5 minutes or still draining pinned
    instances, and those are kept for a later run. Returns the deleted build ids (none when the
    deployment does not exist). Raises `RPCError` when the deployment cannot be described."""
    status = await describe_deployment(client, deployment_name)
    if status is None:
        return []
    deleted: list[str] = []
    for version in status.versions:
        if version.status in {"current", "ramping"}:
            continue
        try:
            await client.workflow_service.delete_worker_deployment_version(
                DeleteWorkerDeploymentVersionRequest(
                    namespace=client.namespace,
                    deployment_version=VersionMessage(
                        deployment_name=deployment_name, build_id=version.build_id
                    ),
                    identity=client.identity,
                ),
                timeout=_RPC_TIMEOUT,
            )
        except RPCError as error:
            logger.debug("version %s kept: %s", version.build_id, error.message)
            continue
        deleted.append(version.build_id)
    return deleted


# --- a starting worker ---------------------------------------------------------------------------

_QUICK_LOOK_SECONDS = 1.0


async def _routed_to(client: Client, task_queue: str, build: str, *, within: float) -> bool:
    """True once both task types of `task_queue` route to `build`; False as soon as one routes
    to another build, or when neither happened within `within` seconds."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    while loop.time() - started <= within:
        routed = set((await routed_build_ids(client, task_queue)).values())
        if routed == {build}:
            return True
        if routed - {build, None}:
            return False
        await asyncio.sleep(_RETRY_SECONDS / 2)
    return False


Outcome = Literal["current", "not-current", "unversioned", "unknown"]


async def take_up(
    client: Client, settings: Settings, *, within: float = DEFAULT_WITHIN_SECONDS
) -> Outcome:
    """What a worker that has just started polling does about its build, per
    `settings.worker_become_current`; returns what came of it.

    `current`: the build is (or was made) current and the task queue routes to it, so tasks
    reach this worker from now on. `not-current`: another build is current (or the policy is
    `never`): this worker gets no tasks until `campaign-engine deployment set-current`; logged as
    a warning with that command. `unversioned`: versioning is off. `unknown`: Temporal did not
    answer in time (logged; the worker keeps polling). `always` raises `DeploymentError`
    instead of answering `unknown`: it was asked to be current and is not.
    """
    if not settings.worker_versioning:
        return "unversioned"
    name, build, queue = settings.worker_deployment_name, build_id(settings), settings.task_queue
    if settings.worker_become_current == "always":
        seconds = await set_current(
            client, deployment_name=name, build=build, task_queue=queue, within=within
        )
        logger.info("worker build %s is current in deployment %s (%.2f s)", build, name, seconds)
        return "current"
    try:
        # The common case, a build already current (another worker of it, a restart, a new task
        # queue): the queue routes to it once this worker's first poll has registered it, about
        # 0.1 s. Describing the queue takes milliseconds; describing the deployment up to 1 s.
        if await _routed_to(client, queue, build, within=min(_QUICK_LOOK_SECONDS, within)):
            return "current"
        deployment = await describe_deployment(client, name)
        current = deployment.current_build_id if deployment is not None else None
        if current == build:
            await wait_until_routed(client, task_queue=queue, build=build, within=within)
            return "current"
        if current is None and settings.worker_become_current == "if-none":
            seconds = await set_current(
                client, deployment_name=name, build=build, task_queue=queue, within=within
            )
            logger.info(
                "deployment %s had no current version: worker build %s made itself current "
                "(%.2f s)",
                name,
                build,
                seconds,
            )
            return "current"
    except (DeploymentError, RPCError) as error:
        logger.warning(
            "could not tell whether worker build %s of deployment %s gets tasks: %s",
            build,
            name,
            error,
        )
        return "unknown"
    logger.warning(
        "worker build %s is not the current version of deployment %s (current: %s): it gets no "
        "tasks until `campaign-engine deployment set-current %s`",
        build,
        name,
        current,
        build,
    )
    return "not-current"
