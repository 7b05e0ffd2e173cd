"""A private Dovecot IMAP server for tests: its own config, mail store and ports in a directory.

`Dovecot(directory).start()` writes a config, starts `dovecot -F -c CONF` as a child process and
waits for its listeners; `stop()` ends it. One instance serves every connection mode the reader
supports: a plain port offering STARTTLS (and plain-text login, for `security: none`) and an
implicit-TLS port, both with a certificate signed by a CA of its own (`ca_pem`). Users live in a
passwd-file per user, added while it runs. XOAUTH2 goes
through Dovecot's `oauth2` passdb, which asks a token introspection endpoint (RFC 7662, POST) that
`TokenIntrospection` serves in-process.

Dovecot must be installed (`dovecot-imapd`, Debian's package); `ensure_dovecot()` installs it
with apt-get when it is missing and it can (root, apt-get present), and says why not otherwise.

`ImapBox` is one user's mailbox on it, filled with IMAP APPEND and looked at through EXAMINE;
`message()` makes a small RFC 5322 message.
"""

from __future__ import annotations

import datetime
import email.utils
import json
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from imapclient import IMAPClient

from campaign_engine.settings import ImapSettings
from devsupport.debian import DebianPackageUnavailable, ensure_debian_package
from devsupport.pki import Pki
from entrypoints.devserver import free_port

DOVECOT = Path("/usr/sbin/dovecot")
START_TIMEOUT_SECONDS = 15.0


class DovecotUnavailable(DebianPackageUnavailable):
    """Dovecot is not installed and could not be installed; the message says why."""


def ensure_dovecot() -> Path:
    """The path of the `dovecot` binary, installing Debian's `dovecot-imapd` with apt-get first
    when it is missing (needs root and apt-get; takes up to a few minutes).

    Raises `DovecotUnavailable` naming the reason when it is missing and cannot be installed.
    """
    return ensure_debian_package(DOVECOT, "dovecot-imapd", unavailable=DovecotUnavailable)


class TokenIntrospection:
    """An OAuth 2.0 token introspection endpoint (RFC 7662) on 127.0.0.1, in a thread.

    `POST /introspect` with the form field `token` answers `{"active": true, "username": U}` for a
    token added with `add(token, U)`, else `{"active": false}`. `requests` counts the calls.
    """

    def __init__(self) -> None:
        """Not listening until `start()`."""
        self._tokens: dict[str, str] = {}
        self._lock = threading.Lock()
        self.requests = 0
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def add(self, token: str, username: str) -> None:
        """Accept `token` as `username`'s from now on."""
        with self._lock:
            self._tokens[token] = username

    def revoke(self, token: str) -> None:
        """Answer `active: false` for `token` from now on."""
        with self._lock:
            self._tokens.pop(token, None)

    def _lookup(self, token: str) -> str | None:
        with self._lock:
            self.requests += 1
            return self._tokens.get(token)

    @property
    def url(self) -> str:
        """`http://127.0.0.1:PORT/introspect`; only after `start()`."""
        assert self._server is not None, "not started"
        return f"http://127.0.0.1:{self._server.server_address[1]}/introspect"

    def start(self) -> None:
        """Listens on a free port and serves in a daemon thread."""
        lookup = self._lookup

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                form = parse_qs(self.rfile.read(length).decode("ascii", "replace"))
                username = lookup((form.get("token") or [""])[0])
                body = json.dumps(
                    {"active": True, "username": username} if username else {"active": False}
                ).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass  # quiet: each line would carry the request, not worth the noise in tests

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="token-introspection", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Stops serving and closes the socket."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


