"""Spark side of the `samples` table: which rows are samples, their split, sampled negatives, and the
Arrow UDF that attaches point-in-time histories and target-aware features.

The numpy work lives in `histories`, `similarity` and `negatives`; this module only arranges rows
so that each user's events reach one UDF call in time order, and converts between Arrow and numpy.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pyarrow as pa
from pyspark import Broadcast
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import StructType

from dmf_features.features.history_order import STREAM_ORDER, newest_first_window
from dmf_features.features.kernels.histories import KIND_BEHAVIOUR, KIND_SAMPLE, HistoryStream, newest_first
from dmf_features.features.kernels.negatives import ItemAvailability, draw_negatives
from dmf_features.features.kernels.similarity import FeatureShape, modality_features
from dmf_features.features.kernels.vectors import ModalityVectors
from dmf_features.infra.config import BehaviourConfig, SplitConfig
from dmf_features.infra.lake import spark_schema
from dmf_features.schemas import MODALITIES, SAMPLES, feature_column

# columns of a sample row before its features are attached (also the negatives UDF's output)
SAMPLE_COLUMNS = (
    "sample_id",
    "user_id",
    "item_id",
    "event_time",
    "event_type",
    "label",
    "is_negative",
    "split",
    "split_rule",
    "date",
    "micros",
)
_STREAM_COLUMNS = (
    "user_id",
    "micros",
    "kind",
    "item_id",
    "event_type",
    "sample_id",
    "event_time",
    "label",
    "is_negative",
    "split",
    "split_rule",
    "date",
)
NEGATIVE_EVENT_TYPE = "negative"


def observed_samples(events: DataFrame, split: SplitConfig) -> DataFrame:
    """Every event as a sample, with its split."""
    rows = events.select(
        F.concat_ws(":", "user_id", "item_id", F.unix_seconds("event_time"), "event_type").alias("sample_id"),
        "user_id",
        "item_id",
        "event_time",
        "event_type",
        "label",
        F.lit(False).alias("is_negative"),
        _split(split).alias("split"),
        F.lit(split.rule()).alias("split_rule"),
        "date",
        F.unix_micros("event_time").alias("micros"),
    )
    return rows.select(*SAMPLE_COLUMNS)


def _split(split: SplitConfig) -> Column:
    if split.method == "temporal":
        return (
            F.when(F.col("event_time") < F.lit(_utc_midnight(split.valid_from)), "train")
            .when(F.col("event_time") < F.lit(_utc_midnight(split.test_from)), "valid")
            .otherwise("test")
        )
    rank = F.row_number().over(newest_first_window())
    return F.when(rank == 1, "test").when(rank == 2, "valid").otherwise("train")


def _utc_midnight(day) -> Column:
    return F.to_utc_timestamp(F.lit(day.isoformat()).cast("timestamp"), "UTC")


def behaviour_events(events: DataFrame, behaviour: BehaviourConfig) -> DataFrame:
    """The events that make up histories (user_id, item_id, event_time, event_type, micros, date)."""
    rows = events
    if behaviour.label is not None:
        rows = rows.where(F.col("label") == behaviour.label)
    if behaviour.event_types is not None:
        rows = rows.where(F.col("event_type").isin(behaviour.event_types))
    return rows.select("user_id", "item_id", "event_time", "event_type", F.unix_micros("event_time").alias("micros"), "date")


# ------------------------------------------------------------------------------------ negatives


def item_availability(events: DataFrame) -> ItemAvailability:
    """Each item's first appearance in `events` (any user), for drawing negatives that existed then."""
    first = events.groupBy("item_id").agg(F.min(F.unix_micros("event_time")).alias("micros")).toArrow()
    micros = first.column("micros").to_numpy()
    order = np.argsort(micros, kind="stable")
    return ItemAvailability(first.column("item_id").to_numpy()[order], micros[order])


