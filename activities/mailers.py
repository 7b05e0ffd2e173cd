"""Where delivered messages go: the file outbox (embedded default) or an SMTP server."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Protocol

import aiosmtplib

from activities.messages import OutgoingMessage
from activities.outbox import FileOutbox


class NotSent(Exception):
    """The message certainly did not reach the server; `permanent` says whether retrying helps.

    `rcpt_reply` is the server's `(code, text)` answer when it refused the recipient at
    `RCPT TO` (what `inbound.smtp_replies.rcpt_refusal` reads as a hard bounce), else None.
    """

    def __init__(
        self, message: str, *, permanent: bool, rcpt_reply: tuple[int, str] | None = None
    ) -> None:
        super().__init__(message)
        self.permanent = permanent
        self.rcpt_reply = rcpt_reply


class SmtpUtf8Unsupported(NotSent):
    """The recipient needs SMTPUTF8 (RFC 6531) and the server does not offer it: permanent."""

    def __init__(self, message: str) -> None:
        super().__init__(message, permanent=True)


class Superseded(Exception):
    """Another attempt at the same message got to hand it over first; this one sent nothing."""


HandOver = Callable[[], Awaitable[bool]]
"""Called right before the message leaves; False means another attempt owns it (`Superseded`)."""


class Mailer(Protocol):
    """What the delivery activity sends through: `OutboxMailer` or `SmtpMailer`."""

    async def send(self, message_id: str, message: OutgoingMessage, hand_over: HandOver) -> None:
        """Hands the message over to its envelope's recipient.

        Raises `NotSent` when it certainly was not accepted (`permanent` when retrying cannot
        help), `Superseded` when `hand_over` said another attempt owns it; any other error
        leaves it in doubt.
        """


class OutboxMailer:
    """Writes each message as a file; a file carries UTF-8 headers as well as ASCII ones."""

    def __init__(self, outbox: FileOutbox) -> None:
        self.outbox = outbox

    async def send(self, message_id: str, message: OutgoingMessage, hand_over: HandOver) -> None:
        """See `Mailer.send`."""
        if not await hand_over():
            raise Superseded(message_id)
        await asyncio.to_thread(self.outbox.deliver, message_id, message.as_bytes())


class SmtpMailer:
    """One SMTP connection per message, closed on every path (success, refusal, cancellation)."""

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

    async def send(self, message_id: str, message: OutgoingMessage, hand_over: HandOver) -> None:
        """See `Mailer.send`. Raises `SmtpUtf8Unsupported` for a UTF-8 recipient when the
        server does not advertise SMTPUTF8; SMTP replies 5xx are permanent, 4xx transient."""
        client = aiosmtplib.SMTP(
            hostname=self._host,
            port=self._port,
            use_tls=self._security == "tls",
            start_tls=self._security == "starttls",
            timeout=self._timeout,
        )
        try:
            await self._send(client, message_id, message, hand_over)
        finally:
            # Whatever happened (a refusal, a cancelled activity, a bug), the socket goes.
            client.close()

    async def _send(
        self,
        client: aiosmtplib.SMTP,
        message_id: str,
        message: OutgoingMessage,
        hand_over: HandOver,
    ) -> None:
        # Everything before DATA can fail without the server holding the message, so those
        # failures are `NotSent`; only DATA can leave a message in doubt.
        encoding = "utf-8" if message.smtputf8 else "ascii"
        try:
            await client.connect()
            if self._username and self._password:
                await client.login(self._username, self._password)
            if client.is_ehlo_or_helo_needed:
                await client.ehlo()
            if message.smtputf8 and not client.supports_extension("smtputf8"):
                raise SmtpUtf8Unsupported(
                    "the recipient's address is not ASCII and the SMTP server does not offer "
                    "SMTPUTF8 (RFC 6531), so it cannot be sent there"
                )
            await client.mail(
                message.envelope_from,
                options=["SMTPUTF8"] if message.smtputf8 else None,
                encoding=encoding,
            )
            try:
                await client.rcpt(message.recipient, encoding=encoding)
            except aiosmtplib.SMTPResponseException as error:
                raise NotSent(
                    f"SMTP {error.code} to RCPT: {error.message}",
                    permanent=error.code >= 500,
                    rcpt_reply=(error.code, error.message),
                ) from error
        except NotSent:
            raise
        except aiosmtplib.SMTPResponseException as error:
            raise NotSent(
                f"SMTP {error.code} before DATA: {error.message}", permanent=error.code >= 500
            ) from error
        except (aiosmtplib.SMTPException, OSError) as error:
            raise NotSent(f"SMTP unreachable: {error}", permanent=False) from error
        except (ValueError, UnicodeError) as error:
            # An address the SMTP client cannot write: the same on every attempt.
            raise NotSent(f"cannot send to this address: {error}", permanent=True) from error
        if not await hand_over():
            raise Superseded(message_id)
        try:
            await client.data(message.as_bytes())
        except aiosmtplib.SMTPResponseException as error:
            # A reply code to DATA is the server's verdict: it refused the message.
            raise NotSent(
                f"SMTP {error.code} to DATA: {error.message}", permanent=error.code >= 500
            ) from error
        # The message was accepted; a failed goodbye changes nothing.
        with contextlib.suppress(aiosmtplib.SMTPException, OSError):
            await client.quit()
