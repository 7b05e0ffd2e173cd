"""`python -m bench.imap_reader`: `inbound.imap.ImapReader` against a private Dovecot.

Three figures, each over `--rounds` rounds:

- **fetch rate**: `--messages` messages of `--size` bytes are put in a fresh mailbox (MULTIAPPEND),
  then read with one `fetch_new(None, limit=--messages)`; messages per second and MB/s of the
  whole call (connect, login, EXAMINE, SEARCH, sizes, bodies, logout). Over plain text and TLS.
- **empty poll**: `fetch_new` with an up-to-date cursor (nothing new): what each poll costs.
- **IDLE wake**: `wait_for_new` waiting in IDLE, a message APPENDed from another connection;
  the time from the APPEND's answer to `wait_for_new` returning.

python -m bench.imap_reader [--messages 1000] [--size 8000] [--rounds 5]
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

from devsupport.dovecot import Dovecot, ImapBox, message
from inbound.imap import ImapReader


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
    args = parser.parse_args()
    asyncio.run(_run(args.messages, args.size, args.rounds))


if __name__ == "__main__":
    main()
