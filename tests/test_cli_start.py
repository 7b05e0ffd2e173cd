"""What a command says when it cannot start: exit 2 and the setting to change, no traceback."""

from __future__ import annotations

import asyncio
import socket
import sys
from pathlib import Path

import pytest
from starlette.applications import Starlette

from entrypoints.devserver import free_port, port_in_use
from entrypoints.servers import http_server, start_serving

CLI = str(Path(sys.executable).with_name("campaign-engine"))


async def run(*args: str, env: dict[str, str]) -> tuple[int | None, str]:
    """Runs the CLI with only `env` (and no PATH); returns its exit code and its stderr."""
    process = await asyncio.create_subprocess_exec(
        CLI, *args, env={"PATH": "", **env}, stderr=asyncio.subprocess.PIPE
    )
    try:
        _, err = await process.communicate()
    finally:
        if process.returncode is None:  # cancelled: a command that hung
            process.kill()
            await process.wait()
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
    lines = err.strip().splitlines()
    # One line per refused setting, naming its variable; no pydantic dump.
    assert lines and all(
        line.startswith("campaign-engine: invalid setting CAMPAIGN_ENGINE_MAILBOXES: ")
        for line in lines
    ), err
    assert "Traceback" not in err and "errors.pydantic.dev" not in err


def _listening_socket() -> socket.socket:
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    return taken


@pytest.mark.parametrize(
    "taken_setting", ["CAMPAIGN_ENGINE_API_PORT", "CAMPAIGN_ENGINE_API_METRICS_PORT"]
)
async def test_a_port_of_the_api_in_use_exits_2_naming_its_setting(
    taken_setting: str, tmp_path: Path
) -> None:
    with _listening_socket() as taken:
        port = taken.getsockname()[1]
        env = {
            "CAMPAIGN_ENGINE_STATE_DIR": str(tmp_path),
            "CAMPAIGN_ENGINE_METRICS_HOST": "127.0.0.1",
            # Free ones, so only the taken port can be the cause (8000 may be someone's make dev).
            "CAMPAIGN_ENGINE_API_PORT": str(free_port()),
            "CAMPAIGN_ENGINE_API_METRICS_PORT": str(free_port()),
            taken_setting: str(port),
        }
        code, err = await run("api", env=env)

    assert code == 2, err
    assert f"127.0.0.1:{port} is already in use" in err
    assert taken_setting in err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    "taken_setting", ["CAMPAIGN_ENGINE_API_PORT", "CAMPAIGN_ENGINE_TEMPORAL_ADDRESS"]
)
async def test_dev_with_a_port_in_use_exits_2_and_starts_nothing(
    taken_setting: str, tmp_path: Path
) -> None:
    """`make dev` while another runs: it once hung on a taken API port, deaf to Ctrl-C."""
    temporal_port, ui_port, api_port = free_port(), free_port(), free_port()
    with _listening_socket() as taken:
        port = taken.getsockname()[1]
        env = {
            "CAMPAIGN_ENGINE_STATE_DIR": str(tmp_path),
            "CAMPAIGN_ENGINE_TEMPORAL_ADDRESS": f"127.0.0.1:{temporal_port}",
            "CAMPAIGN_ENGINE_TEMPORAL_UI_PORT": str(ui_port),
            "CAMPAIGN_ENGINE_API_PORT": str(api_port),
            "CAMPAIGN_ENGINE_API_METRICS_PORT": "0",
            "CAMPAIGN_ENGINE_WORKER_METRICS_PORT": "0",
        }
        env[taken_setting] = f"127.0.0.1:{port}" if "ADDRESS" in taken_setting else str(port)
        # A hang is the fault this guards against: fail instead of waiting for the suite's timeout.
        code, err = await asyncio.wait_for(run("dev", env=env), 120)

    assert code == 2, err
    assert f"127.0.0.1:{port} is already in use" in err and taken_setting in err, err
    assert "Traceback" not in err
    assert not port_in_use("127.0.0.1", temporal_port), "a Temporal server was left running"
    assert not (tmp_path / "temporal.db").exists(), "Temporal was started"


async def test_an_http_server_that_cannot_bind_raises_instead_of_exiting() -> None:
    """uvicorn calls sys.exit when it cannot bind; from a task that would end the event loop."""
    with _listening_socket() as taken:
        port = taken.getsockname()[1]
        server = http_server(Starlette(), host="127.0.0.1", port=port, embedded=True)

        with pytest.raises(RuntimeError, match="before it started"):
            await start_serving(server)
