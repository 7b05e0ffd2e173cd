"""`make audit`: known vulnerabilities in the locked dependency set, and no package left unaudited.

Every package `uv.lock` pins (each platform's and each Python's, not only this machine's) goes to
`pip-audit` as `name==version`, without resolution (`--no-deps --disable-pip`), and its JSON
report is judged here, because pip-audit's own exit status is 0 whenever it found no
vulnerability — including when it could audit nothing at all ("Dependency not found on PyPI and
could not be audited", what a registry without advisory data answers). The audit fails when:

- a package has a known vulnerability (its id, aliases and fixed versions are printed);
- a package was skipped, for whatever reason pip-audit gives;
- a pinned package is missing from the report.

Exit status: 0 all audited and clean, 1 otherwise, 2 when pip-audit itself could not run.
A lock that pins two versions of one package (one per Python version) is audited in as many runs.

Run: `make audit` (or `python -m devsupport.audit [--lock uv.lock] [PACKAGE==VERSION ...]`).
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import tomllib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


def canonicalize_name(name: str) -> str:
    """A distribution name as PEP 503 compares it (`Flufl.Bounce` → `flufl-bounce`)."""
    return re.sub(r"[-_.]+", "-", name).lower()


@dataclass(frozen=True, order=True)
class Pin:
    """One locked package: its canonical name and exact version."""

    name: str
    version: str

    def __str__(self) -> str:
        return f"{self.name}=={self.version}"


@dataclass
class Verdict:
    """What an audit found: vulnerabilities per pin, pins skipped (with pip-audit's reason),
    pins missing from the report."""

    vulnerable: dict[Pin, list[str]] = field(default_factory=dict)
    skipped: dict[Pin, str] = field(default_factory=dict)
    missing: list[Pin] = field(default_factory=list)
    audited: int = 0

    @property
    def passed(self) -> bool:
        """True only when every pin was audited and none has a known vulnerability."""
        return not (self.vulnerable or self.skipped or self.missing)

    def report(self) -> str:
        """The verdict for people, one line per finding."""
        lines = [f"audited {self.audited} locked package(s)"]
        for pin, vulnerabilities in sorted(self.vulnerable.items()):
            lines += [f"VULNERABLE {pin}: {entry}" for entry in vulnerabilities]
        for pin, reason in sorted(self.skipped.items()):
            lines.append(f"NOT AUDITED {pin}: {reason}")
        lines += [f"NOT AUDITED {pin}: missing from pip-audit's report" for pin in self.missing]
        if self.passed:
            lines.append("no known vulnerabilities, every locked package audited")
        else:
            lines.append(
                f"FAILED: {len(self.vulnerable)} vulnerable, "
                f"{len(self.skipped) + len(self.missing)} not audited"
            )
        return "\n".join(lines)


def locked_pins(lock: Path) -> list[Pin]:
    """Every package of `lock` (uv.lock) installed from a registry, whatever its markers; the
    project itself (an editable or virtual source) is not a dependency."""
    document = tomllib.loads(lock.read_text(encoding="utf-8"))
    pins = {
        Pin(canonicalize_name(package["name"]), package["version"])
        for package in document.get("package", [])
        if "registry" in package.get("source", {})
    }
    return sorted(pins)


def batches(pins: Iterable[Pin]) -> list[list[Pin]]:
    """`pins` split so no batch names a package twice (a requirements file may not)."""
    result: list[list[Pin]] = []
    for pin in sorted(pins):
        for batch in result:
            if all(other.name != pin.name for other in batch):
                batch.append(pin)
                break
        else:
            result.append([pin])
    return result


def judge(pins: Sequence[Pin], report: dict[str, Any]) -> Verdict:
    """Judges pip-audit's JSON report (`-f json`: `{"dependencies": [{"name", "version",
    "vulns": [{"id", "fix_versions", "aliases"}]} | {"name", "skip_reason"}]}`) of `pins`, each
    package named once."""
    verdict = Verdict()
    by_name = {pin.name: pin for pin in pins}
    seen: set[Pin] = set()
    for dependency in report.get("dependencies", []):
        pin = by_name.get(canonicalize_name(str(dependency.get("name", ""))))
        if pin is None or dependency.get("version", pin.version) != pin.version:
            continue
        seen.add(pin)
        if "skip_reason" in dependency:
            verdict.skipped[pin] = str(dependency["skip_reason"])
            continue
        verdict.audited += 1
        vulnerabilities = [
            _describe(vulnerability) for vulnerability in dependency.get("vulns", [])
        ]
        if vulnerabilities:
            verdict.vulnerable[pin] = vulnerabilities
    verdict.missing = sorted(set(pins) - seen)
    return verdict


def merge(verdicts: Iterable[Verdict]) -> Verdict:
    """One verdict of several batches'."""
    merged = Verdict()
    for verdict in verdicts:
        merged.vulnerable.update(verdict.vulnerable)
        merged.skipped.update(verdict.skipped)
        merged.missing = sorted([*merged.missing, *verdict.missing])
        merged.audited += verdict.audited
    return merged


def _describe(vulnerability: dict[str, Any]) -> str:
    aliases = ", ".join(vulnerability.get("aliases") or [])
    fixes = ", ".join(vulnerability.get("fix_versions") or []) or "none yet"
    return (
        f"{vulnerability.get('id')}" + (f" ({aliases})" if aliases else "") + f"; fixed in {fixes}"
    )


class PipAuditFailed(RuntimeError):
    """pip-audit itself could not run (not installed, a bad argument, no JSON)."""


def run_pip_audit(pins: Sequence[Pin]) -> dict[str, Any]:
    """pip-audit's JSON report of exactly `pins` (one package name once), no resolution."""
    with tempfile.TemporaryDirectory(prefix="campaign-engine-audit-") as directory:
        requirements = Path(directory) / "requirements.txt"
        requirements.write_text("".join(f"{pin}\n" for pin in pins), encoding="utf-8")
        output = Path(directory) / "report.json"
        command = [
            sys.executable,
            "-m",
            "pip_audit",
            "--requirement",
            str(requirements),
            "--no-deps",
            "--disable-pip",
            "--format",
            "json",
            "--output",
            str(output),
            "--progress-spinner",
            "off",
            "--aliases",
            "on",
        ]
        # Exit 1 means "vulnerabilities found": the report says which. Anything else without a
        # report is pip-audit failing.
        completed = subprocess.run(command, capture_output=True, text=True, check=False)
        if completed.returncode not in (0, 1) or not output.exists():
            raise PipAuditFailed(
                f"pip-audit exited {completed.returncode}: {completed.stderr.strip()[-2000:]}"
            )
        report: dict[str, Any] = json.loads(output.read_text(encoding="utf-8"))
        return report


def audit(pins: Sequence[Pin]) -> Verdict:
    """Runs pip-audit over `pins` (in as many batches as a package has versions) and judges."""
    return merge(judge(batch, run_pip_audit(batch)) for batch in batches(pins))


def main(argv: Sequence[str] | None = None) -> int:
    """The command line: audits the lock (or the pins given), prints the verdict, exits 0/1/2."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lock", type=Path, default=Path("uv.lock"))
    parser.add_argument(
        "pins", nargs="*", metavar="PACKAGE==VERSION", help="audit these instead of the lock"
    )
    arguments = parser.parse_args(argv)
    if arguments.pins:
        pins = []
        for given in arguments.pins:
            name, separator, version = given.partition("==")
            if not separator or not name or not version:
                parser.error(f"{given!r} is not PACKAGE==VERSION")
            pins.append(Pin(canonicalize_name(name), version))
    else:
        pins = locked_pins(arguments.lock)
    try:
        verdict = audit(pins)
    except PipAuditFailed as error:
        print(f"audit: {error}", file=sys.stderr)
        return 2
    print(verdict.report())
    return 0 if verdict.passed else 1


if __name__ == "__main__":
    raise SystemExit(main())
