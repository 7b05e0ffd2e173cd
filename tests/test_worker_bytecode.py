"""The worker writes the workflow modules' bytecode cache, so the sandbox's per-instance import
reads bytecode instead of compiling the source (worker/bytecode.py)."""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import shutil
import sys
from importlib.machinery import SourceFileLoader
from pathlib import Path

import pytest
from temporalio.client import Client

from campaign_engine.settings import Settings
from campaign_engine.store import Store
from worker import build_worker
from worker.bytecode import WORKFLOWS_PACKAGE, write_bytecode


def _load_without_compiling(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Loads `path`'s code the way an import does, failing if Python would compile the source."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"{path.name} was compiled from source: no fresh bytecode cache")

    with monkeypatch.context() as patch:
        patch.setattr(SourceFileLoader, "source_to_code", refuse)
        code = SourceFileLoader(path.stem, str(path)).get_code(path.stem)
    assert code is not None


def _copy_of_workflows(tmp_path: Path) -> Path:
    package = tmp_path / "workflows_copy"
    package.mkdir()
    for source in WORKFLOWS_PACKAGE.glob("*.py"):
        shutil.copy(source, package / source.name)
    return package


def test_the_cache_is_written_with_dont_write_bytecode(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    package = _copy_of_workflows(tmp_path)

    assert write_bytecode(package) is True

    modules = sorted(package.glob("*.py"))
    assert {m.name for m in modules} >= {"campaign.py", "types.py", "signal_inputs.py"}
    for module in modules:
        assert Path(importlib.util.cache_from_source(str(module))).is_file(), module.name
        _load_without_compiling(module, monkeypatch)


def test_a_stale_cache_is_written_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    package = _copy_of_workflows(tmp_path)
    assert write_bytecode(package)
    campaign = package / "campaign.py"
    campaign.write_text(campaign.read_text() + "\nEDITED = True\n")
    stat = campaign.stat()
    os.utime(campaign, ns=(stat.st_atime_ns, stat.st_mtime_ns + 2_000_000_000))

    assert write_bytecode(package) is True

    _load_without_compiling(campaign, monkeypatch)


def test_an_unwritable_cache_is_a_warning_not_an_error(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    package = _copy_of_workflows(tmp_path)
    (package / "__pycache__").write_text("a file where the cache directory would go")

    with caplog.at_level(logging.WARNING, logger="campaign_engine.worker"):
        assert write_bytecode(package) is False

    assert any(
        str(package) in record.getMessage() and "every new or replayed" in record.getMessage()
        for record in caplog.records
    )


async def test_build_worker_leaves_the_workflow_modules_compiled(
    temporal: Client, settings: Settings, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    campaign = WORKFLOWS_PACKAGE / "campaign.py"
    with contextlib.suppress(FileNotFoundError):
        os.remove(importlib.util.cache_from_source(str(campaign)))

    build_worker(temporal, settings, store)

    for module in sorted(WORKFLOWS_PACKAGE.glob("*.py")):
        _load_without_compiling(module, monkeypatch)
