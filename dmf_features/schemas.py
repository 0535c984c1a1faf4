"""The tables' schemas and keys: the contract between stages. One place for each table's shape."""

from __future__ import annotations

from dataclasses import dataclass

from pyspark.sql.types import (
    ArrayType,
    BinaryType,
    BooleanType,
    DataType,
    DateType,
    DoubleType,
    FloatType,
    IntegerType,
    LongType,
    StringType,
    StructField,
    StructType,
    TimestampType,
)

_TYPES: dict[str, DataType] = {
    "bigint": LongType(), "int": IntegerType(), "double": DoubleType(), "string": StringType(),
    "binary": BinaryType(), "boolean": BooleanType(), "date": DateType(), "timestamp": TimestampType(),
    "array<string>": ArrayType(StringType()), "array<float>": ArrayType(FloatType()),
    "array<bigint>": ArrayType(LongType()), "array<int>": ArrayType(IntegerType()),
    "array<boolean>": ArrayType(BooleanType()), "array<timestamp>": ArrayType(TimestampType()),
    "array<array<float>>": ArrayType(ArrayType(FloatType())),
}


def _schema(columns: str) -> StructType:
    """'name type, ...' with the few types the tables use (importable without a Spark session)."""
    fields = []
    for column in columns.split(","):
        name, kind = column.split()
        fields.append(StructField(name, _TYPES[kind.lower()], nullable=True))
    return StructType(fields)


@dataclass(frozen=True)
class TableSpec:
    name: str
    schema: StructType
    keys: tuple[str, ...]
    partition_by: tuple[str, ...] = ()


ITEMS = TableSpec(
    "items",
    _schema(
        "item_id BIGINT, title STRING, year INT, genres ARRAY<STRING>, tags ARRAY<STRING>, "
        "image BINARY, image_path STRING, image_status STRING, image_sha256 STRING, "
        "content_hash STRING, source STRING"
    ),
    keys=("item_id",),
)

EVENTS = TableSpec(
    "events",
    _schema(
        "user_id BIGINT, item_id BIGINT, event_time TIMESTAMP, event_type STRING, rating DOUBLE, "
        "label INT, source STRING, date DATE"
    ),
    keys=("user_id", "item_id", "event_time", "event_type"),
    partition_by=("date",),
)

QUARANTINE = TableSpec(
    "quarantine",
    _schema(
        "record_id STRING, source STRING, reason STRING, detail STRING, raw STRING, target STRING"
    ),
    keys=("record_id",),
    partition_by=("target",),
)

ITEM_EMBEDDINGS = TableSpec(
    "item_embeddings",
    _schema(
        "item_id bigint, modality string, encoder string, encoder_version string, input_hash string, "
        "dim int, vector array<float>, embedded_at timestamp"
    ),
    keys=("item_id", "modality", "encoder_version"),
    partition_by=("modality",),
)

VALIDATION_RESULTS = TableSpec(
    "validation_results",
    _schema(
        "run_id STRING, checked_at TIMESTAMP, table_name STRING, table_version BIGINT, suite STRING, "
        "expectation STRING, column_name STRING, success BOOLEAN, observed STRING, details STRING"
    ),
    keys=("run_id", "table_name", "expectation", "column_name"),
    partition_by=("table_name",),
)

# The modalities of the target-aware features; each has the same seven columns in `samples`.
MODALITIES = ("text", "image", "fused")
FEATURE_COLUMNS = (
    "{m}_sim array<float>, {m}_mask array<boolean>, {m}_bucket array<int>, {m}_hist array<float>, "
    "{m}_hist_count int, {m}_topk_ids array<bigint>, {m}_topk_sims array<float>"
)

SAMPLES = TableSpec(
    "samples",
    _schema(
        "sample_id string, user_id bigint, item_id bigint, event_time timestamp, event_type string, label int, "
        "is_negative boolean, split string, split_rule string, hist_len int, hist_item_ids array<bigint>, "
        "hist_times array<bigint>, long_len int, "
        + ", ".join(FEATURE_COLUMNS.format(m=m) for m in MODALITIES)
        + ", date date"
    ),
    keys=("sample_id",),
    partition_by=("date",),
)

USER_SEQUENCES = TableSpec(
    "user_sequences",
    _schema(
        "user_id bigint, as_of timestamp, last_event_time timestamp, hist_len int, hist_item_ids array<bigint>, "
        "hist_event_times array<timestamp>, hist_event_types array<string>, long_hist_item_ids array<bigint>, "
        + ", ".join(f"{m}_vectors array<array<float>>" for m in MODALITIES)
    ),
    keys=("user_id",),
)

# items.image_status: what ingest found for the item's image (the image column is null unless "ok"
# or "corrupt"; a corrupt file's bytes are kept so the embedding job can report exactly why)
IMAGE_STATUSES = ("ok", "missing", "empty", "corrupt", "too_large")
