"""A static check that `workflows/` calls no clock, randomness, I/O or threading outside
`workflow.*` (issue 20).

Production workers may run workflows unsandboxed (`CAMPAIGN_ENGINE_WORKER_WORKFLOW_SANDBOX=false`,
`worker.workflow_runner`), which drops the SDK sandbox's run-time refusal of `datetime.now()`,
`random`, `open()` and friends inside workflow code. This check stands in for it on every module
of `workflows/`, at `make test` time, by reading the source (`ast`), and the test suite and the
replay suite still run every workflow sandboxed.

The rules, on names resolved through each module's own imports (`from datetime import datetime`
makes `datetime.now` read `datetime.datetime.now`; a name bound in the module, such as a
parameter called `input`, is never taken for the builtin):

- no import of a module that reads the clock, draws randomness, does I/O or runs threads
  (`FORBIDDEN_MODULES`: `time`, `random`, `uuid`, `os`, `threading`, `socket`, `logging`, …);
- no use of the calls that do so from modules that are otherwise fine (`FORBIDDEN_NAMES`:
  `datetime.datetime.now`, `datetime.date.today`, `open`, `print`, `hash` (per-process seed), …);
- of `asyncio`, only what Temporal's workflow event loop runs deterministically
  (`ASYNCIO_ALLOWED`: tasks, shields, waits, durable sleeps, its primitives);
- of `workflow.unsafe`, only `imports_passed_through` (no sandbox escape hatches).

The time, randomness and ids a workflow needs come from `workflow.now()`, `workflow.random()`
and `workflow.uuid4()`. Limits: the check reads names, so a clock reached through an object
passed in (a callable in an input) is not seen; no such input exists (inputs are dataclasses of
data). A new use of an `asyncio` name outside the allowed list fails here: review it against
Temporal's workflow event loop, then add it.
"""

from __future__ import annotations

import ast
import builtins
from dataclasses import dataclass
from pathlib import Path

import pytest
from temporalio.client import Client
from temporalio.worker import UnsandboxedWorkflowRunner
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner

from campaign_engine.settings import Settings
from campaign_engine.store import Store
from worker import build_worker

WORKFLOWS = Path(__file__).resolve().parent.parent / "workflows"

FORBIDDEN_MODULES = frozenset(
    {
        # clocks and randomness
        "time",
        "random",
        "secrets",
        "uuid",
        # the process, the file system, the network, other processes
        "os",
        "sys",
        "io",
        "pathlib",
        "shutil",
        "tempfile",
        "glob",
        "socket",
        "ssl",
        "select",
        "selectors",
        "signal",
        "subprocess",
        "urllib",
        "http",
        "smtplib",
        "imaplib",
        "zoneinfo",
        "logging",
        "sqlite3",
        "sqlalchemy",
        "aiosqlite",
        "asyncpg",
        "httpx",
        "redis",
        # threads and processes
        "threading",
        "_thread",
        "multiprocessing",
        "concurrent",
        "queue",
    }
)
"""Top-level modules `workflows/` may not import at all."""

FORBIDDEN_NAMES = frozenset(
    {
        "datetime.datetime.now",
        "datetime.datetime.utcnow",
        "datetime.datetime.today",
        "datetime.date.today",
        "builtins.open",
        "builtins.print",
        "builtins.input",
        "builtins.exec",
        "builtins.eval",
        "builtins.compile",
        "builtins.__import__",
        "builtins.breakpoint",
        # str hashes are seeded per process (PYTHONHASHSEED): a replay elsewhere differs.
        "builtins.hash",
        "builtins.id",
    }
)
"""Fully qualified names `workflows/` may not use (call or reference)."""

ASYNCIO_ALLOWED = frozenset(
    {
        "CancelledError",
        "TimeoutError",
        "Task",
        "Future",
        "create_task",
        "shield",
        "wait",
        "wait_for",
        "gather",
        "sleep",
        "Event",
        "Lock",
        "Semaphore",
        "Condition",
        "Queue",
        "FIRST_COMPLETED",
        "FIRST_EXCEPTION",
        "ALL_COMPLETED",
    }
)
"""What of `asyncio` Temporal's workflow event loop runs deterministically (its `sleep` is a
durable timer)."""

UNSAFE_ALLOWED = frozenset({"imports_passed_through"})
"""What of `temporalio.workflow.unsafe` workflow code may use."""


@dataclass(frozen=True)
class Violation:
    """One use that breaks a rule: where (`file:line`) and what (the resolved name)."""

    where: str
    name: str
    rule: str


def _imports(tree: ast.Module) -> dict[str, str]:
    """Local name → fully qualified name, from every import anywhere in the module."""
    aliases: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname:
                    aliases[alias.asname] = alias.name
                else:
                    top = alias.name.split(".")[0]
                    aliases[top] = top
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            for alias in node.names:
                aliases[alias.asname or alias.name] = f"{node.module}.{alias.name}"
    return aliases


def _bound_names(tree: ast.Module) -> set[str]:
    """Names the module binds itself (parameters, assignments, loop and `with` targets,
    definitions, handlers): such a name is never the builtin of the same name."""
    bound: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.arg):
            bound.add(node.arg)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store | ast.Del):
            bound.add(node.id)
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) or (
            isinstance(node, ast.ExceptHandler) and node.name
        ):
            bound.add(node.name or "")
    return bound


def _dotted(node: ast.expr) -> list[str] | None:
    """`a.b.c` as `["a", "b", "c"]`; None for anything but a chain of attributes on a name."""
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    parts.append(node.id)
    return parts[::-1]


