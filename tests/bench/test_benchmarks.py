"""Every benchmark in bench/ still runs: each at its `--tiny` size, in a subprocess as a user runs it, must
exit 0, end with its `NAME: ratio=` line and write its results file (into a temporary folder, never
bench/results). The figures are not checked: tiny runs measure nothing worth asserting."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
BENCHMARKS = sorted(p.stem for p in (ROOT / "bench").glob("[a-z]*.py") if p.stem != "common")
REAL_DATA = ROOT.parent / "shared" / "datasets" / "movielens-posters"  # bench.embed embeds real posters


@pytest.mark.parametrize("name", BENCHMARKS)
def test_benchmark_runs_and_prints_its_final_line(name: str, tmp_path: Path) -> None:
    if name == "embed" and not REAL_DATA.is_dir():
        pytest.skip(f"bench.embed needs the MovieLens-posters data set at {REAL_DATA}")
    done = subprocess.run(
        [sys.executable, "-m", f"bench.{name}", "--tiny", "--results-dir", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, f"{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
    assert done.stdout.strip().splitlines()[-1].startswith(f"{name}: ratio="), done.stdout[-2000:]
    record = json.loads((tmp_path / f"{name}.tiny.json").read_text())
    assert record["benchmark"] == name and record["size"] == "tiny" and "ratio" in record["figures"]
