"""A private nginx that terminates TLS in front of a Temporal frontend, for tests.

Debian's `nginx-light` has what gRPC needs (`ssl`, `http_v2`, `grpc_pass`); stunnel does not
negotiate ALPN `h2`, which the SDK's core requires (FACTS.md, "Temporal behind TLS / mTLS").
`GrpcTlsProxy(directory, upstream, pki).start()` writes a config of its own under `directory`
(pid, logs and temp paths there too) and runs `nginx -c CONF` in the foreground as a child
process, with three listeners, all presenting `pki.server_pem`:

- `tls_address`: TLS only;
- `mtls_address`: TLS and a client certificate signed by `pki.ca_pem` (`ssl_verify_client on`);
- `api_key_address`: TLS, and every request must carry `authorization: Bearer <api_key>`
  (as Temporal Cloud checks an API key); any other request is answered HTTP 401, which gRPC
  clients read as UNAUTHENTICATED.

Every request is written to `access_log` with the client certificate's subject and whether the
`authorization` header held the expected bearer token (never the header itself).
`ensure_nginx()` installs Debian's `nginx-light` with apt-get when it is missing and it can.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

from devsupport.debian import DebianPackageUnavailable, ensure_debian_package
from devsupport.pki import Pki
from entrypoints.devserver import free_port

NGINX = Path("/usr/sbin/nginx")
START_TIMEOUT_SECONDS = 15.0


class NginxUnavailable(DebianPackageUnavailable):
    """nginx is not installed and could not be installed; the message says why."""


def ensure_nginx() -> Path:
    """The path of the `nginx` binary, installing Debian's `nginx-light` with apt-get first when
    it is missing (needs root and apt-get).

    Raises `NginxUnavailable` naming the reason when it is missing and cannot be installed.
    """
    return ensure_debian_package(NGINX, "nginx-light", unavailable=NginxUnavailable)


class GrpcTlsProxy:
    """nginx terminating TLS (and mTLS, and an API-key check) before `upstream` (host:port of a
    plaintext gRPC server). See the module docstring for the three listeners."""

    def __init__(self, directory: Path, upstream: str, pki: Pki, api_key: str) -> None:
        """Nothing runs until `start()`; `api_key` is the bearer token `api_key_address` wants."""
        self.directory = directory
        self.upstream = upstream
        self.pki = pki
        self.api_key = api_key
        self.tls_port = 0
        self.mtls_port = 0
        self.api_key_port = 0
        self.access_log = directory / "access.log"
        self.error_log = directory / "error.log"
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def tls_address(self) -> str:
        """host:port of the TLS-only listener."""
        return f"127.0.0.1:{self.tls_port}"

    @property
    def mtls_address(self) -> str:
        """host:port of the listener that requires a client certificate."""
        return f"127.0.0.1:{self.mtls_port}"

    @property
    def api_key_address(self) -> str:
        """host:port of the listener that requires `authorization: Bearer <api_key>`."""
        return f"127.0.0.1:{self.api_key_port}"

    def _config(self) -> str:
        d = self.directory
        pki = self.pki
        # Long polls last about a minute: nginx's 60 s default would cut them (504) and every
        # poll would be retried. A draft is up to 1.2 MB: no body size limit (default 1 MB).
        common = f"""
    ssl_certificate {pki.server_pem};
    ssl_certificate_key {pki.server_key};
    ssl_protocols TLSv1.2 TLSv1.3;
    client_max_body_size 0;
    grpc_read_timeout 300s;
    grpc_send_timeout 300s;"""
        upstream = f"grpc_pass grpc://{self.upstream};"
        return f"""daemon off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {self.error_log} info;
events {{ worker_connections 512; }}
http {{
  client_body_temp_path {d}/tmp/body;
  proxy_temp_path {d}/tmp/proxy;
  fastcgi_temp_path {d}/tmp/fastcgi;
  uwsgi_temp_path {d}/tmp/uwsgi;
  scgi_temp_path {d}/tmp/scgi;
  map $http_authorization $api_key_ok {{
    "Bearer {self.api_key}" 1;
    default 0;
  }}
  log_format grpc '$server_port "$ssl_client_s_dn" bearer_ok=$api_key_ok $request_uri $status';
  access_log {self.access_log} grpc;
  server {{
    listen 127.0.0.1:{self.tls_port} ssl http2;{common}
    location / {{ {upstream} }}
  }}
  server {{
    listen 127.0.0.1:{self.mtls_port} ssl http2;{common}
    ssl_client_certificate {pki.ca_pem};
    ssl_verify_client on;
    location / {{ {upstream} }}
  }}
  server {{
    listen 127.0.0.1:{self.api_key_port} ssl http2;{common}
    location / {{
      if ($api_key_ok = 0) {{ return 401; }}
      {upstream}
    }}
  }}
}}
"""

    def start(self) -> None:
        """Writes the config, starts nginx in the foreground as a child process (its own
        session) and waits until the three ports accept connections.

        Raises `NginxUnavailable` when nginx is missing and cannot be installed, `RuntimeError`
        (with the end of its error log) when it does not come up within
        `START_TIMEOUT_SECONDS`.
        """
        binary = ensure_nginx()
        (self.directory / "tmp").mkdir(parents=True, exist_ok=True)
        self.tls_port, self.mtls_port, self.api_key_port = free_port(), free_port(), free_port()
        config = self.directory / "nginx.conf"
        config.write_text(self._config())
        self._process = subprocess.Popen(
            [str(binary), "-c", str(config), "-e", str(self.error_log)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=(self.directory / "nginx.stderr").open("wb"),
            start_new_session=True,
        )
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while not all(
            self._accepts(port) for port in (self.tls_port, self.mtls_port, self.api_key_port)
        ):
            if self._process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"nginx did not start: {self._log_tail()}")
            time.sleep(0.05)

    @staticmethod
    def _accepts(port: int) -> bool:
        with socket.socket() as sock:
            return sock.connect_ex(("127.0.0.1", port)) == 0

    def _log_tail(self) -> str:
        text = ""
        for path in (self.directory / "nginx.stderr", self.error_log):
            if path.exists():
                text += path.read_text(errors="replace")[-2000:]
        return text.strip() or "(no log)"

    def access_lines(self, port: int) -> list[str]:
        """The access log's lines for requests to one of the listeners' ports."""
        if not self.access_log.exists():
            return []
        return [
            line for line in self.access_log.read_text().splitlines() if line.startswith(f"{port} ")
        ]

    def stop(self) -> None:
        """Stops nginx (SIGTERM, its fast shutdown, to its process group; SIGKILL after 10 s)
        and waits for it."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
