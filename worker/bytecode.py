"""The bytecode cache of the workflow modules, written before the worker starts.

Temporal's sandbox imports the workflow module afresh for every workflow instance it creates: each
new enrolment, and each instance it must replay because it is not in the sticky cache
(`max_cached_workflows`). See the Python SDK's README, "Workflow Sandbox": "each workflow run is
in a new sandbox ... the module is re-imported". Python reads that module from its bytecode cache
(`__pycache__/*.pyc`) when one is there and fresh, and otherwise compiles the source again: for
`workflows/campaign.py` 10.5 ms of CPU per instance on this project's bench machine, the
`workflows` package ~15 ms (docs/performance-history.md, "The sandbox compiled the workflow
source per instance"). Only a sandboxed worker pays it (`CAMPAIGN_ENGINE_WORKER_WORKFLOW_SANDBOX`).

Python writes the cache on a normal import unless `PYTHONDONTWRITEBYTECODE` is set, which
container images and CI machines often do (our Dockerfile too). A `pip install` of the package
compiles it anyway; an editable install or a checkout (`make dev`, the tests, the bench) did not.
`py_compile` writes the cache regardless of that variable, so the worker writes it once here.
"""

from __future__ import annotations

import compileall
import logging
from pathlib import Path

import workflows

logger = logging.getLogger("campaign_engine.worker")

WORKFLOWS_PACKAGE = Path(workflows.__file__).resolve().parent
"""The directory of the package the sandbox re-imports per instance."""


def write_bytecode(package_dir: Path = WORKFLOWS_PACKAGE) -> bool:
    """Writes the bytecode cache of every module under `package_dir` that has none or a stale one
    (source modified since; `compileall`'s timestamp check), even with `PYTHONDONTWRITEBYTECODE`.

    Returns True when every module's cache is fresh afterwards. Returns False, after logging a
    warning that names the directory and the cost, when one could not be written (a read-only
    tree without a cache, a `__pycache__` that is not a directory) or a module does not compile;
    the worker still runs, only slower per new instance. Never raises for those.
    """
    try:
        written = bool(compileall.compile_dir(package_dir, quiet=2, workers=1))
    except OSError as error:
        written = False
        logger.debug("compileall failed: %s", error)
    if not written:
        logger.warning(
            "could not write the bytecode cache of %s: the workflow sandbox compiles these "
            "modules again for every new or replayed workflow instance (~15 ms of CPU each); "
            "run `python -m compileall %s` where it is writable, or install the package",
            package_dir,
            package_dir,
        )
    return written
