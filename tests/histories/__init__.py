"""The histories the replay suite (`tests/test_replay.py`) replays, one folder per release
(`<YYYY-MM-DD>[.<n>]/<shape>[_run<n>][_<note>].json`); `record` records them (`make histories`),
`releases` replays them and reports which patch branches they cover.

Only the folder layout lives here: `record` imports it when it runs older code (`old_code`), so it
imports nothing of the application.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).parent
RELEASE_NAME = re.compile(r"^(\d{4}-\d{2}-\d{2})(?:\.(\d+))?$")
"""A release folder's name: the UTC day (ISO 8601) its code was recorded, then `.2`, `.3`... for a
second, third release recorded that day."""


def release_order(name: str) -> tuple[str, int]:
    """Sort key of a release name (`RELEASE_NAME`): by day, then by its number (none is 1)."""
    matched = RELEASE_NAME.match(name)
    if matched is None:
        raise ValueError(f"release {name!r}: YYYY-MM-DD, or YYYY-MM-DD.N for another that day")
    return matched[1], int(matched[2] or 1)


def releases(root: Path = ROOT) -> list[str]:
    """The release folders under `root`, oldest first."""
    found = [p.name for p in root.iterdir() if p.is_dir() and RELEASE_NAME.match(p.name)]
    return sorted(found, key=release_order)


def histories(root: Path = ROOT) -> list[Path]:
    """Every recorded history of every release, oldest release first."""
    return [path for release in releases(root) for path in sorted((root / release).glob("*.json"))]


def name_of(path: Path) -> str:
    """`<release>/<file stem>`: how tests and messages name a history."""
    return f"{path.parent.name}/{path.stem}"
