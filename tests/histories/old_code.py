"""Records histories with older workflow code: the old branch of a patch, as the code before it
produced it.

    git worktree add /tmp/old <the commit before the patch>
    .venv/bin/python -m tests.histories.old_code /tmp/old [--release DAY] shape ...
    git worktree remove /tmp/old

Run from this tree: the application (`workflows`, `activities`, `worker`, `api`,
`campaign_engine`, `entrypoints`, `devsupport`) is imported from the checkout, the recorder, its
shapes and the test keys from here. The files are named `<shape>_at_<commit>.json` and go into the
release folder of that code (default: the UTC day of its commit), next to the histories already
there and never over one; they are then encrypted by this tree's code. A shape that uses what the
older code lacks fails; for code older than this recorder, see `record`'s docstring.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path


def commit_of(checkout: Path) -> tuple[str, str]:
    """(short hash, UTC day) of the commit checked out at `checkout`."""
    shown = subprocess.run(
        ["git", "-C", str(checkout), "show", "-s", "--format=%h %cd", "--date=format-local:%F"],
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, "TZ": "UTC"},
    ).stdout.split()
    return shown[0], shown[1]


def main(argv: list[str]) -> int:
    """`argv`: the checkout, then `record`'s arguments. Returns the recorder's exit code."""
    if not argv or argv[0].startswith("-"):
        print(__doc__, file=sys.stderr)
        return 2
    checkout = Path(argv[0]).resolve()
    if not (checkout / "workflows" / "campaign.py").exists():
        print(f"{checkout}: not a checkout of this project", file=sys.stderr)
        return 2
    commit, day = commit_of(checkout)
    with tempfile.TemporaryDirectory(prefix="old-code-") as view:
        # The checkout's packages but its `tests`, ahead of this tree (and of the installed
        # project), so the application comes from there and the recorder from here, in this
        # process and in the processes it spawns (they inherit `sys.path`).
        for package in sorted(checkout.iterdir()):
            if (package / "__init__.py").exists() and package.name != "tests":
                (Path(view) / package.name).symlink_to(package)
        sys.path.insert(0, view)
        from tests.histories import record

        return record.main(argv[1:], older_code=(f"at_{commit}", day))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
