"""`python -m bench.imap_reader`: `inbound.imap.ImapReader` against a private Dovecot.

Three figures, each over `--rounds` rounds:

- **fetch rate**: `--messages` messages of `--size` bytes are put in a fresh mailbox (MULTIAPPEND),
  then read with one `fetch_new(None, limit=--messages)`; messages per second and MB/s of the
  whole call (connect, login, EXAMINE, SEARCH, sizes, bodies, logout). Over plain text and TLS.
- **empty poll**: `fetch_new` with an up-to-date cursor (nothing new): what each poll costs.
- **IDLE wake**: `wait_for_new` waiting in IDLE, a message APPENDed from another connection;
  the time from the APPEND's answer to `wait_for_new` returning.
- **APPEND to stop** (`--stop-rounds`, 0 skips it): the whole path on a private Temporal dev
  server with the production worker (`worker.build_worker`) reading the mailbox through
  `MailboxReaderWorkflow`: a lead's instance waits at its gate, the lead's reply is APPENDed, and
  the time until the instance has closed (`LEAD_REPLIED`) is measured; with IDLE, and polling
  every `--poll` seconds.
- **backlog** (`--backlog`): that many replies from nobody we know APPENDed at once while the
  reader waits; the time until it has applied them all (each through the whole pipeline:
  parse, classify, match, log), in messages per second.

python -m bench.imap_reader [--messages 1000] [--size 8000] [--rounds 5] [--stop-rounds 10]
                            [--poll 5] [--backlog 500]
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import tempfile
import time
import uuid
from pathlib import Path

from imapclient import IMAPClient
from temporalio.client import Client, WorkflowHandle

from api.instances import WorkflowInstances
from campaign_engine import unsubscribe
from campaign_engine.enrolments import Enrolments
from campaign_engine.ids import InstanceRef, new_object_id, workflow_id_for
from campaign_engine.settings import MailboxLimits, Settings
from campaign_engine.store import Store
from campaign_engine.temporal import TemporalConnection, connect
from campaign_engine.unsubscribe import load_unsubscribe_key
from devsupport.dovecot import Dovecot, ImapBox, message
from entrypoints.devserver import DevServer
from inbound.imap import ImapReader
from worker import build_worker
from workflows.mailbox_reader import MailboxReaderWorkflow
from workflows.mailbox_types import MailboxReaderStatus, mailbox_reader_id
from workflows.types import CampaignSnapshot, CampaignStep, Lead


def _fresh_box(dovecot: Dovecot) -> ImapBox:
    box = ImapBox(dovecot, f"b{uuid.uuid4().hex[:12]}@example.test", uuid.uuid4().hex)
    dovecot.add_user(box.user, box.password)
    return box


def _fill(box: ImapBox, count: int, size: int) -> None:
    client: IMAPClient = box.client()
    try:
        for start in range(0, count, 200):
            client.multiappend(
                "INBOX",
                [message(n, body_bytes=size) for n in range(start, min(count, start + 200))],
            )
    finally:
        client.logout()


def _reply(sender: str) -> bytes:
    """A lead's reply, matched by its From address (no threading headers)."""
    return (
        f"From: Lead <{sender}>\r\nTo: sales@example.test\r\nSubject: Re: Hello\r\n"
        f"Message-ID: <{uuid.uuid4()}@example.net>\r\n\r\nThanks, let's talk.\r\n"
    ).encode()


async def _enrol(
    client: Client, settings: Settings, store: Store, mailbox: str, email: str
) -> WorkflowHandle[object, object]:
    """Starts an instance waiting at its gate, enrolled as the API enrols it (the enrolment row
    inbound matching reads)."""
    account_group_id, campaign_id, lead_id = new_object_id(), new_object_id(), new_object_id()
    ref = InstanceRef.of_lead(account_group_id, campaign_id, lead_id)
    key = load_unsubscribe_key(settings)
    await Enrolments(store).record(
        account_group_id=account_group_id,
        campaign_id=campaign_id,
        lead_id=lead_id,
        workflow_instance_id=ref.workflow_instance_id,
        email_hash=unsubscribe.email_hash(key, email),
        domain_hash=unsubscribe.domain_hash(key, email),
        mailbox=mailbox,
    )
    campaign = CampaignSnapshot(
        name="Bench", steps=[CampaignStep(id="intro", subject="Hi", body="Hello")], mailbox=mailbox
    )
    lead = Lead(id=lead_id, email=email, first_name="Ada")
    await WorkflowInstances(client, settings.task_queue, timeout_seconds=10).enrol(
        account_group_id, campaign_id, lead, campaign
    )
    workflow_id = workflow_id_for(account_group_id, campaign_id, ref.workflow_instance_id)
    return client.get_workflow_handle(workflow_id)


async def _reader_status(client: Client, mailbox: str) -> MailboxReaderStatus | None:
    try:
        return await client.get_workflow_handle(mailbox_reader_id(mailbox)).query(
            MailboxReaderWorkflow.status
        )
    except Exception:
        return None


async def _until_read(client: Client, mailbox: str, done: int) -> MailboxReaderStatus:
    """Waits until the reader has read `done` messages in all (applied, seen or recorded)."""
    while True:
        status = await _reader_status(client, mailbox)
        if status is not None and status.cursor is not None:
            totals = status.totals
            if totals.applied + totals.duplicates + totals.problems >= done:
                return status
        await asyncio.sleep(0.02)


