"""The patch registry (`workflows/versions.py`), the workflow's use of it, the recorder's release
folders, and `campaign-engine patches` against the real dev server.

The command's verdicts are checked on one instance of our own (visibility scoped to its campaign)
against patches dated the day it started and the day before: injected `Patch` entries, the real
Temporal.
"""

from __future__ import annotations

import ast
import asyncio
import json
import uuid
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from temporalio import workflow
from temporalio.client import Client, WorkflowHandle
from temporalio.worker import Worker

from api.instances import WorkflowInstances
from campaign_engine.ids import new_object_id, workflow_id_for
from campaign_engine.settings import Settings
from entrypoints import patches
from entrypoints.devserver import free_port
from tests import histories, services
from tests.helpers import assert_eventually
from tests.histories import record, replays
from workflows import versions
from workflows.types import WORKFLOW_TYPE, CampaignSnapshot, CampaignStep, Lead
from workflows.versions import PATCHES, Patch, PatchState

ROOT = Path(__file__).resolve().parent.parent
DAY = date(2026, 11, 29)

# --- the registry -------------------------------------------------------------------------------


def test_every_registered_patch_is_well_formed() -> None:
    assert PATCHES, "no patches registered"
    for patch in PATCHES.values():
        patch.check()
        assert patch.id == PATCHES[patch.id].id


@pytest.mark.parametrize(
    ("entry", "refusal"),
    [
        (Patch("Cancel_On_Stop", DAY, "x"), "lowercase"),
        (Patch("a-patch", DAY, " "), "what it changes"),
        (Patch("a-patch", DAY, "x", removed=DAY), "deprecated before it is removed"),
        (Patch("a-patch", DAY, "x", deprecated=DAY - timedelta(days=1)), "before it shipped"),
        (
            Patch("a-patch", DAY, "x", deprecated=DAY, removed=DAY - timedelta(days=1)),
            "removed before",
        ),
    ],
)
def test_a_malformed_entry_is_refused(entry: Patch, refusal: str) -> None:
    with pytest.raises(ValueError, match=refusal):
        entry.check()


def test_an_id_is_registered_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(versions, "PATCHES", {})

    assert versions.register(Patch("a-patch", DAY, "x")) == "a-patch"
    with pytest.raises(ValueError, match="twice"):
        versions.register(Patch("a-patch", DAY, "y"))


def test_the_state_follows_the_dates() -> None:
    later = DAY + timedelta(days=30)

    assert Patch("p", DAY, "x").state == PatchState.LIVE
    assert Patch("p", DAY, "x", deprecated=later).state == PatchState.DEPRECATED
    assert Patch("p", DAY, "x", deprecated=later, removed=later).state == PatchState.REMOVED


def _patch_calls(path: Path) -> list[tuple[str, str, int]]:
    """(function, the patch argument's source, line) of every `workflow.patched`,
    `workflow.deprecate_patch` and `patched` / `versions.patched` call in `path`."""
    calls = []
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, ast.Call) or not node.args:
            continue
        function = node.func
        name = (
            function.attr
            if isinstance(function, ast.Attribute)
            else function.id
            if isinstance(function, ast.Name)
            else ""
        )
        if name in {"patched", "deprecate_patch"}:
            calls.append((ast.unparse(function), ast.unparse(node.args[0]), node.lineno))
    return calls


def test_the_workflow_calls_only_registered_patches_as_their_state_says() -> None:
    """Every patch call in `workflows/` names a registry constant; `workflow.patched` directly only
    for a live patch (a deprecated one goes through `versions.patched`, which deprecates it), and
    none for a removed one (its `if` goes)."""
    constants = {
        name: value
        for name, value in vars(versions).items()
        if name.isupper() and isinstance(value, str) and value in PATCHES
    }
    problems = []
    for path in sorted((ROOT / "workflows").glob("*.py")):
        if path.name == "versions.py":
            continue
        for function, argument, line in _patch_calls(path):
            where = f"{path.name}:{line} {function}({argument})"
            patch_id = constants.get(argument.removeprefix("versions."))
            if patch_id is None:
                problems.append(f"{where}: not a constant of workflows/versions.py")
                continue
            state = PATCHES[patch_id].state
            if state == PatchState.REMOVED:
                problems.append(f"{where}: {patch_id} is removed; drop the call and its old branch")
            elif function == "workflow.patched" and state != PatchState.LIVE:
                problems.append(f"{where}: {patch_id} is {state}; call versions.patched")
            elif function == "workflow.deprecate_patch" and state != PatchState.DEPRECATED:
                problems.append(f"{where}: {patch_id} is {state}, not deprecated")

    assert problems == []


@workflow.defn(name="PatchedByState", sandboxed=False)
class PatchedByState:
    """Calls `versions.patched` for the ids it is given; returns what each call said. Not
    sandboxed: it reads the registry the test changed."""

    @workflow.run
    async def run(self, ids: list[str]) -> list[bool]:
        """One call per id, in order."""
        return [versions.patched(patch_id) for patch_id in ids]


