"""`python -m bench.module_memory [--rev REV]`: what one sandbox copy of the workflow module costs.

The Temporal sandbox re-imports `workflows/campaign.py` for every new or replayed instance and
keeps that copy while the instance is cached; the modules it passes through (`workflows.types`,
`state`, `status`, `notices`, `search_attributes`, `signal_inputs`) are imported once per process.
This imports the module the same way — its bytecode unmarshalled and executed into a fresh module,
40 times, the passed-through modules already loaded — and prints the memory each copy holds
(`tracemalloc`) and the CPU of one import. `--rev` measures the module as it was at a git
revision (against today's passed-through modules), for before/after figures in
`docs/performance-history.md`.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import marshal
import subprocess
import sys
import time
import tracemalloc
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PASSED_THROUGH = (
    "temporalio.workflow",
    "workflows.types",
    "workflows.search_attributes",
    "workflows.signal_inputs",
    "workflows.state",
    "workflows.status",
    "workflows.notices",
)
COPIES = 40
IMPORTS_TIMED = 200


def _source(rev: str | None) -> str:
    if rev is None:
        return (ROOT / "workflows" / "campaign.py").read_text()
    return subprocess.run(
        ["git", "show", f"{rev}:workflows/campaign.py"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout


def measure(source: str) -> tuple[float, float, int]:
    """(KB held per copy, ms of CPU per import, bytes of bytecode) of the module `source`."""
    for name in PASSED_THROUGH:
        importlib.import_module(name)
    blob = marshal.dumps(compile(source, "workflows/campaign.py", "exec"))

    def import_once() -> types.ModuleType:
        module = types.ModuleType("workflows.campaign_copy")
        sys.modules[module.__name__] = module
        exec(marshal.loads(blob), module.__dict__)
        return module

    import_once()
    kept = []
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    for _ in range(COPIES):
        kept.append(import_once())
    gc.collect()
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    held = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
    started = time.process_time()
    for _ in range(IMPORTS_TIMED):
        import_once()
    cpu = (time.process_time() - started) / IMPORTS_TIMED
    return held / COPIES / 1024, cpu * 1000, len(blob)


def main() -> None:
    """Prints one line of figures for the module at `--rev` (default: the work tree)."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rev", help="a git revision (default: the work tree)")
    args = parser.parse_args()
    kb, ms, size = measure(_source(args.rev))
    print(
        f"workflows/campaign.py at {args.rev or 'work tree'}: {kb:.1f} KB per sandbox copy, "
        f"{ms:.2f} ms CPU per import, {size / 1024:.1f} KB of bytecode"
    )


if __name__ == "__main__":
    main()
