"""`python -m bench.codec`: what compression before encryption saves and costs, per draft size.

For drafts of 256 B to 100 KB (English prose from this repository's docs, as a draft payload
`{"subject", "body", "step_id"}`): the serialized payload's size, AES-256-GCM's encrypt and decrypt
time, and for zlib levels 1 and 6 the bytes saved and the compress + decompress time. Times are
the best of 7 repeats (µs per payload), which filters out other processes on a shared machine.
The figures chose `campaign_engine.codec.COMPRESSION_THRESHOLD_BYTES` and `COMPRESSION_LEVEL`.
"""

from __future__ import annotations

import functools
import timeit
import zlib
from collections.abc import Callable
from pathlib import Path

from temporalio.api.common.v1 import Payload
from temporalio.converter import DataConverter

from campaign_engine.codec import EncryptionCodec, PayloadKeyRing, new_key

SIZES = (256, 1024, 2048, 4096, 10240, 102400)
ROOT = Path(__file__).resolve().parent.parent


def _best_us(operation: Callable[[], object], number: int) -> float:
    return min(timeit.repeat(operation, number=number, repeat=7)) / number * 1e6


def _prose(size: int) -> str:
    text = " ".join((ROOT / "README.md").read_text().split())
    return (text * (size // len(text) + 1))[:size]


def main() -> None:
    """Prints one table row per size in `SIZES`: payload bytes, AES-GCM encrypt/decrypt µs, and zlib
    levels 1 and 6 bytes saved and compress + decompress µs."""
    codec = EncryptionCodec(PayloadKeyRing((new_key("bench"),)), compression_threshold=None)
    converter = DataConverter.default.payload_converter
    print("body B | payload B | AES-GCM enc/dec µs | zlib-1 saved B (%) enc+dec µs | zlib-6 ...")
    for size in SIZES:
        payload = converter.to_payloads(
            [{"subject": "Hello Ada", "body": _prose(size), "step_id": "intro"}]
        )[0]
        print(_row(codec, size, payload))


def _row(codec: EncryptionCodec, size: int, payload: Payload) -> str:
    raw = payload.SerializeToString()
    number = max(20, 200_000 // size)
    sealed = codec.encrypt(payload)
    line = (
        f"{size:>7} | {len(raw):>7} | {_best_us(lambda: codec.encrypt(payload), number):6.1f}"
        f" / {_best_us(lambda: codec.decrypt(sealed), number):6.1f}"
    )
    for level in (1, 6):
        compressed = zlib.compress(raw, level)
        spent = _best_us(functools.partial(zlib.compress, raw, level), number) + _best_us(
            functools.partial(zlib.decompress, compressed), number
        )
        saved = len(raw) - len(compressed)
        line += f" | {saved:>6} ({100 * saved / len(raw):2.0f} %) {spent:8.1f}"
    return line


if __name__ == "__main__":
    main()
