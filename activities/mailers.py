"""Where delivered messages go: the file outbox (embedded default) or an SMTP server."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from email.message import EmailMessage
from typing import Protocol

import aiosmtplib

from activities.outbox import FileOutbox


class NotSent(Exception):
    """The message certainly did not reach the server; `permanent` says whether retrying helps."""

    def __init__(self, message: str, *, permanent: bool) -> None:
        super().__init__(message)
        self.permanent = permanent


class Superseded(Exception):
    """Another attempt at the same message got to hand it over first; this one sent nothing."""


HandOver = Callable[[], Awaitable[bool]]
"""Called right before the message leaves; False means another attempt owns it (`Superseded`)."""


class Mailer(Protocol):
    async def send(self, message_id: str, message: EmailMessage, hand_over: HandOver) -> None:
        """Hands the message over. Raises `NotSent` when it certainly was not accepted; any other
        error leaves it in doubt."""


class OutboxMailer:
    def __init__(self, outbox: FileOutbox) -> None:
        self.outbox = outbox

    async def send(self, message_id: str, message: EmailMessage, hand_over: HandOver) -> None:
        if not await hand_over():
            raise Superseded(message_id)
        await asyncio.to_thread(self.outbox.deliver, message_id, message)


class SmtpMailer:
    def __init__(
        self,
        *,
        host: str,
        port: int,
        security: str = "none",
        username: str | None = None,
        password: str | None = None,
        timeout_seconds: float = 30.0,
    ) -> None:
        self._host = host
        self._port = port
        self._security = security
        self._username = username
        self._password = password
        self._timeout = timeout_seconds

    async def send(self, message_id: str, message: EmailMessage, hand_over: HandOver) -> None:
        client = aiosmtplib.SMTP(
            hostname=self._host,
            port=self._port,
            use_tls=self._security == "tls",
            start_tls=self._security == "starttls",
            timeout=self._timeout,
        )
        # Everything before DATA can fail without the server holding the message, so those
        # failures are `NotSent`; only DATA can leave a message in doubt.
        try:
            await client.connect()
            if self._username and self._password:
                await client.login(self._username, self._password)
            sender = str(message["From"])
            await client.mail(sender)
            await client.rcpt(str(message["To"]))
        except aiosmtplib.SMTPResponseException as error:
            await _quietly_close(client)
            raise NotSent(
                f"SMTP {error.code} before DATA: {error.message}", permanent=error.code >= 500
            ) from error
        except (aiosmtplib.SMTPException, OSError) as error:
            await _quietly_close(client)
            raise NotSent(f"SMTP unreachable: {error}", permanent=False) from error
        if not await hand_over():
            await _quietly_close(client)
            raise Superseded(message_id)
        try:
            await client.data(message.as_bytes())
        except aiosmtplib.SMTPResponseException as error:
            # A reply code to DATA is the server's verdict: it refused the message.
            await _quietly_close(client)
            raise NotSent(
                f"SMTP {error.code} to DATA: {error.message}", permanent=error.code >= 500
            ) from error
        await _quietly_close(client)


async def _quietly_close(client: aiosmtplib.SMTP) -> None:
    if client.is_connected:
        try:
            await client.quit()
        except (aiosmtplib.SMTPException, OSError):
            client.close()