@dataclass
class Dovecot:
    """A private Dovecot (IMAP only) under `directory`, run by `start()` as a child process.

    After `start()`: `plain_port` (plain text; STARTTLS offered; plain-text login allowed) and
    `tls_port` (implicit TLS), both on 127.0.0.1, the certificate chaining to `certificates.ca_pem`.
    Mail lives in `directory/mail/<user>` (maildir); as root, `directory` must be reachable by
    `nobody` (a `tempfile.mkdtemp()` under /tmp is; pytest's `tmp_path` is not). With `oauth2`,
    XOAUTH2 and OAUTHBEARER logins are checked against `introspection` (tokens added with
    `introspection.add`); passwords work either way.
    """

    directory: Path
    oauth2: bool = True
    introspection: TokenIntrospection | None = None
    plain_port: int = 0
    tls_port: int = 0
    certificates: Pki | None = None
    _process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def users_dir(self) -> Path:
        """One passwd-file per password user (`user:{PLAIN}password`), named after the user: a
        new file is read at once, where a line added to a shared file may go unseen while its
        mtime stays within the same second."""
        return self.directory / "users"

    @property
    def log_file(self) -> Path:
        """Dovecot's own log (its `log_path`)."""
        return self.directory / "dovecot.log"

    def mail_dir(self, user: str) -> Path:
        """Where `user`'s maildir lives (created at their first login)."""
        return self.directory / "mail" / user

    def add_user(self, user: str, password: str) -> None:
        """Lets `user` log in with `password` from now on (no ':' or newline in either)."""
        if any(character in user + password for character in ":\n\r"):
            raise ValueError("no ':' or line breaks in a passwd-file user or password")
        if "/" in user or user.startswith("."):
            raise ValueError("a user name here is also a file name: no '/', no leading '.'")
        (self.users_dir / user).write_text(f"{user}:{{PLAIN}}{password}\n")

    def _config(self) -> str:
        assert self.certificates is not None
        root = os.geteuid() == 0
        # Dovecot refuses to run mail processes as uid 0; as root they run as nobody (FACTS.md).
        # Not root: every process is the current user, the only one we may switch to.
        me = pwd.getpwuid(os.geteuid()).pw_name
        mail_user, mail_group = ("nobody", "nogroup") if root else (me, me)
        internal_user, internal_group = ("root", "root") if root else (me, me)
        login_user = "nobody" if root else me
        d = self.directory
        oauth2 = ""
        mechanisms = "plain login"
        if self.introspection is not None:
            mechanisms += " xoauth2 oauthbearer"
            (d / "oauth2.conf.ext").write_text(
                "introspection_mode = post\n"
                f"introspection_url = {self.introspection.url}\n"
                "force_introspection = yes\n"
                "username_attribute = username\n"
                "active_attribute = active\n"
                "active_value = true\n"
            )
            oauth2 = (
                "passdb {\n"
                "  driver = oauth2\n"
                "  mechanisms = xoauth2 oauthbearer\n"
                f"  args = {d}/oauth2.conf.ext\n"
                "}\n"
            )
        return f"""\
protocols = imap
listen = 127.0.0.1
base_dir = {d}/run
state_dir = {d}/state
log_path = {self.log_file}
ssl = yes
ssl_cert = <{self.certificates.server_pem}
ssl_key = <{self.certificates.server_key}
disable_plaintext_auth = no
auth_mechanisms = {mechanisms}
# Failed logins answer at once (default 2 s): the suite tests wrong passwords and tokens.
auth_failure_delay = 0
mail_location = maildir:{d}/mail/%u
default_login_user = {login_user}
default_internal_user = {internal_user}
default_internal_group = {internal_group}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {self.plain_port}
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {self.tls_port}
    ssl = yes
  }}
  chroot =
}}
service anvil {{
  chroot =
}}
{oauth2}passdb {{
  driver = passwd-file
  mechanisms = plain login
  args = scheme=PLAIN {self.users_dir}/%u
}}
userdb {{
  driver = static
  args = uid={mail_user} gid={mail_group} home={d}/mail/%u
}}
"""

    def start(self) -> None:
        """Writes the config and certificates, starts Dovecot in the foreground as a child
        process and waits until both ports accept connections.

        Raises `DovecotUnavailable` when Dovecot is missing and cannot be installed, and
        `RuntimeError` (with the end of Dovecot's log) when it does not come up within
        `START_TIMEOUT_SECONDS`.
        """
        binary = ensure_dovecot()
        self.directory.mkdir(parents=True, exist_ok=True)
        for sub in ("run", "state", "mail"):
            (self.directory / sub).mkdir(exist_ok=True)
        if os.geteuid() == 0:
            # Mail processes run as nobody: they must reach the mail store through every parent.
            self.directory.chmod(0o711)
            blocked = [
                str(parent)
                for parent in self.directory.resolve().parents
                if not parent.stat().st_mode & 0o001
            ]
            if blocked:
                raise RuntimeError(
                    f"Dovecot's mail processes (as nobody) cannot reach {self.directory}: "
                    f"{blocked} not searchable by others; use a directory under /tmp"
                )
            shutil.chown(self.directory / "mail", "nobody", "nogroup")
        self.users_dir.mkdir(exist_ok=True)
        self.certificates = Pki.create(self.directory / "tls")
        self.plain_port = free_port()
        self.tls_port = free_port()
        if self.oauth2:
            self.introspection = TokenIntrospection()
            self.introspection.start()
        config = self.directory / "dovecot.conf"
        config.write_text(self._config())
        self._process = subprocess.Popen(
            [str(binary), "-F", "-c", str(config)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=(self.directory / "dovecot.stderr").open("wb"),
            start_new_session=True,
        )
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        # After a failed login Dovecot delays every login from that IP (2, 4, 8, up to 15 s, for
        # ~30 s): all of ours come from 127.0.0.1, and the suite fails logins on purpose. The
        # auth process asks anvil through this socket when it starts (at the first login, after
        # the wait below); when the socket is missing it turns the penalty off, silently.
        penalty_socket = self.directory / "run" / "anvil-auth-penalty"
        while not penalty_socket.exists():
            if self._process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"Dovecot did not start: {self._log_tail()}")
            time.sleep(0.01)
        penalty_socket.unlink()
        while not all(self._accepts(port) for port in (self.plain_port, self.tls_port)):
            if self._process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"Dovecot did not start: {self._log_tail()}")
            time.sleep(0.05)

    def _accepts(self, port: int) -> bool:
        with socket.socket() as sock:
            return sock.connect_ex(("127.0.0.1", port)) == 0

    def _log_tail(self) -> str:
        text = ""
        for path in (self.directory / "dovecot.stderr", self.log_file):
            if path.exists():
                text += path.read_text(errors="replace")[-2000:]
        return text.strip() or "(no log)"

    def stop(self) -> None:
        """Stops Dovecot (SIGTERM to its process group, SIGKILL after 10 s) and waits for it,
        then the introspection endpoint."""
        if self.introspection is not None:
            self.introspection.stop()
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        # Its own session: the master and every imap/auth child it started get the signal.
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()

    def __enter__(self) -> Dovecot:
        """Starts it (see `start`)."""
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        """Stops it (see `stop`)."""
        self.stop()


