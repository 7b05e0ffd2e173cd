"""`inbound.imap.ImapReader` against a real Dovecot (`tests/conftest.py`'s `dovecot`).

Messages go in with IMAP APPEND; what the reader returns is compared byte for byte, and the
mailbox is looked at afterwards (flags, count, folders) to show the reader changed nothing.
"""

from __future__ import annotations

import asyncio
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

import inbound.imap
from campaign_engine.settings import ImapSettings, MailboxLimits, Settings
from devsupport.dovecot import Dovecot, ImapBox, message
from entrypoints.devserver import free_port
from inbound.imap import (
    ImapAuthError,
    ImapConnectionError,
    ImapCursor,
    ImapFolderError,
    ImapReader,
    ImapTlsError,
    ImapTokenUnavailable,
)


def reader(box: ImapBox, **overrides: object) -> ImapReader:
    return ImapReader(box.settings(**overrides))


# --- reading ------------------------------------------------------------------------------------


async def test_new_messages_come_in_uid_order_with_a_cursor_then_only_what_is_appended(
    imap_box: ImapBox,
) -> None:
    raws = [message(n) for n in range(3)]
    uids = [imap_box.append(raw) for raw in raws]
    uidvalidity, _ = imap_box.look()
    imap = reader(imap_box)

    first = await imap.fetch_new(None, limit=10)

    assert [m.uid for m in first.messages] == uids == sorted(uids)
    assert [m.raw for m in first.messages] == raws
    assert all(m.received_at.endswith("+00:00") for m in first.messages)
    assert first.skipped == ()
    assert (first.more, first.restarted) == (False, True)
    assert first.cursor.uidvalidity == uidvalidity
    assert first.cursor.last_uid == uids[-1]
    assert first.cursor.since is None
    assert first.cursor.resume_date == datetime.now(UTC).date().isoformat()

    again = await imap.fetch_new(first.cursor, limit=10)
    assert again.messages == ()
    assert again.skipped == ()
    assert again.cursor == first.cursor
    assert not again.restarted

    later = [message(n) for n in (3, 4)]
    later_uids = [imap_box.append(raw) for raw in later]
    third = await imap.fetch_new(again.cursor, limit=10)
    assert [(m.uid, m.raw) for m in third.messages] == list(zip(later_uids, later, strict=True))
    assert third.cursor.last_uid == later_uids[-1]


async def test_a_limit_pages_through_in_uid_order(imap_box: ImapBox) -> None:
    uids = [imap_box.append(message(n)) for n in range(5)]
    imap = reader(imap_box)

    seen: list[int] = []
    pages: list[bool] = []
    cursor = None
    for _ in range(4):
        batch = await imap.fetch_new(cursor, limit=2)
        seen += [m.uid for m in batch.messages]
        pages.append(batch.more)
        cursor = batch.cursor
        if not batch.more:
            break

    assert seen == uids
    assert pages == [True, True, False]


async def test_a_batch_stops_at_its_byte_budget(imap_box: ImapBox) -> None:
    uids = [imap_box.append(message(n, body_bytes=50_000)) for n in range(3)]
    imap = ImapReader(imap_box.settings(), max_batch_bytes=120_000)

    first = await imap.fetch_new(None, limit=10)
    second = await imap.fetch_new(first.cursor, limit=10)

    assert ([m.uid for m in first.messages], first.more) == (uids[:2], True)
    assert ([m.uid for m in second.messages], second.more) == (uids[2:], False)
    # One message larger than the whole budget still comes, alone.
    alone = ImapReader(imap_box.settings(), max_batch_bytes=10)
    assert [m.uid for m in (await alone.fetch_new(None, limit=10)).messages] == uids[:1]


async def test_the_first_read_goes_back_backfill_days_only(imap_box: ImapBox) -> None:
    now = datetime.now(UTC)
    imap_box.append(message(0), received=now - timedelta(days=30))
    recent = imap_box.append(message(1), received=now - timedelta(days=2))
    newest = imap_box.append(message(2))

    batch = await reader(imap_box, backfill_days=7).fetch_new(None, limit=10)

    assert [m.uid for m in batch.messages] == [recent, newest]
    assert batch.cursor.last_uid == newest
    none_back = await reader(imap_box, backfill_days=0).fetch_new(None, limit=10)
    assert [m.uid for m in none_back.messages] == [newest]
    # Caught up: the 30-day-old message is behind the cursor for good.
    assert (await reader(imap_box).fetch_new(batch.cursor, limit=10)).messages == ()


