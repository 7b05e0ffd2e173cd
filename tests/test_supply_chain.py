"""The supply chain: declared minimums clear the known advisories, what pip installs is exactly
uv.lock, and `make audit` fails on a vulnerable or an unaudited package.

The audit itself needs a package index with advisory data, which this machine's does not serve:
`make audit` runs beside the suite (docs/contributing.md, "Locked and audited"). Here the judging of
pip-audit's JSON is checked on reports of each kind, and one real pip-audit run of a known
vulnerable pin must fail whichever way the index answers.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from devsupport.audit import Pin, batches, canonicalize_name, judge, locked_pins, merge

ROOT = Path(__file__).resolve().parent.parent
LOCK = ROOT / "uv.lock"
EXPORTS = {"app": ROOT / "requirements" / "app.txt", "dev": ROOT / "requirements" / "dev.txt"}

# The first version of each declared dependency without a known advisory (checked 2026-12-05);
# a declared minimum below it lets pip keep a vulnerable version that is already installed.
ADVISORY_FLOORS: dict[str, tuple[str, str]] = {
    "jinja2": ("3.1.6", "CVE-2024-56201, CVE-2024-56326, CVE-2025-27516"),
    "cryptography": ("50.0.0", "GHSA-537c-gmf6-5ccf, CVE-2026-69247"),
    "starlette": ("1.3.1", "CVE-2026-48710, CVE-2026-48818, CVE-2026-54282, CVE-2026-54283"),
    "fastapi": ("0.136.3", "its Starlette range: the first that allows starlette 1.x"),
    "pydantic-settings": ("2.14.2", "GHSA-4xgf-cpjx-pc3j"),
    "aiosmtplib": ("5.1.2", "CVE-2026-53533, CVE-2026-55558"),
    "aiosmtpd": ("1.4.6", "CVE-2024-27305, CVE-2024-34083"),
    "pytest": ("9.0.3", "CVE-2025-71176"),
    "setuptools": ("78.1.1", "CVE-2024-6345, CVE-2025-47273 (build backend)"),
}


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", text)[:4])


def _pyproject() -> dict[str, Any]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def _declared_minimums() -> dict[str, str]:
    """Every `name>=version` of pyproject.toml: dependencies, extras and the build system."""
    project = _pyproject()
    requirements = [
        *project["project"]["dependencies"],
        *(r for extra in project["project"]["optional-dependencies"].values() for r in extra),
        *project["build-system"]["requires"],
    ]
    minimums = {}
    for requirement in requirements:
        match = re.match(r"^\s*([A-Za-z0-9._-]+)(?:\[[^\]]*\])?\s*([^;]*)", requirement)
        assert match, requirement
        floor = re.search(r">=\s*([^,\s]+)", match.group(2))
        assert floor, f"{requirement}: every dependency declares its minimum"
        minimums[canonicalize_name(match.group(1))] = floor.group(1)
    return minimums


def _exported_pins(path: Path) -> set[Pin]:
    pins = set()
    for line in path.read_text(encoding="utf-8").splitlines():
        match = re.match(r"^([A-Za-z0-9._-]+)==([^\s;\\]+)", line)
        if match:
            pins.add(Pin(canonicalize_name(match.group(1)), match.group(2)))
    return pins


@pytest.mark.parametrize("package", sorted(ADVISORY_FLOORS))
def test_declared_minimum_clears_the_known_advisories(package: str) -> None:
    floor, advisories = ADVISORY_FLOORS[package]
    declared = _declared_minimums()[package]

    assert _version(declared) >= _version(floor), f"{package}>={declared}: {advisories}"


def test_jinja2_minimum_is_the_one_that_fixed_the_attr_escape() -> None:
    assert _declared_minimums()["jinja2"] == "3.1.6"


def test_every_locked_version_clears_the_known_advisories() -> None:
    locked: dict[str, list[str]] = {}
    for pin in locked_pins(LOCK):
        locked.setdefault(pin.name, []).append(pin.version)

    below = {
        name: versions
        for name, (floor, _) in ADVISORY_FLOORS.items()
        for versions in [locked.get(name, [])]
        if any(_version(version) < _version(floor) for version in versions)
    }
    assert below == {}


def test_lock_records_exactly_the_declared_dependencies() -> None:
    """uv.lock was resolved from today's pyproject.toml (else: `make lock`)."""
    lock = tomllib.loads(LOCK.read_text(encoding="utf-8"))
    (project,) = [p for p in lock["package"] if p["name"] == "campaign-engine"]
    recorded = {
        canonicalize_name(entry["name"]): entry.get("specifier", "")
        for entry in project["metadata"]["requires-dist"]
    }
    declared = _declared_minimums()
    declared.pop("setuptools")  # the build backend is not a dependency

    def minimum(specifier: str) -> tuple[int, ...]:
        found = re.search(r">=\s*([^,\s]+)", specifier)
        return _version(found.group(1)) if found else ()

    assert {name: minimum(recorded.get(name, "")) for name in declared} == {
        name: _version(version) for name, version in declared.items()
    }, "pyproject.toml changed since uv.lock was resolved: run `make lock`"


@pytest.mark.parametrize("export", sorted(EXPORTS))
def test_exported_requirements_are_the_lock(export: str) -> None:
    """What `make dev`, `make test`, CI and the Dockerfile install is exactly uv.lock, every
    pin hashed (else: `make lock`)."""
    text = EXPORTS[export].read_text(encoding="utf-8")
    exported = _exported_pins(EXPORTS[export])
    locked = set(locked_pins(LOCK))

    assert exported, "no pins exported"
    assert exported <= locked, f"pins not in uv.lock: {sorted(exported - locked)}; run `make lock`"
    if export == "dev":
        # Everything but the project: the dev export is the whole lock.
        assert exported == locked, f"missing from the export: {sorted(locked - exported)}"
    else:
        assert {pin.name for pin in exported} >= {"jinja2", "temporalio", "fastapi"}
        assert not {pin.name for pin in exported} & {"pytest", "pip-audit", "uv", "mypy"}
    requirement_lines = re.findall(r"^[A-Za-z0-9._-]+==.*$", text, flags=re.MULTILINE)
    assert all(line.rstrip().endswith("\\") for line in requirement_lines), (
        "every pin carries its hashes (pip --require-hashes)"
    )


