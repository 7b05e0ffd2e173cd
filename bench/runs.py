"""`python -m bench.runs FILE.json …`: medians of repeated `make bench` runs, by variant.

The machine is shared, so one candidate is measured as interleaved short runs (A, B, A, B, …),
each writing its own `--out` file named `<variant>-r<round>.json`. This groups the files by
variant (the name before `-r`), and prints per variant the median of each figure over its runs
with the smallest and largest (the noise), and the number of runs. Figures: the C=1 floor and
approve p50 (ms) and their ratio, the C=16 approvals and floor per second, the C=16 CPU ms per
approval of the dev server and the worker (the approve side: `by_concurrency["16"]
.cpu_ms_per_approval`, and the floor side), history events per approval, the worker's peak RSS.
With `--json FILE` it also writes them.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

FIGURES: dict[str, Callable[[dict[str, Any]], float]] = {
    "C=1 floor p50 ms": lambda r: r["by_concurrency"]["1"]["floor_p50_ms"],
    "C=1 approve p50 ms": lambda r: r["by_concurrency"]["1"]["approve_p50_ms"],
    "C=1 p50 ratio": lambda r: r["by_concurrency"]["1"]["p50_ratio"],
    "C=16 p50 ratio": lambda r: r["by_concurrency"]["16"]["p50_ratio"],
    "C=16 approvals/s": lambda r: r["by_concurrency"]["16"]["approvals_per_s"],
    "C=16 floor/s": lambda r: r["by_concurrency"]["16"]["floor_per_s"],
    "C=16 dev server ms/approval": lambda r: r["by_concurrency"]["16"]["cpu_ms_per_approval"][
        "dev_server"
    ],
    "C=16 worker ms/approval": lambda r: r["by_concurrency"]["16"]["cpu_ms_per_approval"]["worker"],
    "C=16 floor dev server ms": lambda r: r["by_concurrency"]["16"]["floor_cpu_ms_per_approval"][
        "dev_server"
    ],
    "C=16 floor worker ms": lambda r: r["by_concurrency"]["16"]["floor_cpu_ms_per_approval"][
        "worker"
    ],
    "C=1 dev server ms/approval": lambda r: r["by_concurrency"]["1"]["cpu_ms_per_approval"][
        "dev_server"
    ],
    "C=1 worker ms/approval": lambda r: r["by_concurrency"]["1"]["cpu_ms_per_approval"]["worker"],
    "events/approval": lambda r: r["by_concurrency"]["16"]["history_events_per_approval"],
    "worker peak RSS MB": lambda r: r["worker_rss_mb"],
    "enrol/s": lambda r: r["enrol_per_s"],
}
"""Each figure's name and how to read it from one run's JSON (`var/bench/latest.json`'s shape)."""


def variant_of(path: Path) -> str:
    """`base-r2.json` → `base`; a name without `-r<n>` is its own variant."""
    stem = path.stem
    head, dash, tail = stem.rpartition("-r")
    return head if dash and tail.isdigit() else stem


def summarise(paths: list[Path]) -> dict[str, dict[str, Any]]:
    """Variant → figure → `{"median", "min", "max", "runs"}` over the runs of that variant (the
    files that exist and parse; a run that died wrote none)."""
    grouped: dict[str, list[dict[str, Any]]] = {}
    for path in paths:
        grouped.setdefault(variant_of(path), []).append(json.loads(path.read_text()))
    summary: dict[str, dict[str, Any]] = {}
    for variant, runs in grouped.items():
        summary[variant] = {}
        for name, read in FIGURES.items():
            values = [float(read(run)) for run in runs]
            summary[variant][name] = {
                "median": statistics.median(values),
                "min": min(values),
                "max": max(values),
                "runs": len(values),
            }
    return summary


def table(summary: dict[str, dict[str, Any]]) -> str:
    """One row per figure, one column per variant: `median (min-max)`."""
    variants = list(summary)
    lines = [
        " | ".join(["figure", *(f"{v} (n={summary[v]['enrol/s']['runs']})" for v in variants)])
    ]
    for name in FIGURES:
        digits = 2 if "ratio" in name else 1
        cells = [
            f"{summary[v][name]['median']:.{digits}f} ({summary[v][name]['min']:.{digits}f}-"
            f"{summary[v][name]['max']:.{digits}f})"
            for v in variants
        ]
        lines.append(" | ".join([name, *cells]))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Prints the table of the files given; with `--json`, writes the summary there too."""
    parser = argparse.ArgumentParser(prog="python -m bench.runs", description=__doc__)
    parser.add_argument("files", nargs="+", type=Path)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    summary = summarise(sorted(args.files))
    print(table(summary))
    if args.json is not None:
        args.json.write_text(json.dumps(summary, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
