"""Memory of the feature job for a very heavy user: peak RSS of Spark's Python workers when one user
has N events, against the same job with a user ten times lighter, in one run.

The feature UDF carries at most `long_history_length` behaviours of a user from one Arrow batch to
the next, so the peak should not grow with the heaviest user's events: the ratio should stay near 1
(it would be about 10 if a user's events were held at once). The Spark JVM's own sort spills to
disk and is not measured here.

    python -m bench.heavy_user [--quick | --tiny] [--results-dir DIR]
"""

from __future__ import annotations

import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd

from bench.common import final_line, parser, write_results
from dmf_features.features.stage import build_features
from dmf_features.infra.config import load_config
from dmf_features.infra.lake import Lake
from dmf_features.infra.spark import get_spark
from dmf_features.testing.feature_inputs import VERSIONS, random_vectors, write_events, write_vectors

NAME = "heavy_user"
PROJECT = Path(__file__).resolve().parent.parent
DIMS = {"text": 384, "image": 1280, "fused": 1664}  # the default encoders' widths
LIGHT_EVENTS = 50


class Size(NamedTuple):
    light: int  # the heavy user's events in the lighter run
    heavy: int  # and in the heavier one
    light_users: int  # other users, LIGHT_EVENTS events each
    items: int


SIZES = {"full": Size(10_000, 100_000, 200, 2_000), "quick": Size(2_000, 20_000, 200, 2_000), "tiny": Size(200, 2_000, 20, 200)}


class WorkerPeak:
    """Polls /proc for Spark's Python worker processes and keeps the largest peak RSS (VmHWM) seen."""

    def __init__(self, every: float = 0.2):
        self.every, self.peak_kib = every, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def __enter__(self) -> WorkerPeak:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _watch(self) -> None:
        while not self._stop.wait(self.every):
            for proc in Path("/proc").iterdir():
                try:
                    if b"pyspark.daemon" not in (proc / "cmdline").read_bytes():
                        continue
                    status = (proc / "status").read_text()
                except OSError:  # gone, or not a process folder
                    continue
                for line in status.splitlines():
                    if line.startswith("VmHWM:"):
                        self.peak_kib = max(self.peak_kib, int(line.split()[1]))


def events_with_heavy_user(heavy_events: int, size: Size, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    users = np.concatenate([np.zeros(heavy_events, np.int64), np.repeat(np.arange(1, size.light_users + 1), LIGHT_EVENTS)])
    n = len(users)
    frame = pd.DataFrame(
        {
            "user_id": users,
            "item_id": rng.integers(1, size.items + 1, n),
            "event_time": pd.Timestamp("2024-01-01", tz="UTC") + pd.to_timedelta(rng.integers(0, 30 * 86_400, n), unit="s"),
            "label": rng.integers(0, 2, n),
        }
    )
    return frame.drop_duplicates(["user_id", "item_id", "event_time"]).reset_index(drop=True)


def measure(spark, folder: Path, heavy_events: int, size: Size) -> dict:
    cfg = load_config(
        PROJECT / "conf" / "local.yaml",
        [
            f"lake.uri={folder / 'lake'}",
            "spark.master=local[2]",
            "spark.shuffle_partitions=2",
            "features.encoder_versions=" + str(VERSIONS).replace("'", '"'),
            "features.split.valid_from=2024-01-20",
            "features.split.test_from=2024-01-25",
        ],
    )
    lake = Lake(cfg.lake)
    events = events_with_heavy_user(heavy_events, size)
    write_events(spark, lake, events)
    write_vectors(spark, lake, random_vectors(range(1, size.items + 1), DIMS))
    spark.sparkContext._jvm.System.gc()
    time.sleep(1.5)  # let idle Python workers of earlier jobs exit before measuring
    with WorkerPeak() as peak:
        started = time.perf_counter()
        report = build_features(spark, cfg, lake, progress=lambda _: None)
        seconds = time.perf_counter() - started
    assert report.balanced
    return {
        "heavy_user_events": int((events.user_id == 0).sum()),
        "samples": report.samples_written,
        "seconds": round(seconds, 1),
        "worker_peak_mib": round(peak.peak_kib / 1024, 1),
        "batch_rows": cfg.features.batch_rows,
        "long_history_length": cfg.features.long_history_length,
    }


def main(argv: Sequence[str] | None = None) -> None:
    full, quick, tiny = SIZES["full"], SIZES["quick"], SIZES["tiny"]
    options = parser(
        NAME,
        __doc__,
        quick=f"{quick.light:,} vs {quick.heavy:,} events instead of {full.light:,} vs {full.heavy:,}",
        tiny=f"{tiny.light:,} vs {tiny.heavy:,} events",
    )
    args = options.parse_args(argv)
    size = SIZES[args.size]
    spark = get_spark(load_config(PROJECT / "conf" / "local.yaml", ["spark.master=local[2]"]).spark)
    with tempfile.TemporaryDirectory(prefix="heavy-user-") as tmp:
        runs = [measure(spark, Path(tmp) / str(n), n, size) for n in (size.light, size.heavy)]
    ratio = runs[1]["worker_peak_mib"] / runs[0]["worker_peak_mib"]
    figures = {"ratio": round(ratio, 3), "runs": runs}
    path = write_results(
        NAME,
        figures,
        {**size._asdict(), "light_user_events": LIGHT_EVENTS, "vector_dims": DIMS},
        ["pyspark", "numpy", "faiss-cpu"],
        args,
    )
    print(f"results: {path}")
    print(
        final_line(
            NAME,
            ratio,
            {
                "light_events": runs[0]["heavy_user_events"],
                "heavy_events": runs[1]["heavy_user_events"],
                "light_peak_mib": runs[0]["worker_peak_mib"],
                "heavy_peak_mib": runs[1]["worker_peak_mib"],
                "heavy_seconds": runs[1]["seconds"],
            },
        )
    )


if __name__ == "__main__":
    main()
