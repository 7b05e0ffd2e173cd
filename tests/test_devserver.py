"""The dev server ends with the process that started it, even one killed with SIGKILL."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import sys
from pathlib import Path

import pytest

from entrypoints.children import die_with_parent
from tests.helpers.waiting import assert_eventually

ROOT = Path(__file__).resolve().parent.parent

needs_setpriv = pytest.mark.skipif(
    sys.platform != "linux" or shutil.which("setpriv") is None,
    reason="the parent-death signal needs Linux and util-linux's setpriv",
)

# A parent that starts a dev server as the app does, says the server's pid, then waits to die.
PARENT = """
import asyncio
from entrypoints.devserver import DevServer

async def main() -> None:
    server = DevServer()
    await server.start()
    print(server.pid, flush=True)
    await asyncio.sleep(3600)

asyncio.run(main())
"""


# What /proc says of a process that has ended: nothing, or a zombie no one reaps.
ENDED = frozenset({"gone", "Z"})


def state(pid: int) -> str:
    """The process's state letter from /proc/<pid>/stat (`S`, `R`, `Z`, ...), or "gone"."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return "gone"
    return stat.rsplit(")", 1)[1].split()[0]


def gone(pid: int) -> bool:
    """No such process, or a zombie: re-parented to a pid 1 that may never reap it (in a
    container pid 1 need not reap), it has ended all the same."""
    return state(pid) in ENDED


def program_and_arguments(pid: int) -> list[str]:
    """The process's argv, from /proc/<pid>/cmdline."""
    return [os.fsdecode(part) for part in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")]


@needs_setpriv
def test_die_with_parent_prefixes_setpriv_and_keeps_the_argv() -> None:
    argv = ["/opt/bin/temporal", "server", "start-dev", "--", "--headless"]

    spawned = die_with_parent(argv)

    assert spawned == [shutil.which("setpriv"), "--pdeathsig", "TERM", "--", *argv]
    assert Path(spawned[0]).is_absolute()
    assert argv == ["/opt/bin/temporal", "server", "start-dev", "--", "--headless"]


def test_die_with_parent_without_setpriv_returns_the_argv_unchanged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty directory: no setpriv to find

    assert die_with_parent(("campaign-engine", "worker")) == ["campaign-engine", "worker"]


@needs_setpriv
async def test_a_spawned_command_keeps_its_pid_and_argv() -> None:
    process = await asyncio.create_subprocess_exec(
        *die_with_parent([sys.executable, "-c", "import os; print(os.getpid())"]),
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await process.communicate()

    assert process.returncode == 0
    assert int(out) == process.pid  # setpriv exec'd in place: no wrapper process in between


@needs_setpriv
async def test_dev_server_ends_when_its_parent_is_killed_with_sigkill() -> None:
    parent = await asyncio.create_subprocess_exec(
        sys.executable, "-c", PARENT, stdout=asyncio.subprocess.PIPE, cwd=ROOT
    )
    assert parent.stdout is not None
    server_pid: int | None = None
    try:
        line = await asyncio.wait_for(parent.stdout.readline(), 60)
        assert line.strip().isdigit(), f"the parent printed {line!r}, exit {parent.returncode}"
        server_pid = int(line)
        argv = program_and_arguments(server_pid)
        # The pid is the server's own (setpriv exec'd in place), and it is running.
        assert Path(argv[0]).name == "temporal" and "start-dev" in argv, argv
        assert not gone(server_pid)

        parent.kill()
        await parent.wait()

        async def server_state() -> str:
            assert server_pid is not None
            return state(server_pid)

        await assert_eventually(
            server_state,
            lambda letter: letter in ENDED,
            within=10,
            what=f"dev server {server_pid} ending with its SIGKILLed parent",
        )
    finally:
        if parent.returncode is None:
            parent.kill()
            await parent.wait()
        if server_pid is not None and not gone(server_pid):
            # Its own process group (start_new_session): take it down, not to leak it.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(server_pid, signal.SIGKILL)
