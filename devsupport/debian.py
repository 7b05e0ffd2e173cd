"""Debian packages the tests and the bench run for real (Dovecot, nginx), installed on demand.

`ensure_debian_package(binary, package)` returns the binary's path, installing the package with
apt-get first when the binary is missing and this process can (root, apt-get present). `.ci/run`
installs the same packages once before the suite, outside any test's time limit; this is for a
developer's machine where a single test file runs first.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

INSTALL_TIMEOUT_SECONDS = 900.0
"""apt-get update and install each get this long: a cold mirror takes minutes."""


class DebianPackageUnavailable(RuntimeError):
    """The binary is missing and its package could not be installed; the message says why and
    the command to run by hand."""


def ensure_debian_package(
    binary: Path, package: str, *, unavailable: type[DebianPackageUnavailable]
) -> Path:
    """`binary`, installing Debian's `package` with apt-get first when it is missing.

    Raises `unavailable` (a `DebianPackageUnavailable` naming the tool, e.g.
    `DovecotUnavailable`) when the binary is missing and cannot be installed: not root, no
    apt-get, apt-get failed (its last 500 characters of standard error), or installed without
    the binary.
    """
    if binary.exists():
        return binary
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise unavailable(
            f"{binary} is missing and cannot be installed here (needs root and apt-get): "
            f"apt-get install {package}"
        )
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (["apt-get", "update", "-q"], ["apt-get", "install", "-y", "-q", package]):
        done = subprocess.run(
            command, env=env, capture_output=True, text=True, timeout=INSTALL_TIMEOUT_SECONDS
        )
        if done.returncode != 0:
            raise unavailable(f"`{' '.join(command)}` failed: {done.stderr.strip()[-500:]}")
    if not binary.exists():
        raise unavailable(f"{package} installed but {binary} is still missing")
    return binary