async def test_reading_changes_nothing_in_the_mailbox(imap_box: ImapBox) -> None:
    imap_box.append(message(0))
    imap_box.append(message(1), flags=(b"\\Flagged",))
    imap_box.append(message(2), flags=(b"\\Seen",))
    folders_before = imap_box.folders()
    uidvalidity, flags_before = imap_box.look()
    imap = reader(imap_box)

    batch = await imap.fetch_new(None, limit=10)
    await imap.fetch_new(batch.cursor, limit=10)
    await imap.wait_for_new(batch.cursor, 0.2)

    assert len(batch.messages) == 3
    assert imap_box.look() == (uidvalidity, flags_before)
    # Still unseen (BODY.PEEK), and still \Recent: EXAMINE, unlike SELECT, does not claim it.
    assert flags_before[min(flags_before)] == (b"\\Recent",)
    assert imap_box.folders() == folders_before


async def test_a_recreated_folder_is_read_again_from_the_cursors_day(imap_box: ImapBox) -> None:
    imap_box.create_folder("Replies")
    imap_box.append(message(0), folder="Replies")
    imap = reader(imap_box, folder="Replies")
    first = await imap.fetch_new(None, limit=10)
    assert len(first.messages) == 1

    imap_box.delete_folder("Replies")
    imap_box.create_folder("Replies")
    old = imap_box.append(
        message(1), folder="Replies", received=datetime.now(UTC) - timedelta(days=20)
    )
    new = [imap_box.append(message(n), folder="Replies") for n in (2, 3, 4)]
    uidvalidity, _ = imap_box.look("Replies")
    assert uidvalidity != first.cursor.uidvalidity

    # Paged, so the restart's date filter has to hold across calls.
    restarted = await imap.fetch_new(first.cursor, limit=2)
    assert restarted.restarted and restarted.more
    assert [m.uid for m in restarted.messages] == new[:2]
    assert restarted.cursor.uidvalidity == uidvalidity
    assert restarted.cursor.since == (datetime.now(UTC).date() - timedelta(days=1)).isoformat()
    rest = await imap.fetch_new(restarted.cursor, limit=2)
    assert [m.uid for m in rest.messages] == new[2:]
    assert not rest.restarted and not rest.more
    assert rest.cursor.since is None
    assert old < new[0]  # left out by date, not by UID
    assert (await imap.fetch_new(rest.cursor, limit=10)).messages == ()


async def test_oversized_and_unreadable_messages_are_skipped_and_later_ones_returned(
    imap_box: ImapBox,
) -> None:
    small = imap_box.append(message(0))
    big = imap_box.append(message(1, body_bytes=300_000))
    broken = imap_box.append(message(2))
    last_raw = message(3)
    last = imap_box.append(last_raw)
    # Dovecot's mail processes run as nobody: a file they cannot open fails that message's
    # FETCH BODY[] (its size is in the maildir file name, so RFC822.SIZE still answers), and
    # Dovecot answers with `* BYE FETCH failed: Internal error` and hangs up, every time.
    imap_box.message_file(broken).chmod(0)
    imap = reader(imap_box)
    imap._max_message_bytes = 100_000

    batch = await imap.fetch_new(None, limit=10)

    assert [m.uid for m in batch.messages] == [small, last]
    assert batch.messages[-1].raw == last_raw
    assert [(s.uid, s.reason) for s in batch.skipped] == [
        (big, "too_large"),
        (broken, "connection_lost"),
    ]
    assert batch.skipped[0].size is not None and batch.skipped[0].size > 300_000
    assert batch.cursor.last_uid == last
    assert (await imap.fetch_new(batch.cursor, limit=10)).messages == ()


async def test_a_message_expunged_while_being_read_is_recorded_as_vanished(
    imap_box: ImapBox, monkeypatch: pytest.MonkeyPatch
) -> None:
    uids = [imap_box.append(message(n)) for n in range(3)]
    imap = reader(imap_box)
    search = imap._search

    def search_then_expunge(*args: Any) -> list[int]:
        # Another client (the mailbox's owner) deletes one between our SEARCH and FETCH.
        found = search(*args)
        client = imap_box.client()
        try:
            client.select_folder("INBOX")
            client.delete_messages([uids[1]])
            client.expunge()
        finally:
            client.logout()
        return found

    monkeypatch.setattr(imap, "_search", search_then_expunge)
    batch = await imap.fetch_new(None, limit=10)

    assert [m.uid for m in batch.messages] == [uids[0], uids[2]]
    assert [(s.uid, s.reason) for s in batch.skipped] == [(uids[1], "vanished")]
    assert batch.cursor.last_uid == uids[2]