def test_installers_read_the_lock() -> None:
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    dockerfile = (ROOT / "Dockerfile").read_text(encoding="utf-8")

    assert "LOCK := requirements/dev.txt" in makefile
    assert "install --quiet --require-hashes -r $(LOCK)" in makefile
    assert "install --quiet --no-deps -e ." in makefile
    assert "pip install --require-hashes -r requirements/app.txt" in dockerfile
    assert "pip install --no-deps ." in dockerfile
    # Nothing else installs by resolving pyproject.toml.
    assert "'.[dev]'" not in makefile
    assert not re.search(r"pip install (?!--require-hashes|--no-deps)", dockerfile)


def test_dependabot_updates_the_lock_and_the_base_image() -> None:
    config = yaml.safe_load((ROOT / ".github" / "dependabot.yml").read_text(encoding="utf-8"))

    ecosystems = {update["package-ecosystem"]: update for update in config["updates"]}
    assert config["version"] == 2
    assert set(ecosystems) == {"uv", "docker"}
    assert all(update["directory"] == "/" for update in config["updates"])


# --- the audit's verdict --------------------------------------------------------------------


PINS = [Pin("jinja2", "3.1.5"), Pin("httpx", "0.29.0")]


def test_audit_fails_on_a_known_vulnerability() -> None:
    report = {
        "dependencies": [
            {
                "name": "Jinja2",
                "version": "3.1.5",
                "vulns": [
                    {
                        "id": "GHSA-cpwx-vrp4-4pq7",
                        "fix_versions": ["3.1.6"],
                        "aliases": ["CVE-2025-27516"],
                        "description": "…",
                    }
                ],
            },
            {"name": "httpx", "version": "0.29.0", "vulns": []},
        ],
        "fixes": [],
    }

    verdict = judge(PINS, report)

    assert not verdict.passed
    assert verdict.audited == 2
    assert verdict.vulnerable == {
        Pin("jinja2", "3.1.5"): ["GHSA-cpwx-vrp4-4pq7 (CVE-2025-27516); fixed in 3.1.6"]
    }
    assert "VULNERABLE jinja2==3.1.5: GHSA-cpwx-vrp4-4pq7" in verdict.report()


def test_audit_fails_on_a_package_it_could_not_audit() -> None:
    """What pip-audit reports here, with "No known vulnerabilities found" and exit 0."""
    reason = "Dependency not found on PyPI and could not be audited: httpx (0.29.0)"
    report = {
        "dependencies": [
            {"name": "jinja2", "version": "3.1.5", "vulns": []},
            {"name": "httpx", "skip_reason": reason},
        ],
        "fixes": [],
    }

    verdict = judge(PINS, report)

    assert not verdict.passed
    assert verdict.skipped == {Pin("httpx", "0.29.0"): reason}
    assert f"NOT AUDITED httpx==0.29.0: {reason}" in verdict.report()


def test_audit_fails_on_a_package_missing_from_the_report() -> None:
    report = {"dependencies": [{"name": "jinja2", "version": "3.1.5", "vulns": []}]}

    verdict = judge(PINS, report)

    assert not verdict.passed
    assert verdict.missing == [Pin("httpx", "0.29.0")]


def test_audit_passes_only_when_every_pin_is_audited_and_clean() -> None:
    report = {
        "dependencies": [
            {"name": "jinja2", "version": "3.1.5", "vulns": []},
            {"name": "HTTPX", "version": "0.29.0", "vulns": []},
        ]
    }

    verdict = judge(PINS, report)

    assert verdict.passed
    assert "every locked package audited" in verdict.report()


def test_two_versions_of_one_package_are_audited_in_separate_runs() -> None:
    pins = [Pin("deprecated", "1.3.1"), Pin("deprecated", "3.0.1"), Pin("httpx", "0.29.0")]

    split = batches(pins)
    verdict = merge(
        judge(batch, {"dependencies": [{"name": p.name, "version": p.version} for p in batch]})
        for batch in split
    )

    assert [sorted(str(pin) for pin in batch) for batch in split] == [
        ["deprecated==1.3.1", "httpx==0.29.0"],
        ["deprecated==3.0.1"],
    ]
    assert verdict.passed
    assert verdict.audited == 3


def test_the_lock_is_audited_whole_whatever_the_platform() -> None:
    pins = locked_pins(LOCK)
    names = {pin.name for pin in pins}

    # Packages this Linux machine never installs are audited too, and the project is not.
    assert {"colorama", "pywin32", "uvloop", "jinja2"} <= names
    assert "campaign-engine" not in names


def test_make_audit_fails_on_a_vulnerable_pin_with_the_real_pip_audit() -> None:
    """Jinja2 3.1.5 has a known escape. pip-audit either finds it (an index with advisory data)
    or cannot audit it (this machine's): the audit fails either way, never "no known
    vulnerabilities"."""
    result = subprocess.run(
        [sys.executable, "-m", "devsupport.audit", "jinja2==3.1.5"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
        check=False,
    )

    assert result.returncode == 1, result.stdout + result.stderr
    assert re.search(r"^(VULNERABLE|NOT AUDITED) jinja2==3\.1\.5: ", result.stdout, re.MULTILINE)
    assert "FAILED" in result.stdout
