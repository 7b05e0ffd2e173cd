"""Reads a sending mailbox over IMAP, read-only: the messages after a cursor, and a wait for more.

`ImapReader(settings).fetch_new(cursor, limit)` connects, logs in (LOGIN with a password, SASL
PLAIN when it is not ASCII, or SASL XOAUTH2 with an access token read at each login), opens the
folder with EXAMINE (read-only: no flag is ever set, nothing deleted or moved; BODY.PEEK never
sets \\Seen either) and returns the raw RFC 5322 bytes of up to `limit` messages with a UID
above the cursor's, in UID order, with the cursor to pass next time. `wait_for_new(cursor,
wait_seconds)` returns once the folder has mail past the cursor (IDLE where the server offers
it, else NOOP polling), the server reports trouble during IDLE (an untagged NO, BAD or BYE, as
for a folder deleted meanwhile), or when that long has passed. Each call opens its own
connection and closes it, so any worker can make any call; the cursor is plain data
(`ImapCursor`: ints and ISO date strings) for a Temporal workflow to keep.

Decisions (docs/how-to/imap-mailboxes.md):

- **First read** (no cursor): messages received in the last `backfill_days` days (IMAP `SEARCH
  SINCE`), not the whole mailbox: years of old replies must not stop today's instances, while a
  reply that arrived just before the reader started still should.
- **UIDVALIDITY changed** (the folder was recreated or renumbered; RFC 3501 §2.3.1.1): the old
  UIDs mean nothing, so the read restarts at the messages received since one day before the
  cursor's `resume_date` (the day of the last message read, or of the last call that caught up).
  The day of margin covers the server's time zone (SINCE compares dates, not instants). Messages
  read before the change may come again: the pipeline deduplicates, it must never miss one. A
  message moved in later with an old received date is not seen on such a restart.
- **Too large** (over `max_message_bytes`, 25 MB by default, by RFC822.SIZE before any body is
  fetched) and **failed fetches** (the server answers NO or BAD for that message, or drops the
  connection twice while fetching it alone, as Dovecot does with `* BYE` for a message file it
  cannot read) are returned as `ImapSkipped` records and the cursor moves past them: a poison
  message never stalls the reader. A connection lost otherwise, or a login refused, raises
  instead and the cursor does not move.
- **Memory**: one answer holds at most `max_batch_bytes` (64 MB) of messages, at least one;
  `more` says the rest waits for the next call.

Errors are `ImapError` subclasses whose messages name the host, port and what failed, with the
server's response code (e.g. `AUTHENTICATIONFAILED`) but never a password, token, address or
message content. Logs carry the same.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import imaplib
import logging
import re
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Executor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any, ClassVar, Literal, TypeVar

from imapclient import IMAPClient
from imapclient.exceptions import CapabilityError, LoginError

from campaign_engine.settings import ImapSettings

MAX_MESSAGE_BYTES = 25 * 1024 * 1024
"""Largest message fetched (RFC822.SIZE), what mailbox providers accept; larger ones are skipped."""

MAX_BATCH_BYTES = 64 * 1024 * 1024
"""One `fetch_new` answer holds at most this many bytes of messages (by RFC822.SIZE), one at
least; the rest comes with the next call (`more`)."""

IDLE_RENEW_SECONDS = 24 * 60.0
"""An IDLE is ended and re-issued after this long: RFC 2177 lets servers drop a client idle for
30 minutes and asks clients to re-issue IDLE at least every 29."""

BODY_BATCH_BYTES = 8 * 1024 * 1024
"""One FETCH of bodies asks for at most this many bytes (by RFC822.SIZE), one message at least."""

BODY_BATCH_MESSAGES = 64
"""One FETCH of bodies asks for at most this many messages."""

_WAKE_SLICE_SECONDS = 1.0
"""A wait looks at its stop flag this often, so a cancelled wait frees its thread within it."""

_RESPONSE_CODE = re.compile(rb"\[([A-Z][A-Z0-9-]*)")

log = logging.getLogger(__name__)
# imapclient logs every protocol line, message bodies included, at DEBUG (it redacts only
# LOGIN and AUTHENTICATE): never let a DEBUG log level print mail.
logging.getLogger("imapclient").setLevel(logging.INFO)

SkipReason = Literal["too_large", "fetch_failed", "vanished", "connection_lost"]
"""Why a message was not returned: over the size limit; the server answered NO or BAD (or no
body) for it; it was expunged between SEARCH and FETCH; the connection dropped twice while
fetching it alone."""

T = TypeVar("T")


class ImapError(Exception):
    """Reading the mailbox failed; the message names host, port and step, never a secret.

    `retryable`: whether trying again later may succeed without an operator changing something.
    """

    retryable: ClassVar[bool] = True


class ImapConnectionError(ImapError):
    """The server could not be reached, or the connection dropped or timed out."""


class ImapTlsError(ImapError):
    """TLS failed: the certificate did not verify, the handshake failed, or the server does not
    offer STARTTLS when `security` is `starttls`."""

    retryable = False


class ImapAuthError(ImapError):
    """The server refused the login (wrong password, invalid or expired token, mechanism not
    offered)."""

    retryable = False


class ImapTokenUnavailable(ImapAuthError):
    """No access token could be read: the file is missing, empty or not a token, or the command
    failed. A sidecar may yet write it, so this one is retryable."""

    retryable = True


class ImapFolderError(ImapError):
    """The folder cannot be opened (it does not exist, or the server refuses it)."""

    retryable = False


class ImapProtocolError(ImapError):
    """The server answered something unexpected to a command that should succeed."""


@dataclass(frozen=True)
class ImapCursor:
    """Where a mailbox's reading stands; plain data, kept by the caller between calls.

    `uidvalidity`: the folder's UIDVALIDITY the UIDs belong to. `last_uid`: every message with a
    UID up to this one has been returned, skipped, or left out on purpose (older than the first
    read's backfill or a restart's date). `resume_date`: an ISO date (`YYYY-MM-DD`, UTC); should
    UIDVALIDITY change, reading restarts at messages received from the day before it. `since`: an
    ISO date while a first read or a restart has more to catch up: until then only messages
    received on or after it are read; None otherwise.
    """

    uidvalidity: int
    last_uid: int
    resume_date: str
    since: str | None = None


@dataclass(frozen=True)
class ImapMessage:
    """One message as the server stores it: `raw` is its RFC 5322 bytes, `received_at` its
    INTERNALDATE as ISO 8601 in UTC ("" when the server gave none)."""

    uid: int
    raw: bytes
    received_at: str


@dataclass(frozen=True)
class ImapSkipped:
    """A message the reader moved past without its content: `reason` (see `SkipReason`),
    `size` in bytes by RFC822.SIZE (None when unknown), `detail` the server's response code or
    the error's class (never content)."""

    uid: int
    reason: SkipReason
    size: int | None
    detail: str