async def test_a_message_over_25_mb_is_skipped_by_its_size_without_fetching_it(
    imap_box: ImapBox,
) -> None:
    huge = imap_box.append(message(0, body_bytes=25 * 1024 * 1024 + 1))
    after = imap_box.append(message(1))

    started = time.monotonic()
    batch = await reader(imap_box).fetch_new(None, limit=10)
    elapsed = time.monotonic() - started

    assert [m.uid for m in batch.messages] == [after]
    assert [(s.uid, s.reason) for s in batch.skipped] == [(huge, "too_large")]
    print(f"\n25 MB message skipped by size, batch read in {elapsed * 1000:.0f} ms")


async def test_many_messages_are_read_in_order_and_the_rate_is_printed(imap_box: ImapBox) -> None:
    count = 300
    client = imap_box.client()
    try:
        client.multiappend("INBOX", [message(n, body_bytes=4000) for n in range(count)])
    finally:
        client.logout()

    started = time.monotonic()
    batch = await reader(imap_box).fetch_new(None, limit=count)
    elapsed = time.monotonic() - started

    assert len(batch.messages) == count
    uids = [m.uid for m in batch.messages]
    assert uids == sorted(uids)
    assert not batch.more
    print(f"\nfetch_new: {count} messages of ~4.3 KB in {elapsed * 1000:.0f} ms")


# --- waiting ------------------------------------------------------------------------------------


@pytest.mark.parametrize("idle", [True, False], ids=["idle", "polling"])
async def test_a_wait_wakes_on_an_append(imap_box: ImapBox, idle: bool) -> None:
    imap = reader(imap_box, idle=idle, poll_interval_seconds=1)
    cursor = (await imap.fetch_new(None, limit=10)).cursor

    assert await imap.wait_for_new(cursor, 0.5) is False

    waiting = asyncio.create_task(imap.wait_for_new(cursor, 20))
    await asyncio.sleep(0.5)  # let it connect and start waiting
    assert not waiting.done()
    await asyncio.to_thread(imap_box.append, message(0))
    appended = time.monotonic()
    assert await waiting is True
    woke = time.monotonic() - appended
    print(f"\nwait_for_new ({'IDLE' if idle else 'polling every 1 s'}) woke {woke * 1000:.0f} ms")

    # Mail already past the cursor: no waiting at all.
    assert await imap.wait_for_new(cursor, 20) is True
    caught_up = (await imap.fetch_new(cursor, limit=10)).cursor
    assert await imap.wait_for_new(caught_up, 0.2) is False


async def test_an_idle_wait_wakes_when_its_folder_is_deleted_and_recreated(
    imap_box: ImapBox,
) -> None:
    imap_box.create_folder("Replies")
    imap = reader(imap_box, folder="Replies")
    cursor = (await imap.fetch_new(None, limit=10)).cursor
    waiting = asyncio.create_task(imap.wait_for_new(cursor, 20))
    await asyncio.sleep(0.5)

    # Dovecot tells the IDLE only `* NO Internal error`, with no EXISTS for the new folder's mail.
    await asyncio.to_thread(imap_box.delete_folder, "Replies")
    await asyncio.to_thread(imap_box.create_folder, "Replies")
    await asyncio.to_thread(imap_box.append, message(0), folder="Replies")
    started = time.monotonic()
    assert await waiting is True
    assert time.monotonic() - started < 10  # not the 20 s wait
    assert (await imap.fetch_new(cursor, limit=10)).restarted


async def test_a_cancelled_wait_lets_its_thread_go(imap_box: ImapBox) -> None:
    # One thread only: the fetch below runs only once the cancelled wait has given it back.
    with ThreadPoolExecutor(max_workers=1) as executor:
        imap = ImapReader(imap_box.settings(), executor=executor)
        cursor = (await imap.fetch_new(None, limit=10)).cursor
        waiting = asyncio.create_task(imap.wait_for_new(cursor, 60))
        await asyncio.sleep(0.5)
        started = time.monotonic()
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting

        await imap.fetch_new(cursor, limit=1)
        freed = time.monotonic() - started

    assert freed < 10  # not the 60 s the wait was given
    print(f"\ncancelled wait gave its thread back in {freed * 1000:.0f} ms")