# --- filling a mailbox -------------------------------------------------------------------------


def message(number: int, *, body_bytes: int = 200, subject: str | None = None) -> bytes:
    """A small RFC 5322 message with CRLF line ends and a unique Message-ID; `body_bytes` of
    body (in 76-character lines)."""
    line = (b"x" * 74) + b"\r\n"
    body = (line * (body_bytes // len(line) + 1))[:body_bytes]
    headers = (
        f"From: Lead {number} <lead{number}@example.net>\r\n"
        "To: sales@example.test\r\n"
        f"Subject: {subject or f'Re: message {number}'}\r\n"
        f"Date: {email.utils.formatdate()}\r\n"
        f"Message-ID: <{uuid.uuid4()}@example.net>\r\n"
        "MIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=us-ascii\r\n"
        "\r\n"
    )
    return headers.encode() + body


@dataclass
class ImapBox:
    """A user of its own on `dovecot`, with a password, and a client to fill their folders."""

    dovecot: Dovecot
    user: str
    password: str

    def settings(self, **overrides: Any) -> ImapSettings:
        """Reader settings for this box: plain text (`security: none`) on the plain port unless
        overridden."""
        values: dict[str, Any] = {
            "host": "127.0.0.1",
            "port": self.dovecot.plain_port,
            "security": "none",
            "username": self.user,
            "password": self.password,
        }
        values.update(overrides)
        return ImapSettings.model_validate(values)

    def client(self) -> IMAPClient:
        """A logged-in client (plain port, AUTHENTICATE PLAIN); the caller logs out."""
        client = IMAPClient("127.0.0.1", port=self.dovecot.plain_port, ssl=False, timeout=10)
        client.plain_login(self.user, self.password)  # SASL PLAIN: any UTF-8 password
        return client

    def append(
        self,
        raw: bytes,
        *,
        folder: str = "INBOX",
        flags: tuple[bytes, ...] = (),
        received: datetime.datetime | None = None,
    ) -> int:
        """APPENDs `raw` to `folder` (INTERNALDATE `received`, else now); returns its UID (from
        the server's APPENDUID)."""
        client = self.client()
        try:
            answer = client.append(folder, raw, flags=flags, msg_time=received)
        finally:
            client.logout()
        match = re.search(rb"\[APPENDUID \d+ (\d+)\]", answer)
        assert match, answer
        return int(match.group(1))

    def create_folder(self, folder: str) -> None:
        """CREATE `folder`."""
        client = self.client()
        try:
            client.create_folder(folder)
        finally:
            client.logout()

    def delete_folder(self, folder: str) -> None:
        """DELETE `folder` and all in it."""
        client = self.client()
        try:
            client.delete_folder(folder)
        finally:
            client.logout()

    def look(self, folder: str = "INBOX") -> tuple[int, dict[int, tuple[bytes, ...]]]:
        """`folder`'s UIDVALIDITY and each message's flags by UID, seen through EXAMINE (which
        changes nothing)."""
        client = self.client()
        try:
            info = client.select_folder(folder, readonly=True)
            uids = client.search(["ALL"])
            flags = {uid: tuple(sorted(f)) for uid, f in client.get_flags(uids).items()}
            return int(info[b"UIDVALIDITY"]), flags
        finally:
            client.logout()

    def folders(self) -> list[str]:
        """The names of this user's folders, sorted."""
        client = self.client()
        try:
            return sorted(name for _, _, name in client.list_folders())
        finally:
            client.logout()

    def message_file(self, uid: int, folder: str = "INBOX") -> Path:
        """The maildir file holding message `uid` of `folder` (from `dovecot-uidlist`)."""
        root = self.dovecot.mail_dir(self.user)
        directory = root if folder == "INBOX" else root / f".{folder}"
        for line in (directory / "dovecot-uidlist").read_text().splitlines()[1:]:
            number, _, rest = line.partition(" ")
            if int(number) == uid:
                base = rest.rsplit(":", 1)[-1].strip()
                for sub in ("cur", "new"):
                    found = list((directory / sub).glob(f"{base}*"))
                    if found:
                        return found[0]
        raise AssertionError(f"no file for UID {uid}")