@dataclass(frozen=True)
class ImapBatch:
    """One `fetch_new` answer: `messages` and `skipped` in UID order; `cursor` to pass next;
    `more` when messages past `limit` remain (call again without waiting); `restarted` when this
    read started afresh (no cursor, or UIDVALIDITY changed) rather than after the cursor's UID.
    `since`: the ISO date this read searched from (a first read, a restart, or one catching up
    after them), None when it read every UID after the cursor's; a caller that resumes from
    one of `messages` (`ImapCursor(uidvalidity=cursor.uidvalidity, last_uid=uid, …,
    since=since)`) reads exactly what this read would have returned after it."""

    cursor: ImapCursor
    messages: tuple[ImapMessage, ...]
    skipped: tuple[ImapSkipped, ...]
    more: bool
    restarted: bool
    since: str | None = None


@dataclass(frozen=True)
class _Failed:
    """A per-message fetch result that is no result."""

    reason: SkipReason
    detail: str


def _response_code(error: BaseException) -> str:
    """The first `[CODE]` of an IMAP error (RFC 5530), else the error's class name. Never the
    rest of the text: servers may put the user name or other detail there."""
    text = str(error).encode("utf-8", "replace")
    match = _RESPONSE_CODE.search(text)
    return match.group(1).decode() if match else type(error).__name__


