"""A mailbox of one's own on the session's Dovecot, filled with IMAP APPEND, looked at read-only."""

from __future__ import annotations

import email.utils
import re
import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from imapclient import IMAPClient

from campaign_engine.settings import ImapSettings
from devsupport.dovecot import Dovecot


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
        """A logged-in client (plain port); the caller logs out."""
        client = IMAPClient("127.0.0.1", port=self.dovecot.plain_port, ssl=False, timeout=10)
        client.login(self.user, self.password)
        return client

    def append(
        self,
        raw: bytes,
        *,
        folder: str = "INBOX",
        flags: tuple[bytes, ...] = (),
        received: datetime | None = None,
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