async def test_patched_records_the_marker_its_state_asks_for(
    temporal: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Live: `workflow.patched` (a live marker); deprecated: `workflow.deprecate_patch` (a
    deprecated marker); removed: no marker. A new run takes the new branch of each."""
    later = DAY + timedelta(days=1)
    entries = [
        Patch("test-live", DAY, "x"),
        Patch("test-deprecated", DAY, "x", deprecated=later),
        Patch("test-removed", DAY, "x", deprecated=later, removed=later),
    ]
    for entry in entries:
        monkeypatch.setitem(PATCHES, entry.id, entry)
    queue = f"patches-{uuid.uuid4()}"
    # Unsandboxed (see the class), so the workflow reads the entries added here.
    async with Worker(temporal, task_queue=queue, workflows=[PatchedByState]):
        handle = await temporal.start_workflow(
            PatchedByState.run,
            [e.id for e in entries],
            id=f"patched-{uuid.uuid4()}",
            task_queue=queue,
        )
        taken = await handle.result()

    found = replays.markers(await handle.fetch_history())
    assert taken == [True, True, True]
    assert found == [
        replays.Marker("test-live", deprecated=False),
        replays.Marker("test-deprecated", deprecated=True),
    ]


# --- the recorder's release folders ---------------------------------------------------------------


def test_todays_code_never_records_into_an_older_release(tmp_path: Path) -> None:
    (tmp_path / "2026-11-29").mkdir()
    (tmp_path / "2026-12-04").mkdir()

    with pytest.raises(record.Refused, match="frozen"):
        record.check_target(
            "2026-11-29", ["gate_approved"], replace=True, older_code=False, root=tmp_path
        )
    assert record.check_target(
        "2026-12-05", ["gate_approved"], replace=False, older_code=False, root=tmp_path
    ) == (tmp_path / "2026-12-05")
    with pytest.raises(record.Refused, match="YYYY-MM-DD"):
        record.check_target(
            "v1.2", ["gate_approved"], replace=False, older_code=False, root=tmp_path
        )


def test_a_second_release_of_a_day_is_newer_than_the_first(tmp_path: Path) -> None:
    for name in ("2026-12-04.10", "2026-12-04", "2026-12-04.2", "2026-11-29"):
        (tmp_path / name).mkdir()

    assert histories.releases(tmp_path) == [
        "2026-11-29",
        "2026-12-04",
        "2026-12-04.2",
        "2026-12-04.10",
    ]
    with pytest.raises(record.Refused, match="frozen"):
        record.check_target("2026-12-04.2", ["x"], replace=False, older_code=False, root=tmp_path)
    assert record.check_target(
        "2026-12-04.11", ["x"], replace=False, older_code=False, root=tmp_path
    ) == (tmp_path / "2026-12-04.11")


def test_a_history_is_overwritten_only_in_the_newest_release_and_when_asked(tmp_path: Path) -> None:
    newest = tmp_path / "2026-12-04"
    newest.mkdir()
    (newest / "continued_as_new_run1.json").write_text("{}")
    (newest / "continued_as_new_in_delay_run1.json").write_text("{}")

    with pytest.raises(record.Refused, match=r"continued_as_new_run1.json; pass --replace"):
        record.check_target(
            "2026-12-04", ["continued_as_new"], replace=False, older_code=False, root=tmp_path
        )
    assert (
        record.check_target(
            "2026-12-04", ["continued_as_new"], replace=True, older_code=False, root=tmp_path
        )
        == newest
    )
    # Another shape whose name starts the same is not in the way.
    assert (
        record.check_target(
            "2026-12-04", ["gate_approved"], replace=False, older_code=False, root=tmp_path
        )
        == newest
    )


def test_older_code_adds_to_its_own_release_and_overwrites_nothing(tmp_path: Path) -> None:
    (tmp_path / "2026-11-29").mkdir()
    (tmp_path / "2026-12-04").mkdir()
    (tmp_path / "2026-11-29" / "draft_failed_at_0f7488d.json").write_text("{}")

    assert record.check_target(
        "2026-11-29", ["gate_approved_at_0f7488d"], replace=False, older_code=True, root=tmp_path
    ) == (tmp_path / "2026-11-29")
    with pytest.raises(record.Refused, match="never overwrites"):
        record.check_target(
            "2026-11-29", ["draft_failed_at_0f7488d"], replace=True, older_code=True, root=tmp_path
        )


# --- campaign-engine patches, against the dev server --------------------------------------------


async def _one_instance(
    temporal: Client, settings: Settings
) -> tuple[WorkflowHandle[None, None], str]:
    """An instance waiting at its gate, on the test's worker; returns its handle and a visibility
    filter that sees it alone, once visibility shows the patches it met."""
    group, campaign = new_object_id(), new_object_id()
    snapshot = CampaignSnapshot(
        name="Patches", steps=[CampaignStep(id="intro", subject="Hi", body="Hello")]
    )
    lead = Lead(id=new_object_id(), email="ada@example.com")
    started = await WorkflowInstances(temporal, settings.task_queue, 10).enrol(
        group, campaign, lead, snapshot
    )
    handle = temporal.get_workflow_handle(
        workflow_id_for(group, campaign, started.workflow_instance_id)
    )
    scope = f"CampaignId = '{campaign}'"
    query = f"{scope} AND {patches.PATCH_IDS.name} = '{versions.GATE_SEARCH_ATTRIBUTES}'"

    async def shown() -> int:
        return (await temporal.count_workflows(query)).count

    await assert_eventually(shown, lambda count: count == 1, what="the instance in visibility")
    return handle, scope


@pytest.mark.usefixtures("worker")
async def test_a_live_patch_can_go_once_no_run_started_before_it_lacks_its_marker(
    temporal: Client, settings: Settings
) -> None:
    handle, scope = await _one_instance(temporal, settings)
    started = (await handle.describe()).start_time
    assert started is not None
    that_day, day_before = (
        started.astimezone(UTC).date(),
        started.astimezone(UTC).date() - timedelta(days=1),
    )
    shipped_that_day = Patch("not-in-this-code", that_day, "x")
    shipped_before = Patch("not-in-this-code", day_before, "x")
    # The instance met this one (its first phase change): it took the new branch.
    met = Patch(versions.GATE_SEARCH_ATTRIBUTES, that_day, "x")

    held, free, marked = await patches.check(
        temporal, [shipped_that_day, shipped_before, met], scope=scope
    )

    assert (held.started_before, held.marked_before, held.holding_back) == (1, 0, 1)
    assert held.verdict == patches.Verdict.KEEP
    assert held.examples == [handle.id]
    assert held.cutoff == datetime.combine(that_day + timedelta(days=1), datetime.min.time(), UTC)
    assert (free.started_before, free.verdict) == (0, patches.Verdict.DEPRECATE)
    assert (marked.started_before, marked.marked_before, marked.marked) == (1, 1, 1)
    assert marked.verdict == patches.Verdict.DEPRECATE
    assert "deprecated=date(" in marked.next_step(that_day)


@pytest.mark.usefixtures("worker")
async def test_a_deprecated_patch_can_go_once_no_run_started_before_the_deprecation_carries_it(
    temporal: Client, settings: Settings
) -> None:
    handle, scope = await _one_instance(temporal, settings)
    started = (await handle.describe()).start_time
    assert started is not None
    that_day = started.astimezone(UTC).date()
    shipped = that_day - timedelta(days=30)
    gate_patch = versions.GATE_SEARCH_ATTRIBUTES
    deprecated_that_day = Patch(gate_patch, shipped, "x", deprecated=that_day)
    deprecated_before = Patch(gate_patch, shipped, "x", deprecated=that_day - timedelta(days=1))
    removed = Patch(gate_patch, shipped, "x", deprecated=shipped, removed=shipped)

    held, free, gone = await patches.check(
        temporal, [deprecated_that_day, deprecated_before, removed], scope=scope
    )

    assert (held.marked_before, held.verdict, held.examples) == (
        1,
        patches.Verdict.KEEP,
        [handle.id],
    )
    assert (free.marked_before, free.marked, free.verdict) == (0, 1, patches.Verdict.REMOVE)
    assert "removed=date(" in free.next_step(that_day)
    assert (gone.cutoff, gone.verdict) == (None, patches.Verdict.REMOVED)
    text = patches.report([held, free, gone], namespace="default", now=datetime.now(UTC))
    assert f"{gate_patch}: deprecated since {that_day} -> keep" in text
    assert f"For example (of the runs found): {handle.id}" in text
    assert "-> remove" in text and "-> removed" in text


async def _cli(*args: str, env: dict[str, str]) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        services.CLI,
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


@pytest.mark.usefixtures("worker")
async def test_the_command_reports_every_patch_and_exits_by_what_can_move_on(
    temporal: Client, settings: Settings
) -> None:
    await _one_instance(temporal, settings)
    env = services.process_env(settings)

    code, out, _ = await _cli("patches", "--json", env=env)
    text_code, text, _ = await _cli("patches", env=env)

    report = json.loads(out)
    assert [p["id"] for p in report["patches"]] == list(PATCHES)
    assert [p["state"] for p in report["patches"]] == [p.state.value for p in PATCHES.values()]
    assert report["workflowType"] == WORKFLOW_TYPE
    can_move_on = [p["id"] for p in report["patches"] if p["verdict"] in {"deprecate", "remove"}]
    assert report["canMoveOn"] == can_move_on
    assert code == (patches_exit := 3 if can_move_on else 0)
    assert text_code == patches_exit
    for patch_id in PATCHES:
        assert f"\n{patch_id}: " in text
    assert text.count("  Next: ") == len(PATCHES)


async def test_the_command_exits_1_when_temporal_cannot_be_asked(settings: Settings) -> None:
    env = services.process_env(
        settings, CAMPAIGN_ENGINE_TEMPORAL_ADDRESS=f"127.0.0.1:{free_port()}"
    )

    code, out, err = await _cli("patches", env=env)

    assert (code, out) == (1, "")
    assert "could not ask Temporal" in err
