"""`python -m bench.inbound`: messages parsed and classified per second, in process.

Reads every sample under `tests/inbound_samples/` (the RFC messages written for the tests and
flufl.bounce's real-world bounces), then runs `parse` + `classify` + `excerpt` over them for
`--rounds` rounds, one process, one thread, and prints messages per second for the whole set
and per group (replies and auto-replies, standard reports, non-standard bounces decided by
flufl.bounce), with the CPU time per message. Also the cost of the largest message accepted
(`MAX_MESSAGE_BYTES` of text) and of a few hostile ones. Figures are printed, not asserted.

python -m bench.inbound [--rounds 20]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path

from inbound.classification import Kind, classify
from inbound.excerpt import excerpt
from inbound.parsing import MAX_MESSAGE_BYTES, MessageRefused, parse

SAMPLES = Path(__file__).resolve().parent.parent / "tests" / "inbound_samples"
UNSUBSCRIBE = {"unsubscribe@campaign.example"}


def pipeline(raw: bytes) -> Kind | None:
    """What a source does with one message: parse, classify, excerpt."""
    try:
        message = parse(raw)
    except MessageRefused:
        return None
    result = classify(message, unsubscribe_addresses=UNSUBSCRIBE)
    excerpt(message.text)
    return result.kind


def rate(messages: list[bytes], rounds: int) -> tuple[float, float]:
    """(messages per second by wall clock, CPU milliseconds per message), the median round."""
    walls: list[float] = []
    cpus: list[float] = []
    for _ in range(rounds):
        wall, cpu = time.perf_counter(), time.process_time()
        for raw in messages:
            pipeline(raw)
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return len(messages) / statistics.median(walls), statistics.median(cpus) / len(messages) * 1e3


def once(label: str, make: Callable[[], bytes]) -> None:
    """One message, timed once (they are large)."""
    raw = make()
    started = time.perf_counter()
    kind = pipeline(raw)
    elapsed = time.perf_counter() - started
    outcome = kind.value if kind else "refused"
    print(f"  {label:<46} {len(raw) / 1e6:6.2f} MB  {elapsed * 1e3:8.1f} ms  {outcome}")


def main() -> None:
    """Prints the figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()

    samples = {
        p: p.read_bytes() for p in sorted(SAMPLES.rglob("*")) if p.suffix in (".eml", ".txt")
    }
    kinds = {p: pipeline(raw) for p, raw in samples.items()}
    groups = {
        "all samples": list(samples.values()),
        "replies and auto-replies": [
            raw for p, raw in samples.items() if kinds[p] in (Kind.REPLY, Kind.AUTO_REPLY)
        ],
        "standard reports (standard/)": [
            raw for p, raw in samples.items() if p.parent.name == "standard"
        ],
        "real-world bounces (flufl_bounce/)": [
            raw for p, raw in samples.items() if p.parent.name == "flufl_bounce"
        ],
    }
    print(f"parse + classify + excerpt, {args.rounds} rounds, median round, one thread")
    for label, messages in groups.items():
        per_second, cpu_ms = rate(messages, args.rounds)
        figures = f"{per_second:8.0f} msg/s  {cpu_ms:6.2f} ms CPU/msg"
        print(f"  {label:<36} {len(messages):3d} msgs  {figures}")
    print("single large or hostile messages")
    head = b"From: a@example.org\r\nTo: b@example.org\r\nSubject: big\r\n\r\n"
    once("text at the size limit", lambda: head + b"word " * ((MAX_MESSAGE_BYTES - len(head)) // 5))
    once(
        "10,000 References",
        lambda: (
            head.replace(b"\r\n\r\n", b"\r\nReferences: ", 1)
            + b" ".join(b"<%d@example.org>" % i for i in range(10_000))
            + b"\r\n\r\nhi"
        ),
    )
    once(
        "10,000 encoded words in Subject",
        lambda: (
            b"From: a@example.org\r\nSubject: "
            + b" ".join([b"=?utf-8?q?a?="] * 10_000)
            + b"\r\n\r\nhi"
        ),
    )
    once(
        "999 parts",
        lambda: (
            b"From: a@example.org\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n"
            + b"--b\r\nContent-Type: text/plain\r\n\r\nx\r\n" * 998
            + b"--b--\r\n"
        ),
    )
    once(
        "100,000 parts (refused)",
        lambda: (
            b"From: a@example.org\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n"
            + b"--b\r\nContent-Type: text/plain\r\n\r\nx\r\n" * 100_000
            + b"--b--\r\n"
        ),
    )
    once(
        "bounce with a 20 MB attachment returned",
        lambda: (
            (SAMPLES / "standard" / "dsn_delayed.eml")
            .read_bytes()
            .replace(b"Hello Bob", b"Hello Bob\r\n" + b"QUFBQUFBQUFB" * 1_700_000)
        ),
    )


if __name__ == "__main__":
    main()
