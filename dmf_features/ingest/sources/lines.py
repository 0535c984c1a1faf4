"""Text sources read as CSV records with real line numbers, and CSV fields parsed per record in Spark.

Line numbers give every rejected record a stable id (`ratings.csv:100838`) that a person can look
up, and that keeps re-runs from duplicating quarantine rows. They are computed without sending rows
through Python: Spark numbers rows within each file split, and the splits' sizes (a few numbers)
give each split's offset. Spark's line reader splits at LF, CRLF and CR alike.

A quoted field may hold line breaks (legal CSV). Such a record spans the lines from one with an odd
number of quote characters (it opens a quote) to the next such line (it closes it); those lines are
joined back into one record, numbered by its first line. Only the line numbers of odd lines reach
the driver, and only when a file has any, so ordinary files take the one-pass path. A span longer
than `max_record_lines` is not joined (an unclosed quote would otherwise swallow the file): its
lines stay single records and are quarantined as unparseable.

No regular expression runs over a whole record: Java's regex engine recurses per repetition of a
group, and one very long field would overflow the task's stack and kill the executor.
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

MAX_RAW_CHARS = 4096  # a quarantined payload is kept up to this length
REPLACEMENT_CHAR = "\ufffd"  # what an invalid UTF-8 byte sequence is shown as


def read_records(spark: SparkSession, path: str, max_record_lines: int) -> tuple[DataFrame, int]:
    """`line_no` (1-based, of the record's first line) and `raw` for every CSV record of the file at
    `path`, and the record count."""
    quotes = F.length("value") - F.length(F.replace("value", F.lit('"'), F.lit("")))
    scan = spark.read.text(path).select(
        F.spark_partition_id().alias("_split"),
        F.monotonically_increasing_id().alias("_id"),
        F.col("value").alias("raw"),
        (quotes % 2 == 1).alias("_opens_or_closes"),
    )
    odd_lines = F.sum(F.col("_opens_or_closes").cast("int")).alias("odd")
    splits = scan.groupBy("_split").agg(F.count("*").alias("n"), odd_lines).collect()
    sizes = {r["_split"]: r["n"] for r in splits}
    offsets, total = [], 0
    for split in range(max(sizes, default=-1) + 1):
        offsets.append(total)
        total += sizes.get(split, 0)
    if not offsets:
        return scan.select(F.lit(0).cast("long").alias("line_no"), "raw").limit(0), 0
    # monotonically_increasing_id = split << 33 | row number within the split
    within = F.col("_id") - F.shiftleft(F.col("_split").cast("long"), 33)
    offset = F.element_at(F.array(*[F.lit(o) for o in offsets]), F.col("_split") + 1)
    lines = scan.select((offset + within + 1).alias("line_no"), "raw", "_opens_or_closes")
    if not any(r["odd"] for r in splits):
        return lines.drop("_opens_or_closes"), total

    odd = sorted(r.line_no for r in lines.where("_opens_or_closes").select("line_no").collect())
    spans = [(first, last) for first, last in zip(odd[0::2], odd[1::2]) if last - first < max_record_lines]
    if not spans:
        return lines.drop("_opens_or_closes"), total
    members = spark.createDataFrame(
        [(n, first) for first, last in spans for n in range(first, last + 1)], "line_no long, _record long"
    )
    tagged = lines.drop("_opens_or_closes").join(members, "line_no", "left")
    single = tagged.where(F.col("_record").isNull()).select("line_no", "raw")
    parts = F.array_sort(F.collect_list(F.struct("line_no", "raw")))
    joined = (
        tagged.where(F.col("_record").isNotNull())
        .groupBy("_record")
        .agg(F.array_join(F.transform(parts, lambda p: p["raw"]), "\n").alias("raw"))
    )
    records = single.unionByName(joined.select(F.col("_record").alias("line_no"), "raw"))
    return records, total - sum(last - first for first, last in spans)


def csv_fields(raw: Column, count: int) -> tuple[list[Column], Column]:
    """Split one CSV record (RFC 4180 quoting) into `count` string fields (empty ones are null), and
    the number of fields the record has (`from_csv` alone pads or drops silently): one more than its
    separators outside quotes, which are the even-numbered pieces between quote characters."""
    schema = ", ".join(f"f{i} STRING" for i in range(count))
    parsed = F.from_csv(raw, schema, {"quote": '"', "escape": '"', "mode": "PERMISSIVE"})
    unquoted = F.array_join(F.filter(F.split(raw, '"'), lambda _, i: i % 2 == 0), "")
    found = F.length(unquoted) - F.length(F.replace(unquoted, F.lit(","), F.lit(""))) + 1
    return [parsed[f"f{i}"] for i in range(count)], found


def invalid_utf8_at(raw: Column) -> Column:
    """The 1-based position of the first character that is not valid UTF-8 (0: none).

    Spark's text reader keeps a line's bytes as they are, valid UTF-8 or not; anything that shows
    the string replaces an invalid sequence with U+FFFD, silently. Such a record is reported instead."""
    return F.when(F.is_valid_utf8(raw), F.lit(0)).otherwise(F.instr(F.make_valid_utf8(raw), REPLACEMENT_CHAR))


def truncated(raw: Column) -> Column:
    """A quarantined payload: at most MAX_RAW_CHARS, invalid bytes shown as U+FFFD (Parquet strings are UTF-8)."""
    return F.substring(F.make_valid_utf8(raw), 1, MAX_RAW_CHARS)
