"""`user_sequences`: each user's latest behaviour history with its items' vectors, for online scoring.

One row per user: the newest `history_length` behaviours (newest first, the same order and ties as
the samples' histories), their times and types, and per stored modality the items' vectors (null
where an item has no vector of that modality), so a scorer serves a user from one row, without a
join; and the ids of the newest `long_history_length` behaviours, whose similarities with a
candidate make its histogram, as they do in `samples`. `as_of` is the newest event time in
`events` when the row was built.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Sequence

import numpy as np
import pyarrow as pa
from pyspark import Broadcast
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from dmf_features.features.history_order import newest_first_window
from dmf_features.features.kernels.vectors import ModalityVectors
from dmf_features.infra.lake import spark_schema
from dmf_features.schemas import MODALITIES, USER_SEQUENCES, vectors_column


def user_sequence_rows(
    behaviours: DataFrame,
    vectors: Broadcast,
    history_length: int,
    long_history_length: int,
    stored: Sequence[str],
    as_of: dt.datetime,
) -> DataFrame:
    """One `user_sequences` row per user in `behaviours` (user_id, item_id, event_time, event_type)."""
    newest = newest_first_window()
    latest = behaviours.withColumn("rank", F.row_number().over(newest)).where(F.col("rank") <= long_history_length)
    grouped = latest.groupBy("user_id").agg(
        F.sort_array(F.collect_list(F.struct("event_time", "item_id", "event_type")), asc=False).alias("long")
    )
    short = F.slice("long", 1, history_length).alias("h")
    rows = grouped.select("user_id", "long", short).select(
        "user_id",
        F.lit(as_of).cast("timestamp").alias("as_of"),
        F.col("h")[0]["event_time"].alias("last_event_time"),
        F.size("h").alias("hist_len"),
        F.col("h.item_id").alias("hist_item_ids"),
        F.col("h.event_time").alias("hist_event_times"),
        F.col("h.event_type").alias("hist_event_types"),
        F.col("long.item_id").alias("long_hist_item_ids"),
    )
    stored = tuple(stored)

    def attach(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        by_modality: dict[str, ModalityVectors] = vectors.value
        for batch in batches:
            ids = batch.column("hist_item_ids")
            columns = {}
            for modality in MODALITIES:
                source = by_modality.get(modality) if modality in stored else None
                columns[vectors_column(modality)] = _vector_lists(ids, source)
            yield pa.RecordBatch.from_arrays(
                [columns[name] if name in columns else batch.column(name) for name in USER_SEQUENCES.columns],
                names=USER_SEQUENCES.columns,
            )

    return rows.mapInArrow(attach, spark_schema(USER_SEQUENCES))


def _vector_lists(ids: pa.ListArray, vectors: ModalityVectors | None) -> pa.Array:
    """list<list<float>> aligned with `ids`: each history item's vector, null when it has none;
    the whole column null when the modality is not stored."""
    users = len(ids)
    if vectors is None:
        return pa.nulls(users, pa.list_(pa.list_(pa.float32())))
    flat_ids = ids.flatten().to_numpy()
    rows, present = vectors.lookup(flat_ids)
    dim = vectors.matrix.shape[1]
    values = vectors.matrix[rows[present]].reshape(-1)
    inner_offsets = np.zeros(len(flat_ids) + 1, np.int32)
    inner_offsets[1:] = np.cumsum(np.where(present, dim, 0))
    inner = pa.ListArray.from_arrays(pa.array(inner_offsets), pa.array(values, pa.float32()), mask=pa.array(~present))
    outer_offsets = ids.offsets.to_numpy()
    return pa.ListArray.from_arrays(pa.array(outer_offsets - outer_offsets[0]), inner)
