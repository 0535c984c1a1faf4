"""Why a record was rejected, and how a rejected record becomes a row of the `quarantine` table.

Every source classifies its records into a DataFrame with the target table's columns plus
`record_id`, `raw`, `reason` and `detail`; `reason` is null for a record that is kept. The first
failing check gives the reason, so each record has exactly one outcome and counts reconcile.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from dmf_features.ingest.sources.lines import truncated
from dmf_features.schemas import QUARANTINE

UNPARSEABLE = "unparseable_line"
TOO_LONG = "too_long"
INVALID_ENCODING = "invalid_encoding"
NULL_KEY = "null_key"
MISSING_VALUE = "missing_value"
UNKNOWN_ITEM = "unknown_item"
DUPLICATE_EVENT = "duplicate_event"
DUPLICATE_ITEM = "duplicate_item"
OUT_OF_RANGE = "out_of_range"
UNRECOGNISED_FILE = "unrecognised_file"

Check = tuple[Column, str, Column]  # (the record fails when this is true, reason, detail)


@dataclass(frozen=True)
class Classified:
    """One input's records, each kept or rejected: the contract between a source and ingest.

    `records` has the target table's columns plus record_id, raw, reason, detail and in_scope
    (false for records a dated run does not cover); `rows_in` is counted from the raw input
    before any parsing, so that reconciling against it can catch a record that went missing."""

    input: str
    target: str
    records: DataFrame
    rows_in: int

    @property
    def in_scope(self) -> DataFrame:
        return self.records.where("in_scope")


def classify(df: DataFrame, checks: Sequence[Check]) -> DataFrame:
    """Add `reason` and `detail` from the first failing check (both null when all pass)."""
    reason, detail = F.lit(None).cast("string"), F.lit(None).cast("string")
    for failed, name, why in reversed(checks):
        failed = F.coalesce(failed, F.lit(False))
        reason = F.when(failed, F.lit(name)).otherwise(reason)
        detail = F.when(failed, why).otherwise(detail)
    return df.withColumn("reason", reason).withColumn("detail", detail)


def kept(classified: DataFrame) -> DataFrame:
    return classified.where(F.col("reason").isNull()).drop("reason", "detail", "record_id", "raw", "in_scope")


def quarantine_rows(classified: DataFrame, source: str, target: str) -> DataFrame:
    """The rejected records of `classified` in the shape of the `quarantine` table."""
    rejected = classified.where(F.col("reason").isNotNull())
    return rejected.select(
        "record_id",
        F.lit(source).alias("source"),
        "reason",
        "detail",
        truncated(F.col("raw")).alias("raw"),
        F.lit(target).alias("target"),
    ).select(*QUARANTINE.columns)


_NOUNS = {"line_no": "line", "image_path": "file"}


def flag_duplicates(classified: DataFrame, keys: Sequence[str], order_by: str, reason: str) -> DataFrame:
    """Reject every kept record whose `keys` a kept record earlier in `order_by` already has."""
    window = Window.partitionBy(F.col("reason").isNull(), *keys).orderBy(order_by)
    first = F.first(order_by).over(window)
    duplicate = F.col("reason").isNull() & (F.col(order_by) != first)
    return classified.withColumn("_first", first).select(
        *[c for c in classified.columns if c not in ("reason", "detail")],
        F.when(duplicate, F.lit(reason)).otherwise(F.col("reason")).alias("reason"),
        F.when(duplicate, F.concat(F.lit(f"duplicate of {_NOUNS.get(order_by, order_by)} "), F.col("_first").cast("string")))
        .otherwise(F.col("detail"))
        .alias("detail"),
    )
