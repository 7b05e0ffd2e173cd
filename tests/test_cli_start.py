"""What a command says when it cannot start: exit 2 and the setting to change, no traceback."""

from __future__ import annotations

import asyncio
import socket
import sys
from pathlib import Path

import pytest

CLI = str(Path(sys.executable).with_name("campaign-engine"))


async def run(*args: str, env: dict[str, str]) -> tuple[int | None, str]:
    """Runs the CLI with only `env` (and no PATH); returns its exit code and its stderr."""
    process = await asyncio.create_subprocess_exec(
        CLI, *args, env={"PATH": "", **env}, stderr=asyncio.subprocess.PIPE
    )
    _, err = await process.communicate()
    return process.returncode, err.decode()


@pytest.mark.parametrize(
    "mailboxes",
    [
        "{bad json",
        '{"sales@example.com": {"daily_cap": 0}}',
        '{"sales@example.com": {"time_zone": "Mars/Phobos"}}',
        '{"not an address": {}}',
        '{"sales@example.com": {"dailyCap": 5}}',
    ],
)
async def test_mailbox_settings_that_cannot_be_used_exit_2_naming_them(
    mailboxes: str, tmp_path: Path
) -> None:
    code, err = await run(
        "worker",
        env={"CAMPAIGN_ENGINE_MAILBOXES": mailboxes, "CAMPAIGN_ENGINE_STATE_DIR": str(tmp_path)},
    )

    assert code == 2, err
    assert "invalid settings" in err and "mailboxes" in err, err
    assert "Traceback" not in err


async def test_a_metrics_port_in_use_exits_2_naming_its_setting(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, err = await run(
            "api",
            env={
                "CAMPAIGN_ENGINE_API_METRICS_PORT": str(port),
                "CAMPAIGN_ENGINE_METRICS_HOST": "127.0.0.1",
                "CAMPAIGN_ENGINE_STATE_DIR": str(tmp_path),
            },
        )

    assert code == 2, err
    assert f"127.0.0.1:{port} is already in use" in err
    assert "CAMPAIGN_ENGINE_API_METRICS_PORT" in err
    assert "Traceback" not in err