def _qualified(parts: list[str], aliases: dict[str, str], bound: set[str]) -> str | None:
    """The fully qualified name of a chain, through the module's imports; builtins as
    `builtins.x` when the module does not bind the name; None for a local name."""
    head, rest = parts[0], parts[1:]
    if head in aliases:
        return ".".join([aliases[head], *rest])
    if head not in bound and hasattr(builtins, head):
        return ".".join(["builtins", head, *rest])
    return None


def _broken_rule(name: str) -> str | None:
    """Which rule a fully qualified name breaks, or None."""
    if name.split(".")[0] in FORBIDDEN_MODULES:
        return "a module of clocks, randomness, I/O or threads"
    for forbidden in FORBIDDEN_NAMES:
        if name == forbidden or name.startswith(forbidden + "."):
            return "a clock, I/O or per-process value"
    if name.startswith("asyncio.") and name.split(".")[1] not in ASYNCIO_ALLOWED:
        return "asyncio beyond what the workflow event loop runs deterministically"
    if name.startswith("temporalio.workflow.unsafe.") and name.split(".")[3] not in UNSAFE_ALLOWED:
        return "a sandbox escape hatch"
    return None


def violations(source: str, filename: str = "<source>") -> list[Violation]:
    """Every use in `source` (a module's text) that breaks one of the rules above, in order."""
    tree = ast.parse(source, filename)
    aliases, bound = _imports(tree), _bound_names(tree)
    found: list[Violation] = []
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names = [f"{node.module}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Attribute | ast.Name) and isinstance(node.ctx, ast.Load):
            parts = _dotted(node)
            qualified = _qualified(parts, aliases, bound) if parts else None
            names = [qualified] if qualified else []
        for name in names:
            rule = _broken_rule(name)
            if rule is not None:
                found.append(Violation(f"{filename}:{getattr(node, 'lineno', 0)}", name, rule))
    # `a.b.c` is an Attribute holding `a.b`: report each place once, with its longest name.
    longest: dict[tuple[str, str], Violation] = {}
    for violation in found:
        key = (violation.where, violation.rule)
        if key not in longest or len(violation.name) > len(longest[key].name):
            longest[key] = violation
    return sorted(longest.values(), key=lambda v: (v.where, v.name))


def test_no_module_of_workflows_reads_a_clock_draws_randomness_or_does_io() -> None:
    modules = sorted(WORKFLOWS.glob("*.py"))
    assert len(modules) > 10, modules  # the package, not an empty directory
    found = [
        violation
        for module in modules
        for violation in violations(module.read_text(), f"workflows/{module.name}")
    ]
    assert found == []


@pytest.mark.parametrize(
    ("source", "name"),
    [
        (
            "from datetime import datetime\ndef f():\n    return datetime.now()\n",
            "datetime.datetime.now",
        ),
        ("import datetime\nx = datetime.date.today()\n", "datetime.date.today"),
        ("from datetime import date as d\nx = d.today\n", "datetime.date.today"),
        ("import random\n", "random"),
        ("from time import monotonic as clock\n", "time.monotonic"),
        ("import uuid\n", "uuid"),
        ("import threading\n", "threading"),
        (
            "from concurrent.futures import ThreadPoolExecutor\n",
            "concurrent.futures.ThreadPoolExecutor",
        ),
        ("def f():\n    open('x')\n", "builtins.open"),
        ("def f(s):\n    return hash(s)\n", "builtins.hash"),
        (
            "import asyncio\nasync def f():\n    await asyncio.to_thread(print)\n",
            "asyncio.to_thread",
        ),
        (
            "from temporalio import workflow\n"
            "with workflow.unsafe.sandbox_unrestricted():\n    pass\n",
            "temporalio.workflow.unsafe.sandbox_unrestricted",
        ),
        ("import logging\n", "logging"),
    ],
)
def test_each_rule_catches_what_it_names(source: str, name: str) -> None:
    assert name in [v.name for v in violations(source)]


def test_what_workflows_may_do_passes() -> None:
    source = """
import asyncio
from datetime import datetime, timedelta
from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    import workflows.state as state

def later(input, id):
    print = None  # a local name, not the builtin
    return workflow.now() + timedelta(seconds=1), input.lead, id, workflow.uuid4(), print

async def run():
    task = asyncio.create_task(asyncio.sleep(1))
    try:
        await asyncio.shield(task)
    except asyncio.CancelledError:
        raise
    return datetime(2026, 1, 1), workflow.random().random()
"""
    assert violations(source) == []


async def test_the_suite_runs_sandboxed_and_production_can_run_without(
    temporal: Client, settings: Settings, store: Store
) -> None:
    # The suite's settings (tests/conftest.py sets the variable for every process it starts).
    assert settings.worker_workflow_sandbox is True
    assert Settings().worker_workflow_sandbox is True
    sandboxed = build_worker(temporal, settings, store).config()
    assert isinstance(sandboxed.get("workflow_runner"), SandboxedWorkflowRunner)
    # A queue of its own: a second worker of one build on one queue is refused.
    off = settings.model_copy(
        update={"worker_workflow_sandbox": False, "task_queue": f"{settings.task_queue}-off"}
    )
    unsandboxed = build_worker(temporal, off, store).config()
    assert isinstance(unsandboxed.get("workflow_runner"), UnsandboxedWorkflowRunner)


def test_the_cache_holds_every_waiting_instance_unless_the_sandbox_is_on() -> None:
    # Unsandboxed, a cached instance is its state (docs/performance.md, "The worker's cache").
    assert Settings(worker_workflow_sandbox=False).resolved_max_cached_workflows == 10_000
    # Sandboxed, each keeps its own copy of the workflow module: the old bound.
    assert Settings(worker_workflow_sandbox=True).resolved_max_cached_workflows == 1000
    chosen = Settings(worker_workflow_sandbox=False, worker_max_cached_workflows=50)
    assert chosen.resolved_max_cached_workflows == 50
