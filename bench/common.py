"""Helpers every benchmark shares: the command line, interleaved timing, the results file, the final line.

A benchmark measures its baseline in the same run, reports medians, writes
`bench/results/<name>.json` (figures, settings, machine, UTC date, commit) and ends by printing exactly
one line `<name>: ratio=<x> <key=value ...>`. Its timings of a job come from the job's report (the
`phases` of `EmbedReport` and `FeaturesReport`), never from the job's progress text.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def parser(name: str, description: str, quick: str, tiny: str) -> argparse.ArgumentParser:
    """The options every benchmark takes: its size (full by default; `--quick` is what `make bench` runs,
    `--tiny` what the test that keeps every benchmark working runs) and where its results go."""
    result = argparse.ArgumentParser(
        prog=f"python -m bench.{name}", description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    size = result.add_mutually_exclusive_group()
    size.add_argument("--quick", dest="size", action="store_const", const="quick", help=quick)
    size.add_argument("--tiny", dest="size", action="store_const", const="tiny", help=f"{tiny}; for tests only")
    result.add_argument("--results-dir", type=Path, default=RESULTS, help="folder of the results file (default: bench/results)")
    result.set_defaults(size="full")
    return result


@dataclass
class Timing:
    """Wall-clock seconds of each call, and what the last call returned."""

    seconds: list[float] = field(default_factory=list)
    result: Any = None

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)


def time_interleaved(calls: Mapping[str, Callable[[], Any]], repeats: int, warm_up: int = 1) -> dict[str, Timing]:
    """Run every call `repeats` times, round by round, reversing the order each round so that no
    side always runs first (warm caches, JIT, a noisy neighbour all get spread over both). The
    first `warm_up` rounds are run but not timed."""
    for _ in range(warm_up):
        for call in calls.values():
            call()
    timings = {name: Timing() for name in calls}
    names = list(calls)
    for round_ in range(repeats):
        for name in names if round_ % 2 == 0 else reversed(names):
            start = time.perf_counter()
            result = calls[name]()
            timings[name].seconds.append(time.perf_counter() - start)
            timings[name].result = result
    return timings


def machine_info(packages: Iterable[str] = ()) -> dict[str, Any]:
    """CPU model, core count, RAM, Python, and the installed versions of `packages`."""
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "ram_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "python": platform.python_version(),
        **{name: metadata.version(name) for name in packages},
    }


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def write_results(
    name: str,
    figures: Mapping[str, Any],
    settings: Mapping[str, Any],
    packages: Iterable[str],
    args: argparse.Namespace,
) -> Path:
    """Write `<name>.json` into `args.results_dir` (a `--quick` or `--tiny` run: `<name>.<size>.json`, not
    committed, so that it never replaces a full run) and return its path."""
    args.results_dir.mkdir(parents=True, exist_ok=True)
    path = args.results_dir / (f"{name}.json" if args.size == "full" else f"{name}.{args.size}.json")
    record = {
        "benchmark": name,
        "size": args.size,
        "date_utc": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "commit": _commit(),
        "settings": dict(settings),
        "figures": dict(figures),
        "machine": machine_info(packages),
    }
    path.write_text(json.dumps(record, indent=2) + "\n")
    return path


def _commit() -> str | None:
    """The commit measured (with `+dirty` when the tree has uncommitted changes)."""
    import subprocess

    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True)
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=root, capture_output=True, text=True, check=True
        )
    except (OSError, subprocess.CalledProcessError):
        return None
    return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def final_line(name: str, ratio: float, figures: Mapping[str, Any]) -> str:
    """`<name>: ratio=<x> key=value ...`, floats to three decimals."""
    shown = " ".join(f"{k}={_short(v)}" for k, v in figures.items())
    return f"{name}: ratio={ratio:.3f} {shown}".rstrip()


def _short(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, float) else str(value)
