"""Memory of the feature job for a very heavy user: peak RSS of Spark's Python workers when one user
has N events, against the same job with a user ten times lighter, in one run.

The feature UDF carries at most `long_history_length` behaviours of a user from one Arrow batch to
the next, so the peak should not grow with the heaviest user's events: the ratio should stay near 1
(it would be about 10 if a user's events were held at once). The Spark JVM's own sort spills to
disk and is not measured here.

    python -m bench.heavy_user [--quick]
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd

from bench.common import final_line, write_results
from dmf_features.features.stage import build_features
from dmf_features.infra.config import load_config
from dmf_features.infra.lake import Lake
from dmf_features.infra.spark import get_spark
from dmf_features.testing.feature_inputs import VERSIONS, random_vectors, write_events, write_vectors

DIMS = {"text": 384, "image": 1280, "fused": 1664}  # the default encoders' widths
ITEMS, LIGHT_USERS, LIGHT_EVENTS = 2_000, 200, 50


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


def events_with_heavy_user(heavy_events: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    users = np.concatenate([np.zeros(heavy_events, np.int64),
                            np.repeat(np.arange(1, LIGHT_USERS + 1), LIGHT_EVENTS)])
    n = len(users)
    frame = pd.DataFrame({
        "user_id": users, "item_id": rng.integers(1, ITEMS + 1, n),
        "event_time": pd.Timestamp("2024-01-01", tz="UTC") + pd.to_timedelta(rng.integers(0, 30 * 86_400, n), unit="s"),
        "label": rng.integers(0, 2, n),
    })
    return frame.drop_duplicates(["user_id", "item_id", "event_time"]).reset_index(drop=True)


def measure(spark, folder: Path, heavy_events: int) -> dict:
    cfg = load_config(Path("conf/local.yaml"), [
        f"lake.uri={folder / 'lake'}", "spark.master=local[2]", "spark.shuffle_partitions=2",
        "features.encoder_versions=" + str(VERSIONS).replace("'", '"'),
        "features.split.valid_from=2024-01-20", "features.split.test_from=2024-01-25",
    ])
    lake = Lake(cfg.lake)
    events = events_with_heavy_user(heavy_events)
    write_events(spark, lake, events)
    write_vectors(spark, lake, random_vectors(range(1, ITEMS + 1), DIMS))
    spark.sparkContext._jvm.System.gc()
    time.sleep(1.5)  # let idle Python workers of earlier jobs exit before measuring
    with WorkerPeak() as peak:
        started = time.perf_counter()
        report = build_features(spark, cfg, lake, progress=lambda _: None)
        seconds = time.perf_counter() - started
    assert report.balanced
    return {"heavy_user_events": int((events.user_id == 0).sum()), "samples": report.samples_written,
            "seconds": round(seconds, 1), "worker_peak_mib": round(peak.peak_kib / 1024, 1),
            "batch_rows": cfg.features.batch_rows, "long_history_length": cfg.features.long_history_length}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="2,000 vs 20,000 events instead of 10,000 vs 100,000")
    args = parser.parse_args()
    light, heavy = (2_000, 20_000) if args.quick else (10_000, 100_000)
    spark = get_spark(load_config("conf/local.yaml", ["spark.master=local[2]"]).spark)
    with tempfile.TemporaryDirectory(prefix="heavy-user-") as tmp:
        runs = [measure(spark, Path(tmp) / str(n), n) for n in (light, heavy)]
    ratio = runs[1]["worker_peak_mib"] / runs[0]["worker_peak_mib"]
    figures = {"ratio": round(ratio, 3), "runs": runs}
    write_results("heavy_user", figures, {"quick": args.quick, "items": ITEMS, "light_users": LIGHT_USERS,
                                          "vector_dims": DIMS}, ["pyspark", "numpy", "faiss-cpu"], quick=args.quick)
    print(final_line("heavy_user", ratio, {
        "light_events": runs[0]["heavy_user_events"], "heavy_events": runs[1]["heavy_user_events"],
        "light_peak_mib": runs[0]["worker_peak_mib"], "heavy_peak_mib": runs[1]["worker_peak_mib"],
        "heavy_seconds": runs[1]["seconds"]}))


if __name__ == "__main__":
    main()