class _Session:
    """One logged-in connection with the folder EXAMINEd; reconnects on request."""

    def __init__(self, reader: ImapReader) -> None:
        self._reader = reader
        self.client: Any = None
        self.uidvalidity = 0
        self.uidnext: int | None = None
        self.idle = False

    def open(self) -> None:
        """Connects, logs in and EXAMINEs the folder; raises an `ImapError`."""
        self.client = self._reader._login()
        try:
            folder = self._reader._settings.folder
            try:
                info = self.client.select_folder(folder, readonly=True)
            except imaplib.IMAP4.abort:
                raise  # a lost connection, not a refused folder: translated below
            except imaplib.IMAP4.error as error:
                raise ImapFolderError(
                    f"{self._reader._where}: cannot open folder {folder!r} "
                    f"({_response_code(error)})"
                ) from None
            if b"UIDVALIDITY" not in info:
                raise ImapProtocolError(f"{self._reader._where}: EXAMINE gave no UIDVALIDITY")
            self.uidvalidity = int(info[b"UIDVALIDITY"])
            self.uidnext = int(info[b"UIDNEXT"]) if b"UIDNEXT" in info else None
            self.idle = self._reader._settings.idle and self.client.has_capability("IDLE")
        except BaseException as error:
            self.close()
            if isinstance(error, ImapError | imaplib.IMAP4.error | OSError):
                raise self._reader._translate(error, "opening the folder") from None
            raise

    def reconnect(self) -> None:
        """A fresh connection after one was lost; raises `ImapConnectionError` if the folder's
        UIDVALIDITY changed meanwhile (the caller's UIDs would mean other messages)."""
        uidvalidity = self.uidvalidity
        self.close()
        self.open()
        if self.uidvalidity != uidvalidity:
            raise ImapConnectionError(
                f"{self._reader._where}: UIDVALIDITY changed while reading; read again"
            )

    def close(self) -> None:
        """Logs out, or drops the socket when that fails; never raises."""
        client, self.client = self.client, None
        if client is None:
            return
        try:
            client.logout()
        except Exception:
            with contextlib.suppress(Exception):  # already closed: nothing left to release
                client.shutdown()