async def test_idle_is_renewed_and_still_wakes(
    imap_box: ImapBox, monkeypatch: pytest.MonkeyPatch
) -> None:
    # RFC 2177: re-issue IDLE before 29 minutes. Here every 0.3 s, to see it happen.
    monkeypatch.setattr(inbound.imap, "IDLE_RENEW_SECONDS", 0.3)
    imap = reader(imap_box)
    cursor = (await imap.fetch_new(None, limit=10)).cursor

    assert await imap.wait_for_new(cursor, 1.0) is False  # three renewals, no mail

    waiting = asyncio.create_task(imap.wait_for_new(cursor, 20))
    await asyncio.sleep(1.0)
    await asyncio.to_thread(imap_box.append, message(0))
    assert await waiting is True


# --- logging in ---------------------------------------------------------------------------------


async def test_a_wrong_password_is_an_auth_error_naming_neither_user_nor_password(
    imap_box: ImapBox,
) -> None:
    with pytest.raises(ImapAuthError) as raised:
        await reader(imap_box, password="not-" + imap_box.password).fetch_new(None, limit=1)

    text = str(raised.value)
    assert "AUTHENTICATIONFAILED" in text
    assert f"127.0.0.1:{imap_box.dovecot.plain_port}" in text
    assert imap_box.password not in text and imap_box.user not in text
    assert raised.value.__cause__ is None and raised.value.__suppress_context__


async def test_a_password_that_is_not_ascii_goes_by_authenticate_plain(
    imap_box: ImapBox, dovecot: Dovecot
) -> None:
    password = "pässwörd-" + imap_box.password
    dovecot.add_user(imap_box.user, password)
    imap_box.password = password
    imap_box.append(message(0))

    assert len((await reader(imap_box).fetch_new(None, limit=10)).messages) == 1


async def test_xoauth2_with_a_token_file_and_a_token_command(
    imap_box: ImapBox, dovecot: Dovecot, tmp_path: Path
) -> None:
    assert dovecot.introspection is not None
    imap_box.append(message(0))
    token_file = tmp_path / "token"
    token_file.write_text("good-token-1\n")
    dovecot.introspection.add("good-token-1", imap_box.user)
    dovecot.introspection.add("good-token-2", imap_box.user)
    asked = dovecot.introspection.requests

    by_file = reader(imap_box, password=None, access_token_file=token_file)
    assert len((await by_file.fetch_new(None, limit=10)).messages) == 1
    assert dovecot.introspection.requests > asked  # Dovecot really asked the endpoint

    # Re-read at each login: a sidecar's refresh is picked up, a revoked token refused.
    dovecot.introspection.revoke("good-token-1")
    with pytest.raises(ImapAuthError) as raised:
        await by_file.fetch_new(None, limit=10)
    assert "good-token-1" not in str(raised.value)
    token_file.write_text("good-token-2")
    assert len((await by_file.fetch_new(None, limit=10)).messages) == 1

    command = [sys.executable, "-c", "print('good-token-2')"]
    by_command = reader(imap_box, password=None, access_token_command=command)
    assert len((await by_command.fetch_new(None, limit=10)).messages) == 1

    # A token for somebody else is refused too (Dovecot checks the introspected username).
    dovecot.introspection.add("someone-elses", "other@example.test")
    token_file.write_text("someone-elses")
    with pytest.raises(ImapAuthError):
        await by_file.fetch_new(None, limit=10)


async def test_an_unreadable_token_source_is_token_unavailable(
    imap_box: ImapBox, tmp_path: Path
) -> None:
    missing = reader(imap_box, password=None, access_token_file=tmp_path / "nothing")
    with pytest.raises(ImapTokenUnavailable, match="cannot be read"):
        await missing.fetch_new(None, limit=1)
    (tmp_path / "empty").write_text("\n")
    empty = reader(imap_box, password=None, access_token_file=tmp_path / "empty")
    with pytest.raises(ImapTokenUnavailable, match="no access token"):
        await empty.fetch_new(None, limit=1)
    failing = [sys.executable, "-c", "import sys; print('secret-ish'); sys.exit(3)"]
    with pytest.raises(ImapTokenUnavailable, match="status 3") as raised:
        await reader(imap_box, password=None, access_token_command=failing).fetch_new(None, 1)
    assert "secret-ish" not in str(raised.value)
    assert ImapTokenUnavailable.retryable and not ImapAuthError.retryable


