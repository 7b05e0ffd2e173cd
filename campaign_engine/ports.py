"""Ports a process listens on, bound before anything else starts, and the error that names the
setting to change when one is taken."""

from __future__ import annotations

import errno
import socket


class PortInUse(RuntimeError):
    """A port this process must listen on is taken by another process.

    The message names `host:port` and the setting that moves it (and what 0 does, where 0 is
    allowed); the CLI prints it and exits 2 (docs/index.md).
    """

    def __init__(
        self, host: str, port: int, setting: str, *, zero_means: str | None = None
    ) -> None:
        text = f"{host}:{port} is already in use: set {setting} to a free port"
        if zero_means is not None:
            text += f", or to 0 to {zero_means}"
        super().__init__(text)
        self.host = host
        self.port = port
        self.setting = setting


def bind_listening_socket(host: str, port: int, setting: str) -> socket.socket:
    """A TCP socket bound to `host:port` for a server to listen on, bound the way uvicorn binds
    its own (`SO_REUSEADDR`; IPv6 when `host` contains a colon), but not inheritable: no uvicorn
    worker processes need it, and the render processes should not hold the API's port.

    Binding first, instead of letting uvicorn bind, turns a taken port into `PortInUse` naming
    `setting`: uvicorn itself logs the error and calls `sys.exit(1)`, which inside an event loop
    ends `asyncio.run` without stopping what else the process runs. Other `OSError`s (a host
    that is not local, a privileged port) are raised as they are.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family=family)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError as error:
        sock.close()
        if error.errno == errno.EADDRINUSE:
            raise PortInUse(host, port, setting) from error
        raise
    return sock
