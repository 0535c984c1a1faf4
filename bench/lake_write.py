"""Benchmark: what a Delta commit through the lake layer costs on top of Spark's own Parquet write.

Every stage writes its tables with `Lake.write`: Spark tasks write Parquet into the table folder,
then the driver lists those files, reads each footer for Delta statistics and commits them in one
delta-rs transaction. This measures that whole path against the baseline it is built on, a plain
`df.write.parquet(...)` into a fresh folder, on the same cached DataFrame shaped like the `events`
table (user_id, item_id, event_time, event_type, rating, label, source, date; 30 distinct dates),
both unpartitioned and partitioned by `date`. After one untimed write of each kind (JIT, caches),
each is repeated, lake and plain alternating order round by round, and the medians are compared.

ratio = lake median seconds / plain median seconds for the partitioned write (the way `events` is
written); the overhead is ratio - 1 and the project's goal is under 25%.

usage: python -m bench.lake_write [--quick | --tiny] [--rows N] [--repeats R] [--results-dir DIR]
"""

from __future__ import annotations

import argparse
import datetime as dt
import tempfile
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from bench.common import Timing, final_line, parser, time_interleaved, write_results
from dmf_features.infra.config import LakeConfig, SparkConfig
from dmf_features.infra.lake import Lake, spark_schema
from dmf_features.infra.spark import get_spark
from dmf_features.schemas import EVENTS

NAME = "lake_write"
DAYS = 30
PACKAGES = ("pyspark", "deltalake", "pyarrow")


class Size(NamedTuple):
    rows: int
    partitions: int  # of the input DataFrame: a partitioned write makes up to partitions * DAYS files
    repeats: int


# Full size: input partitions as a job's output has them after a shuffle (the project's default
# spark.shuffle_partitions), and five rounds because the machines these run on are shared and noisy.
SIZES = {
    "full": Size(rows=3_000_000, partitions=SparkConfig().shuffle_partitions, repeats=5),
    "quick": Size(rows=300_000, partitions=2, repeats=3),
    "tiny": Size(rows=20_000, partitions=2, repeats=1),
}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    full, quick, tiny = SIZES["full"], SIZES["quick"], SIZES["tiny"]
    options = parser(
        NAME,
        __doc__,
        quick=f"a small run ({quick.rows:,} rows in {quick.partitions} input partitions), well under a minute",
        tiny=f"{tiny.rows:,} rows, one timed write of each kind",
    )
    options.add_argument("--rows", type=int, help=f"rows to write (default {full.rows:,}; {quick.rows:,} with --quick)")
    options.add_argument(
        "--repeats", type=int, help=f"timed writes of each kind per case (default {full.repeats}; {quick.repeats} with --quick)"
    )
    return options.parse_args(argv)


def events_frame(spark: SparkSession, rows: int, partitions: int) -> DataFrame:
    """`rows` synthetic events with the `events` schema in `partitions`, cached and materialised."""
    start = int(dt.datetime(2024, 1, 1, tzinfo=dt.UTC).timestamp())
    event_time = f"timestamp_seconds({start} + pmod(xxhash64(id, 3), {DAYS * 86_400}))"
    rating = "pmod(xxhash64(id, 4), 10) / 2.0 + 0.5"
    exprs = {
        "user_id": "pmod(xxhash64(id, 1), 200000)",
        "item_id": "pmod(xxhash64(id, 2), 20000)",
        "event_time": event_time,
        "event_type": "element_at(array('view', 'click', 'rate'), cast(pmod(id, 3) + 1 as int))",
        "rating": rating,
        "label": f"{rating} >= 4.0",
        "source": "if(pmod(id, 10) = 0, 'synthetic', 'movielens')",
        "date": f"to_date({event_time})",
    }
    df = (
        spark.range(0, rows, numPartitions=partitions)
        .select(*(F.expr(exprs[f.name]).cast(f.dataType).alias(f.name) for f in spark_schema(EVENTS)))
        .cache()
    )
    df.count()
    return df


def lake_writer(lake: Lake, df: DataFrame, rows: int, partition_by: Sequence[str]) -> Callable[[], int]:
    """A write of `df` into a new lake table per call; returns the number of files committed."""

    def write() -> int:
        result = lake.write(df, f"events_{uuid.uuid4().hex[:8]}", partition_by=partition_by)
        if result.rows_written != rows:
            raise RuntimeError(f"lake committed {result.rows_written} rows, expected {rows}")
        return result.files_added

    return write


def plain_writer(root: Path, df: DataFrame, partition_by: Sequence[str]) -> Callable[[], Path]:
    """A plain Parquet write of `df` into a new folder per call; returns the folder."""

    def write() -> Path:
        folder = root / f"plain_{uuid.uuid4().hex[:8]}"
        df.write.mode("errorifexists").partitionBy(*partition_by).parquet(str(folder))
        return folder

    return write


def measure(
    lake: Lake, root: Path, df: DataFrame, rows: int, partition_by: Sequence[str], repeats: int, prefix: str
) -> dict[str, Any]:
    """Median seconds, rows/s and files of each side, plus every run, keyed `<prefix>_...`."""
    timings = time_interleaved(
        {"lake": lake_writer(lake, df, rows, partition_by), "plain": plain_writer(root, df, partition_by)}, repeats
    )
    files = {"lake": timings["lake"].result, "plain": sum(1 for _ in timings["plain"].result.rglob("*.parquet"))}
    figures: dict[str, Any] = {f"{prefix}_ratio": round(timings["lake"].median / timings["plain"].median, 4)}
    for side, timing in timings.items():
        figures |= _side_figures(f"{prefix}_{side}", timing, rows, files[side])
    return figures


def _side_figures(key: str, timing: Timing, rows: int, files: int) -> dict[str, Any]:
    return {
        f"{key}_s": round(timing.median, 3),
        f"{key}_rows_per_s": round(rows / timing.median),
        f"{key}_files": files,
        f"{key}_runs_s": [round(s, 3) for s in timing.seconds],
    }


def run(spark: SparkSession, tmp: Path, size: Size) -> dict[str, Any]:
    df = events_frame(spark, size.rows, size.partitions)
    lake = Lake(LakeConfig(uri=str(tmp / "lake")))
    figures = measure(lake, tmp / "plain", df, size.rows, (), size.repeats, "unpart")
    return figures | measure(lake, tmp / "plain", df, size.rows, ("date",), size.repeats, "part")


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    size = SIZES[args.size]
    size = size._replace(rows=args.rows or size.rows, repeats=args.repeats or size.repeats)
    with tempfile.TemporaryDirectory(prefix="dmf-bench-lake-write-") as tmp:
        spark = get_spark(
            SparkConfig(
                master="local[2]",
                driver_memory="4g",
                conf={"spark.ui.enabled": "false", "spark.local.dir": tmp},
            )
        )
        try:
            figures = run(spark, Path(tmp), size)
        finally:
            spark.stop()
    ratio = figures.pop("part_ratio")
    figures = {"ratio": ratio, "overhead": round(ratio - 1, 4), **figures}
    settings = {**size._asdict(), "dates": DAYS, "spark_master": "local[2]"}
    path = write_results(NAME, figures, settings, PACKAGES, args)
    shown = {k: v for k, v in figures.items() if k != "ratio" and not k.endswith("_runs_s")}
    print(f"results: {path}")
    print(final_line(NAME, ratio, {"rows": size.rows, **shown}))


if __name__ == "__main__":
    main()
