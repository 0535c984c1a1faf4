"""Inputs of the feature stage written as real Delta tables: `events` and `item_embeddings` rows
chosen by a test (random unit vectors or hand-picked ones), so every feature can be checked by hand
or by brute force without running the encoders."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from dmf_features.infra.lake import Lake, spark_schema
from dmf_features.schemas import EVENTS, ITEM_EMBEDDINGS

VERSIONS = {"text": "test-text@1", "image": "test-image@1", "fused": "test-fused@1"}


def write_events(
    spark: SparkSession, lake: Lake, events: pd.DataFrame, mode: str = "overwrite", replace_date: dt.date | None = None
) -> None:
    """events: user_id, item_id, event_time (UTC), and optionally event_type (default click) and label."""
    frame = events.copy()
    frame["event_type"] = frame.get("event_type", "rating")
    frame["label"] = frame.get("label", 1)
    frame["rating"] = np.where(frame["label"] == 1, 4.5, 2.0)
    frame["source"] = "test"
    frame["event_time"] = pd.to_datetime(frame["event_time"], utc=True)
    df = spark.createDataFrame(frame[["user_id", "item_id", "event_time", "event_type", "rating", "label", "source"]])
    df = df.select(
        F.col("user_id").cast("bigint"),
        F.col("item_id").cast("bigint"),
        F.col("event_time").cast("timestamp"),
        "event_type",
        F.col("rating").cast("double"),
        F.col("label").cast("int"),
        "source",
        F.to_date("event_time").alias("date"),
    )
    replace = [("date", "=", replace_date)] if replace_date else None
    lake.write(df, EVENTS.name, mode=mode, partition_by=EVENTS.partition_by, replace_partitions=replace)


def random_vectors(item_ids, dims: dict[str, int], seed: int = 0, missing: dict[str, set] | None = None):
    """{modality: (ids, unit vectors)}; items in missing[modality] get no vector of that modality."""
    rng = np.random.default_rng(seed)
    result = {}
    for modality, dim in dims.items():
        ids = np.array(sorted(set(item_ids) - (missing or {}).get(modality, set())), np.int64)
        matrix = rng.normal(size=(len(ids), dim)).astype(np.float32)
        matrix /= np.linalg.norm(matrix, axis=1, keepdims=True)
        result[modality] = (ids, matrix)
    return result


def write_vectors(spark: SparkSession, lake: Lake, vectors: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
    rows = []
    for modality, (ids, matrix) in vectors.items():
        for item, vector in zip(ids.tolist(), matrix, strict=True):
            rows.append(
                (
                    item,
                    modality,
                    "test",
                    VERSIONS[modality],
                    f"h{item}",
                    len(vector),
                    [float(x) for x in vector],
                    dt.datetime(2024, 1, 1, tzinfo=dt.UTC),
                )
            )
    df = spark.createDataFrame(rows, spark_schema(ITEM_EMBEDDINGS))
    lake.write(df, ITEM_EMBEDDINGS.name, mode="overwrite", partition_by=ITEM_EMBEDDINGS.partition_by)