def negative_samples(positives: DataFrame, availability: Broadcast, ratio: int, seed: int) -> DataFrame:
    """`ratio` sampled negatives per positive sample, inheriting its user, time, split and date."""
    schema = positives.select(*SAMPLE_COLUMNS).schema

    def draw(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            users = batch.column("user_id").to_numpy()
            items = batch.column("item_id").to_numpy()
            micros = batch.column("micros").to_numpy()
            rows, slots, negatives = draw_negatives(users, items, micros, availability.value, ratio, seed)
            if not len(rows):
                continue
            taken = batch.take(pa.array(rows))
            seconds = np.floor_divide(micros[rows], 1_000_000)
            ids = [
                f"{u}:{n}:{s}:neg{j}:{p}"
                for u, n, s, j, p in zip(users[rows], negatives, seconds, slots, items[rows], strict=True)
            ]
            columns = {
                "sample_id": pa.array(ids),
                "item_id": pa.array(negatives, pa.int64()),
                "event_type": pa.array([NEGATIVE_EVENT_TYPE] * len(rows)),
                "label": pa.array(np.zeros(len(rows), np.int32)),
                "is_negative": pa.array(np.ones(len(rows), bool)),
            }
            yield pa.RecordBatch.from_arrays(
                [columns[name] if name in columns else taken.column(name) for name in schema.names], names=schema.names
            )

    return positives.select(*SAMPLE_COLUMNS).mapInArrow(draw, schema)


# ------------------------------------------------------------------------------------- features


def with_features(
    samples: DataFrame,
    behaviours: DataFrame,
    vectors: Broadcast,
    shape: FeatureShape,
    edges: dict[str, np.ndarray],
    partitions: int,
) -> DataFrame:
    """`samples` rows (SAMPLE_COLUMNS) with histories and features: the `samples` table's rows
    (`edges`: each modality's bucket boundaries)."""
    # behaviours only place items in histories: their sample columns are null
    sample_rows = _stream_rows(samples, KIND_SAMPLE, keep=_STREAM_COLUMNS, types=samples.schema)
    behaviour_rows = _stream_rows(
        behaviours, KIND_BEHAVIOUR, keep=("user_id", "micros", "item_id", "event_type"), types=samples.schema
    )
    stream = sample_rows.unionByName(behaviour_rows).repartition(partitions, "user_id").sortWithinPartitions(*STREAM_ORDER)
    return stream.mapInArrow(_feature_udf(vectors, shape, edges), spark_schema(SAMPLES))


def _stream_rows(rows: DataFrame, kind: int, keep: tuple[str, ...], types: StructType) -> DataFrame:
    """`rows` as rows of the one stream the feature UDF walks (_STREAM_COLUMNS): `kind` says sample or
    behaviour, the columns in `keep` come from `rows`, the others are nulls of the samples' types."""
    return rows.select(
        *[
            F.lit(kind).alias(c) if c == "kind" else F.col(c) if c in keep else F.lit(None).cast(types[c].dataType).alias(c)
            for c in _STREAM_COLUMNS
        ]
    )


def _feature_udf(vectors: Broadcast, shape: FeatureShape, edges: dict[str, np.ndarray]):
    names = SAMPLES.columns

    def compute(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        stream = HistoryStream(shape.long_history_length)
        by_modality: dict[str, ModalityVectors] = vectors.value
        for batch in batches:
            users = batch.column("user_id").to_numpy()
            windows = stream.windows(
                users, batch.column("micros").to_numpy(), batch.column("kind").to_numpy(), batch.column("item_id").to_numpy()
            )
            if not len(windows.sample_rows):
                continue
            rows = windows.sample_rows
            taken = batch.take(pa.array(rows))
            targets, sample_users = batch.column("item_id").to_numpy()[rows], users[rows]
            positions, exists = newest_first(windows, shape.history_length)
            columns: dict[str, pa.Array] = {
                "hist_len": pa.array(exists.sum(axis=1).astype(np.int32)),
                "hist_item_ids": _lists(np.where(exists, windows.behaviour_items[positions], 0), pa.int64()),
                "hist_times": _lists(
                    np.where(exists, np.floor_divide(windows.behaviour_micros[positions], 1_000_000), 0), pa.int64()
                ),
                "long_len": pa.array((windows.hi - windows.lo).astype(np.int32)),
            }
            for modality in MODALITIES:
                found = modality_features(
                    by_modality.get(modality, _NO_VECTORS), windows, targets, sample_users, shape, edges.get(modality, _NO_EDGES)
                )
                for feature, values in found.items():
                    columns[feature_column(modality, feature)] = _column(values)
            yield pa.RecordBatch.from_arrays(
                [columns[name] if name in columns else taken.column(name) for name in names], names=list(names)
            )

    return compute


_NO_VECTORS = ModalityVectors("none", np.empty(0, np.int64), np.empty((0, 1), np.float32))
_NO_EDGES = np.empty(0, np.float32)  # a modality without vectors is masked everywhere: its edges never matter

_ARROW_TYPES = {
    np.dtype(np.float32): pa.float32(),
    np.dtype(np.int32): pa.int32(),
    np.dtype(np.int64): pa.int64(),
    np.dtype(bool): pa.bool_(),
}


def _column(values: np.ndarray) -> pa.Array:
    arrow_type = _ARROW_TYPES[values.dtype]
    return _lists(values, arrow_type) if values.ndim == 2 else pa.array(values, arrow_type)


def _lists(matrix: np.ndarray, arrow_type: pa.DataType) -> pa.ListArray:
    """A [n, width] matrix as n lists of `width` values (zero-copy where numpy allows)."""
    n, width = matrix.shape
    offsets = pa.array(np.arange(0, (n + 1) * width, width, dtype=np.int32) if width else np.zeros(n + 1, np.int32))
    return pa.ListArray.from_arrays(offsets, pa.array(np.ascontiguousarray(matrix).reshape(-1), arrow_type))
