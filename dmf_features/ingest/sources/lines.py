"""Text sources read line by line with real line numbers, and CSV fields parsed per line in Spark.

Line numbers give every rejected record a stable id (`ratings.csv:100838`) that a person can look
up, and that keeps re-runs from duplicating quarantine rows. They are computed without sending rows
through Python: Spark numbers rows within each file split, and the splits' sizes (a few numbers)
give each split's offset.
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

MAX_RAW_CHARS = 4096  # a quarantined payload is kept up to this length


def read_lines(spark: SparkSession, path: str) -> tuple[DataFrame, int]:
    """`line_no` (1-based) and `raw` for every line of the text file at `path`, and the line count."""
    scan = spark.read.text(path).select(
        F.spark_partition_id().alias("_split"), F.monotonically_increasing_id().alias("_id"), F.col("value").alias("raw")
    )
    sizes = dict(scan.groupBy("_split").count().collect())
    offsets, total = [], 0
    for split in range(max(sizes, default=-1) + 1):
        offsets.append(total)
        total += sizes.get(split, 0)
    if not offsets:
        return scan.select(F.lit(0).cast("long").alias("line_no"), "raw").limit(0), 0
    # monotonically_increasing_id = split << 33 | row number within the split
    within = F.col("_id") - F.shiftleft(F.col("_split").cast("long"), 33)
    offset = F.element_at(F.array(*[F.lit(o) for o in offsets]), F.col("_split") + 1)
    return scan.select((offset + within + 1).alias("line_no"), "raw"), total


def csv_fields(raw: Column, count: int) -> tuple[list[Column], Column]:
    """Split one CSV line (RFC 4180 quoting) into `count` string fields (empty ones are null), and
    whether the line had exactly that many fields (`from_csv` alone pads or drops silently)."""
    schema = ", ".join(f"f{i} STRING" for i in range(count))
    parsed = F.from_csv(raw, schema, {"quote": '"', "escape": '"', "mode": "PERMISSIVE"})
    unquoted = F.regexp_replace(raw, r'"([^"]|"")*"', "")
    separators = F.length(unquoted) - F.length(F.replace(unquoted, F.lit(","), F.lit("")))
    return [parsed[f"f{i}"] for i in range(count)], separators == count - 1


def truncated(raw: Column) -> Column:
    return F.substring(raw, 1, MAX_RAW_CHARS)
