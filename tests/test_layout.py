"""The import rule of docs/contributing.md, checked: imports flow one way between the top-level
packages.

entry points (`entrypoints/`) → `api/`, `worker/` → `activities/` → `workflows/`; the shared base
(`campaign_engine/`) imports none of them; `workflows/` imports nothing of ours but itself;
`inbound/` (reading, classifying, matching and applying incoming mail) imports
`campaign_engine/` and, for the signal it sends, `workflows/` types;
`bench/` and `devsupport/` never import `tests/`.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
OURS = {
    "workflows",
    "activities",
    "api",
    "worker",
    "campaign_engine",
    "entrypoints",
    "devsupport",
    "inbound",
    "tests",
    "bench",
}
# package → the packages of ours it may import (besides itself)
ALLOWED: dict[str, set[str]] = {
    "workflows": set(),
    "campaign_engine": set(),
    "inbound": {"campaign_engine", "workflows"},
    "activities": {"inbound", "workflows", "campaign_engine"},
    "api": {"activities", "inbound", "workflows", "campaign_engine"},
    "worker": {"activities", "inbound", "workflows", "campaign_engine"},
    "entrypoints": {"api", "worker", "activities", "inbound", "workflows", "campaign_engine"},
    "devsupport": {
        "entrypoints",
        "api",
        "worker",
        "activities",
        "inbound",
        "workflows",
        "campaign_engine",
    },
    "bench": OURS - {"tests", "bench"},
}


def imported_packages(path: Path) -> set[str]:
    """The top-level packages of ours that a module imports, at any depth of the file."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        found |= {name.split(".")[0] for name in names} & OURS
    return found


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_imports_flow_one_way(package: str) -> None:
    offending = {
        str(path.relative_to(ROOT)): sorted(imported - ALLOWED[package] - {package})
        for path in sorted((ROOT / package).rglob("*.py"))
        if (imported := imported_packages(path)) - ALLOWED[package] - {package}
    }

    assert offending == {}