class ImapReader:
    """Reads one mailbox as `settings` describes it; safe to share, each call connects anew.

    `ssl_context`: verifies the server (default: the system trust store, or `settings.ca_file`).
    `max_message_bytes`: the size over which a message is skipped. `max_batch_bytes`: at most
    this many bytes of messages in one answer (at least one message; `more` tells there are
    others), so that `limit` messages of 25 MB never sit in memory at once. `executor`: where
    the blocking IMAP calls of the async methods run (default: the event loop's default
    executor); a wait holds a thread for its whole length, so a worker reading many mailboxes
    passes a pool sized for them. `clock`: now, as an aware datetime (for `resume_date` and the
    first read's backfill).
    """

    def __init__(
        self,
        settings: ImapSettings,
        *,
        ssl_context: ssl.SSLContext | None = None,
        max_message_bytes: int = MAX_MESSAGE_BYTES,
        max_batch_bytes: int = MAX_BATCH_BYTES,
        executor: Executor | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        """See the class docstring; nothing connects until a call."""
        self._settings = settings
        self._ssl_context_given = ssl_context
        self._max_message_bytes = max_message_bytes
        self._max_batch_bytes = max_batch_bytes
        self._executor = executor
        self._clock = clock
        self._where = f"IMAP {settings.host}:{settings.resolved_port}"

    # -- async API -------------------------------------------------------------------------

    async def fetch_new(self, cursor: ImapCursor | None, limit: int) -> ImapBatch:
        """Up to `limit` (≥ 1) messages, and `max_batch_bytes`, after `cursor` (None: the first
        read), with the next cursor; see the module docstring. Raises an `ImapError` when the
        mailbox cannot be read; the caller then keeps its cursor and tries again later."""
        return await self._in_thread(self.fetch_new_blocking, cursor, limit)

    async def wait_for_new(self, cursor: ImapCursor | None, wait_seconds: float) -> bool:
        """True as soon as the folder may hold messages past `cursor` (at once when it already
        does, when `cursor` is None, has `since` set or its UIDVALIDITY is no longer the
        folder's); False after `wait_seconds` without. Uses IDLE, re-issued every
        `IDLE_RENEW_SECONDS`, where the server offers it and `settings.idle` is on; else a NOOP
        every `settings.poll_interval_seconds`. Raises an `ImapError` like `fetch_new`.
        Cancelling it frees its thread within about a second."""
        stop = threading.Event()
        try:
            return await self._in_thread(self.wait_for_new_blocking, cursor, wait_seconds, stop)
        finally:
            stop.set()

    async def _in_thread(self, function: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(function, *args))

    # -- blocking API (for a synchronous activity, or a thread of one's own) ----------------

    def fetch_new_blocking(self, cursor: ImapCursor | None, limit: int) -> ImapBatch:
        """`fetch_new`, blocking the calling thread."""
        if limit < 1:
            raise ValueError("limit must be at least 1")
        with self._session() as session:
            today = self._clock().astimezone(UTC).date()
            restarted = cursor is None or cursor.uidvalidity != session.uidvalidity
            since: date | None
            if cursor is None:
                since = today - timedelta(days=self._settings.backfill_days)
                last_uid = 0
                resume_date = since
            elif restarted:
                since = date.fromisoformat(cursor.resume_date) - timedelta(days=1)
                last_uid = 0
                resume_date = since
                log.warning(
                    "%s: UIDVALIDITY changed (%d -> %d); reading again from %s",
                    self._where,
                    cursor.uidvalidity,
                    session.uidvalidity,
                    since.isoformat(),
                )
            else:
                since = date.fromisoformat(cursor.since) if cursor.since else None
                last_uid = cursor.last_uid
                resume_date = date.fromisoformat(cursor.resume_date)

            if since is None and session.uidnext is not None and session.uidnext <= last_uid + 1:
                candidates: list[int] = []  # nothing arrived since: no SEARCH needed
            else:
                candidates = self._search(session, last_uid, since)
            messages, skipped, dates, handled = self._fetch(session, candidates[:limit])
            more = len(candidates) > len(handled)

            if more:
                # Not caught up: a restart would have to begin at the last message read.
                last = dates.get(handled[-1])
                if last is not None:
                    resume_date = last
                next_last_uid = handled[-1]
            else:
                # Caught up: every UID the folder had when EXAMINEd has been considered, those
                # a first read or a restart left out by date too.
                resume_date = today
                next_last_uid = max([last_uid, *handled, (session.uidnext or 1) - 1])
            next_cursor = ImapCursor(
                uidvalidity=session.uidvalidity,
                last_uid=next_last_uid,
                resume_date=resume_date.isoformat(),
                since=since.isoformat() if more and since is not None else None,
            )
        if skipped:
            for record in skipped:
                log.warning(
                    "%s: message UID %d skipped: %s (%s, %s bytes)",
                    self._where,
                    record.uid,
                    record.reason,
                    record.detail,
                    record.size,
                )
        log.debug(
            "%s: %d messages, %d skipped, more=%s", self._where, len(messages), len(skipped), more
        )
        return ImapBatch(
            cursor=next_cursor,
            messages=tuple(messages),
            skipped=tuple(skipped),
            more=more,
            restarted=restarted,
            since=since.isoformat() if since is not None else None,
        )

    def wait_for_new_blocking(
        self, cursor: ImapCursor | None, wait_seconds: float, stop: threading.Event | None = None
    ) -> bool:
        """`wait_for_new`, blocking the calling thread; returns False early once `stop` is set."""
        stop = stop or threading.Event()
        deadline = time.monotonic() + max(wait_seconds, 0.0)
        with self._session() as session:
            if cursor is None or cursor.since is not None:
                return True
            if session.uidvalidity != cursor.uidvalidity:
                return True
            if session.uidnext is not None and session.uidnext > cursor.last_uid + 1:
                return True
            client = session.client
            try:
                if session.idle:
                    return self._idle(client, deadline, stop)
                return self._poll(client, deadline, stop)
            except (imaplib.IMAP4.error, OSError) as error:
                raise self._translate(error, "waiting for new mail") from None

    # -- internals ---------------------------------------------------------------------------

    def _idle(self, client: Any, deadline: float, stop: threading.Event) -> bool:
        while True:
            renew_at = min(deadline, time.monotonic() + IDLE_RENEW_SECONDS)
            client.idle()
            arrived = False
            try:
                while not arrived and not stop.is_set():
                    remaining = renew_at - time.monotonic()
                    if remaining <= 0:
                        break
                    responses = client.idle_check(timeout=min(remaining, _WAKE_SLICE_SECONDS))
                    arrived = _announces_new_mail(responses) or _signals_trouble(responses)
            finally:
                _, responses = client.idle_done()
            if arrived or _announces_new_mail(responses) or _signals_trouble(responses):
                return True
            if stop.is_set() or time.monotonic() >= deadline:
                return False

    def _poll(self, client: Any, deadline: float, stop: threading.Event) -> bool:
        interval = self._settings.poll_interval_seconds
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or stop.wait(min(interval, remaining)):
                return False
            _, responses = client.noop()
            if _announces_new_mail(responses):
                return True

    def _ssl_context(self) -> ssl.SSLContext:
        if self._ssl_context_given is not None:
            return self._ssl_context_given
        cafile = str(self._settings.ca_file) if self._settings.ca_file else None
        return ssl.create_default_context(cafile=cafile)

    @contextmanager
    def _session(self) -> Iterator[_Session]:
        session = _Session(self)
        session.open()
        try:
            yield session
        finally:
            session.close()

    def _login(self) -> Any:
        """A connected, authenticated client; raises an `ImapError`."""
        settings = self._settings
        context = self._ssl_context() if settings.security != "none" else None
        try:
            client = IMAPClient(
                settings.host,
                port=settings.resolved_port,
                ssl=settings.security == "tls",
                ssl_context=context,
                timeout=settings.timeout_seconds,
            )
        except (imaplib.IMAP4.error, OSError) as error:
            raise self._translate(error, "connecting") from None
        client.normalise_times = False  # INTERNALDATE with its zone, not naive local time
        try:
            if settings.security == "starttls":
                try:
                    client.starttls(context)
                except CapabilityError:
                    raise ImapTlsError(
                        f"{self._where}: the server does not offer STARTTLS"
                    ) from None
                except (imaplib.IMAP4.error, OSError) as error:
                    raise self._translate(error, "upgrading with STARTTLS") from None
            if settings.password is not None:
                password = settings.password.get_secret_value()
                if (settings.username + password).isascii():
                    client.login(settings.username, password)
                elif client.has_capability("AUTH=PLAIN"):
                    # LOGIN's strings are ASCII (imaplib refuses others); SASL PLAIN carries
                    # UTF-8 (RFC 4616).
                    client.plain_login(settings.username, password)
                else:
                    raise ImapAuthError(
                        f"{self._where}: the username or password is not ASCII and the server "
                        "offers no AUTHENTICATE PLAIN to send it"
                    )
            else:
                if not client.has_capability("AUTH=XOAUTH2"):
                    raise ImapAuthError(f"{self._where}: the server does not offer XOAUTH2")
                client.sasl_login("XOAUTH2", _XOAuth2(settings.username, self._access_token()))
        except BaseException as error:
            with contextlib.suppress(Exception):  # may already be gone; the error says why
                client.shutdown()
            if isinstance(error, ImapError):
                raise
            if isinstance(error, imaplib.IMAP4.error | OSError):
                raise self._translate(error, "logging in") from None
            raise
        return client

    def _access_token(self) -> str:
        """The current token from the file or the command; raises `ImapTokenUnavailable`."""
        settings = self._settings
        if settings.access_token_file is not None:
            try:
                token = settings.access_token_file.read_text("utf-8").strip()
            except (OSError, UnicodeDecodeError) as error:
                raise ImapTokenUnavailable(
                    f"{self._where}: access_token_file {str(settings.access_token_file)!r} "
                    f"cannot be read ({type(error).__name__})"
                ) from None
            source = "access_token_file"
        else:
            assert settings.access_token_command is not None
            try:
                done = subprocess.run(
                    settings.access_token_command,
                    stdin=subprocess.DEVNULL,
                    capture_output=True,
                    timeout=settings.timeout_seconds,
                    check=False,
                )
            except (OSError, subprocess.TimeoutExpired) as error:
                raise ImapTokenUnavailable(
                    f"{self._where}: access_token_command failed ({type(error).__name__})"
                ) from None
            if done.returncode != 0:
                # Its output is not shown: it may hold a token or an address.
                raise ImapTokenUnavailable(
                    f"{self._where}: access_token_command exited with status {done.returncode}"
                )
            token = done.stdout.decode("utf-8", "replace").strip()
            source = "access_token_command"
        # RFC 6750 b64token characters only: anything else is not a token (and a control
        # character would split the XOAUTH2 string).
        if not re.fullmatch(r"[A-Za-z0-9\-._~+/]+=*", token):
            raise ImapTokenUnavailable(
                f"{self._where}: {source} gave no access token (empty, or not a bearer token)"
            )
        return token

    def _translate(self, error: BaseException, doing: str) -> ImapError:
        """The named error for a library or socket error met while `doing` something."""
        if isinstance(error, ImapError):
            return error
        if isinstance(error, ssl.SSLCertVerificationError):
            return ImapTlsError(
                f"{self._where}: TLS failed while {doing}: certificate verify failed: "
                f"{error.verify_message}"
            )
        if isinstance(error, ssl.SSLError | ssl.CertificateError):
            reason = getattr(error, "reason", None) or type(error).__name__
            return ImapTlsError(f"{self._where}: TLS failed while {doing} ({reason})")
        if isinstance(error, LoginError):
            return ImapAuthError(
                f"{self._where}: login refused ({_response_code(error)}); check the "
                "username and the password or token"
            )
        if isinstance(error, imaplib.IMAP4.abort | OSError | EOFError):
            detail = "timed out" if isinstance(error, socket.timeout) else type(error).__name__
            return ImapConnectionError(f"{self._where}: connection failed while {doing} ({detail})")
        return ImapProtocolError(
            f"{self._where}: unexpected answer while {doing} ({_response_code(error)})"
        )

    def _search(self, session: _Session, last_uid: int, since: date | None) -> list[int]:
        criteria: list[Any] = ["UID", f"{last_uid + 1}:*"]
        if since is not None:
            criteria += ["SINCE", since]
        try:
            found = session.client.search(criteria)
        except (imaplib.IMAP4.error, OSError) as error:
            raise self._translate(error, "searching") from None
        # `n:*` includes the highest UID even when it is below n (RFC 3501 §6.4.8): filter.
        return sorted(uid for uid in found if uid > last_uid)

    def _fetch(
        self, session: _Session, uids: Sequence[int]
    ) -> tuple[list[ImapMessage], list[ImapSkipped], dict[int, date], list[int]]:
        """Sizes and dates of `uids` first; then the bodies of those within the size limit, in
        batches, until `max_batch_bytes` (at least one message). Returns the messages, the
        skipped records and the received dates (UTC) of the UIDs handled, and those UIDs: a
        prefix of `uids`."""
        messages: list[ImapMessage] = []
        skipped: dict[int, ImapSkipped] = {}
        dates: dict[int, date] = {}
        received: dict[int, str] = {}
        sizes: dict[int, int] = {}
        handled: list[int] = []
        budget = self._max_batch_bytes
        metadata = self._fetch_items(session, uids, ["RFC822.SIZE", "INTERNALDATE"])
        for uid in uids:
            item = metadata[uid]
            size = item.get(b"RFC822.SIZE") if not isinstance(item, _Failed) else None
            if isinstance(size, int) and size <= self._max_message_bytes:
                if sizes and size > budget:
                    break  # the rest in the next call: bounds the memory one call holds
                budget -= size
            handled.append(uid)
            if isinstance(item, _Failed):
                skipped[uid] = ImapSkipped(uid, item.reason, None, item.detail)
                continue
            when = item.get(b"INTERNALDATE")
            if isinstance(when, datetime):
                when = when.astimezone(UTC) if when.tzinfo else when.replace(tzinfo=UTC)
                dates[uid] = when.date()
                received[uid] = when.isoformat()
            if not isinstance(size, int):
                skipped[uid] = ImapSkipped(uid, "fetch_failed", None, "no RFC822.SIZE")
            elif size > self._max_message_bytes:
                skipped[uid] = ImapSkipped(uid, "too_large", size, "RFC822.SIZE")
            else:
                sizes[uid] = size

        for batch in _batches(sorted(sizes), sizes):
            for uid, item in self._fetch_items(session, batch, ["BODY.PEEK[]"]).items():
                if isinstance(item, _Failed):
                    skipped[uid] = ImapSkipped(uid, item.reason, sizes[uid], item.detail)
                    continue
                raw = item.get(b"BODY[]")
                if not isinstance(raw, bytes):
                    skipped[uid] = ImapSkipped(uid, "fetch_failed", sizes[uid], "no BODY[]")
                elif len(raw) > self._max_message_bytes:
                    # The server's RFC822.SIZE was wrong; the limit holds all the same.
                    skipped[uid] = ImapSkipped(uid, "too_large", len(raw), "BODY[]")
                else:
                    messages.append(ImapMessage(uid, raw, received.get(uid, "")))
        messages.sort(key=lambda message: message.uid)
        return messages, [skipped[uid] for uid in sorted(skipped)], dates, handled

    def _fetch_items(
        self, session: _Session, uids: Sequence[int], items: list[str]
    ) -> dict[int, dict[bytes, Any] | _Failed]:
        """`items` of each of `uids`. One FETCH for all; when the server refuses it, or the
        connection drops, one FETCH per message, so that one bad message fails alone."""
        if not uids:
            return {}
        try:
            answer = session.client.fetch(list(uids), items)
            return {
                uid: answer.get(uid) or _Failed("vanished", "not in FETCH answer") for uid in uids
            }
        except (imaplib.IMAP4.abort, OSError):
            if len(uids) == 1:
                return {uids[0]: self._fetch_alone_after_drop(session, uids[0], items)}
            session.reconnect()
        except imaplib.IMAP4.error as error:
            if len(uids) == 1:
                return {uids[0]: _Failed("fetch_failed", _response_code(error))}
        results: dict[int, dict[bytes, Any] | _Failed] = {}
        for uid in uids:
            results.update(self._fetch_items(session, [uid], items))
        return results

    def _fetch_alone_after_drop(
        self, session: _Session, uid: int, items: list[str]
    ) -> dict[bytes, Any] | _Failed:
        """The connection dropped while fetching `uid` alone: once more on a fresh connection;
        dropped again, the message is skipped (a network that is down fails the reconnect
        instead, and that raises)."""
        session.reconnect()
        try:
            answer = session.client.fetch([uid], items)
        except (imaplib.IMAP4.abort, OSError) as error:
            session.reconnect()
            return _Failed("connection_lost", type(error).__name__)
        except imaplib.IMAP4.error as error:
            return _Failed("fetch_failed", _response_code(error))
        return answer.get(uid) or _Failed("vanished", "not in FETCH answer")


class _XOAuth2:
    """SASL XOAUTH2 client (Google's and Microsoft's documentation): the initial response, then
    an empty answer to the server's error challenge so that it finishes with NO."""

    def __init__(self, username: str, token: str) -> None:
        self._first = f"user={username}\x01auth=Bearer {token}\x01\x01".encode()
        self._sent = False

    def __call__(self, challenge: bytes) -> bytes:
        if self._sent:
            return b""
        self._sent = True
        return self._first


def _announces_new_mail(responses: Sequence[Any]) -> bool:
    """Whether untagged responses include `* n EXISTS` (new mail, RFC 3501 §7.3.1)."""
    return any(
        isinstance(response, tuple) and len(response) >= 2 and response[1] == b"EXISTS"
        for response in responses
    )


def _signals_trouble(responses: Sequence[Any]) -> bool:
    """Whether untagged responses include `* NO`, `* BAD` or `* BYE` (RFC 3501 §7.1): the folder
    may have changed under the session (Dovecot sends only `* NO Internal error` to an IDLE on a
    folder deleted meanwhile), so the caller should look again on a fresh session rather than
    wait out the IDLE. A spurious wake costs one read that finds nothing."""
    return any(
        isinstance(response, tuple) and response and response[0] in (b"NO", b"BAD", b"BYE")
        for response in responses
    )


def _batches(uids: Sequence[int], sizes: dict[int, int]) -> Iterator[list[int]]:
    """`uids` in order, cut so that each batch stays within `BODY_BATCH_BYTES` and
    `BODY_BATCH_MESSAGES` (a larger message alone)."""
    batch: list[int] = []
    total = 0
    for uid in uids:
        if batch and (total + sizes[uid] > BODY_BATCH_BYTES or len(batch) >= BODY_BATCH_MESSAGES):
            yield batch
            batch, total = [], 0
        batch.append(uid)
        total += sizes[uid]
    if batch:
        yield batch