async def _append_to_stop(dovecot: Dovecot, rounds: int, poll: float, backlog: int) -> None:
    """The APPEND-to-stop latency with IDLE and with polling, then the backlog rate."""
    server = DevServer()
    await server.start()
    try:
        for label, options in (
            ("IDLE", {"idle": True}),
            (f"polling every {poll:g} s", {"idle": False, "poll_interval_seconds": poll}),
        ):
            box = _fresh_box(dovecot)
            with tempfile.TemporaryDirectory() as state:
                settings = Settings(
                    state_dir=Path(state),
                    temporal_address=server.address,
                    task_queue=f"bench-{uuid.uuid4()}",
                    worker_metrics_port=0,
                    mailboxes={
                        box.user: MailboxLimits(account_groups="*", imap=box.settings(**options))
                    },
                )
                # Its own dev server, whatever TEMPORAL_* the shell has set.
                client = await connect(settings, connection=TemporalConnection.plain(settings))
                store = await Store.open(settings.resolved_database_url)
                try:
                    async with build_worker(client, settings, store):
                        await _until_read(client, box.user, 0)
                        latencies: list[float] = []
                        for n in range(rounds):
                            email = f"lead{n}@example.net"
                            handle = await _enrol(client, settings, store, box.user, email)
                            await asyncio.sleep(0.5)  # the reader is back waiting
                            await asyncio.to_thread(box.append, _reply(email))
                            appended = time.perf_counter()
                            await handle.result()
                            latencies.append(time.perf_counter() - appended)
                        print(
                            f"APPEND -> instance closed LEAD_REPLIED ({label}, {rounds} rounds): "
                            f"median {statistics.median(latencies) * 1000:.0f} ms, "
                            f"min {min(latencies) * 1000:.0f}, max {max(latencies) * 1000:.0f}"
                        )
                        if backlog and options["idle"]:
                            before = await _until_read(client, box.user, rounds)
                            read = before.totals.applied + before.totals.problems
                            raws = [_reply(f"nobody{n}@example.org") for n in range(backlog)]
                            connection: IMAPClient = box.client()
                            try:
                                started = time.perf_counter()
                                for at in range(0, backlog, 200):
                                    connection.multiappend("INBOX", raws[at : at + 200])
                            finally:
                                connection.logout()
                            await _until_read(client, box.user, read + backlog)
                            elapsed = time.perf_counter() - started
                            print(
                                f"backlog of {backlog} replies (matching nothing) applied "
                                f"through the reader in {elapsed:.1f} s: "
                                f"{backlog / elapsed:.0f} msg/s"
                            )
                finally:
                    await store.close()
    finally:
        await server.stop()


async def _run(messages: int, size: int, rounds: int) -> None:
    directory = Path(tempfile.mkdtemp(prefix="ce-bench-dovecot-"))
    dovecot = Dovecot(directory)
    dovecot.start()
    assert dovecot.certificates is not None
    try:
        for security in ("none", "tls"):
            rates: list[float] = []
            polls: list[float] = []
            for _ in range(rounds):
                box = _fresh_box(dovecot)
                _fill(box, messages, size)
                overrides: dict[str, object] = {}
                if security == "tls":
                    overrides = {
                        "security": "tls",
                        "port": dovecot.tls_port,
                        "ca_file": dovecot.certificates.ca_pem,
                    }
                reader = ImapReader(box.settings(**overrides))
                started = time.perf_counter()
                batch = await reader.fetch_new(None, limit=messages)
                elapsed = time.perf_counter() - started
                assert len(batch.messages) == messages
                rates.append(messages / elapsed)
                for _ in range(10):
                    started = time.perf_counter()
                    await reader.fetch_new(batch.cursor, limit=messages)
                    polls.append(time.perf_counter() - started)
            megabytes = statistics.median(rates) * (size + 250) / 1e6
            print(
                f"fetch ({security}): {messages} messages of ~{size + 250} B: median "
                f"{statistics.median(rates):.0f} msg/s ({megabytes:.1f} MB/s), "
                f"min {min(rates):.0f}, max {max(rates):.0f}; empty poll median "
                f"{statistics.median(polls) * 1000:.1f} ms"
            )

        box = _fresh_box(dovecot)
        reader = ImapReader(box.settings())
        cursor = (await reader.fetch_new(None, limit=10)).cursor
        wakes: list[float] = []
        for n in range(rounds * 4):
            waiting = asyncio.create_task(reader.wait_for_new(cursor, 30))
            await asyncio.sleep(0.3)
            await asyncio.to_thread(box.append, message(n))
            appended = time.perf_counter()
            assert await waiting
            wakes.append(time.perf_counter() - appended)
            cursor = (await reader.fetch_new(cursor, limit=10)).cursor
        print(
            f"IDLE wake after APPEND ({len(wakes)} rounds): median "
            f"{statistics.median(wakes) * 1000:.0f} ms, min {min(wakes) * 1000:.0f}, "
            f"max {max(wakes) * 1000:.0f} (Dovecot batches change notifications for 500 ms)"
        )
    finally:
        dovecot.stop()
        shutil.rmtree(directory, ignore_errors=True)


def main() -> None:
    """Parses the arguments and prints the figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--size", type=int, default=8000, help="body bytes per message")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--stop-rounds", type=int, default=10, help="0: no APPEND-to-stop runs")
    parser.add_argument("--poll", type=float, default=5.0, help="poll interval, seconds (>= 1)")
    parser.add_argument("--backlog", type=int, default=500)
    parser.add_argument(
        "--only-stop", action="store_true", help="skip the reader-only figures above"
    )
    args = parser.parse_args()
    asyncio.run(_main(args))


async def _main(args: argparse.Namespace) -> None:
    if not args.only_stop:
        await _run(args.messages, args.size, args.rounds)
    if args.stop_rounds:
        directory = Path(tempfile.mkdtemp(prefix="ce-bench-dovecot-"))
        dovecot = Dovecot(directory)
        dovecot.start()
        try:
            await _append_to_stop(dovecot, args.stop_rounds, args.poll, args.backlog)
        finally:
            dovecot.stop()
            shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    main()