# --- connections --------------------------------------------------------------------------------


@pytest.mark.parametrize("security", ["tls", "starttls"])
async def test_tls_and_starttls_connect_with_the_servers_ca(
    imap_box: ImapBox, dovecot: Dovecot, security: str
) -> None:
    assert dovecot.certificates is not None
    port = dovecot.tls_port if security == "tls" else dovecot.plain_port
    imap_box.append(message(0))

    trusted = reader(imap_box, security=security, port=port, ca_file=dovecot.certificates.ca_pem)
    assert len((await trusted.fetch_new(None, limit=10)).messages) == 1

    # The system's trust store does not know our test CA: refused, as a TLS error.
    with pytest.raises(ImapTlsError, match="certificate verify failed: unable to get local"):
        await reader(imap_box, security=security, port=port).fetch_new(None, limit=10)


async def test_tls_against_a_plain_port_and_a_closed_port_are_named_errors(
    imap_box: ImapBox,
) -> None:
    with pytest.raises(ImapTlsError):
        await reader(imap_box, security="tls").fetch_new(None, limit=1)  # plain port
    with pytest.raises(ImapConnectionError, match="connection failed while connecting"):
        await reader(imap_box, port=free_port()).fetch_new(None, limit=1)


async def test_a_missing_folder_is_a_folder_error(imap_box: ImapBox) -> None:
    with pytest.raises(ImapFolderError, match="'Nope'"):
        await reader(imap_box, folder="Nope").fetch_new(None, limit=1)


# --- settings -----------------------------------------------------------------------------------


def test_an_imap_block_needs_exactly_one_credential_and_names_its_fields() -> None:
    base = {"host": "imap.example.com", "username": "sales@example.com"}
    with pytest.raises(ValidationError, match="exactly one of password"):
        ImapSettings.model_validate(base)
    with pytest.raises(ValidationError, match="got password, access_token_file") as both:
        ImapSettings.model_validate(
            {**base, "password": "hunter2-secret", "access_token_file": "/run/token"}
        )
    assert "hunter2-secret" not in str(both.value)
    with pytest.raises(ValidationError, match="port"):
        ImapSettings.model_validate({**base, "password": "p", "port": 0})
    with pytest.raises(ValidationError, match="folder"):
        ImapSettings.model_validate({**base, "password": "p", "folder": "IN\r\nBOX"})
    with pytest.raises(ValidationError, match="security"):
        ImapSettings.model_validate({**base, "password": "p", "security": "ssl"})

    assert ImapSettings.model_validate({**base, "password": "p"}).resolved_port == 993
    starttls = ImapSettings.model_validate({**base, "password": "p", "security": "starttls"})
    assert starttls.resolved_port == 143
    assert starttls.folder == "INBOX"


def test_the_mailboxes_setting_carries_an_imap_block_and_hides_its_password(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    good = (
        '{"sales@example.com": {"account_groups": "*", "daily_cap": 5, "imap": '
        '{"host": "imap.example.com", '
        '"username": "sales@example.com", "password": "hunter2-secret", "security": "starttls"}}}'
    )
    monkeypatch.setenv("CAMPAIGN_ENGINE_MAILBOXES", good)
    mailbox = Settings().mailboxes["sales@example.com"]
    assert isinstance(mailbox, MailboxLimits) and mailbox.imap is not None
    assert mailbox.imap.resolved_port == 143
    assert "hunter2-secret" not in repr(mailbox)

    monkeypatch.setenv("CAMPAIGN_ENGINE_MAILBOXES", good.replace('"host"', '"hots"'))
    with pytest.raises(ValidationError) as refused:
        Settings()
    assert "imap.host" in str(refused.value) and "imap.hots" in str(refused.value)
    assert "hunter2-secret" not in str(refused.value)


def test_a_cursor_is_plain_data() -> None:
    cursor = ImapCursor(uidvalidity=7, last_uid=42, resume_date="2026-12-01")
    assert cursor.since is None
    assert {type(value) for value in vars(cursor).values()} <= {int, str, type(None)}
