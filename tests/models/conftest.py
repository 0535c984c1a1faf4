"""The tiny lake the models' end-to-end tests read: built once per run with Spark (events, item
vectors, then `build_features`), since training, tracking, serving and recommending all start from it."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from dmf_features.features.stage import build_features
from dmf_features.infra.config import load_config
from dmf_features.infra.lake import Lake
from dmf_features.testing.feature_inputs import (
    VERSIONS,
    random_vectors,
    write_events,
    write_vectors,
)
from models.protocol import EvaluationConfig, RollingConfig


@pytest.fixture(scope="session")
def tables(spark, tmp_path_factory):
    """(lake, the samples rows as Spark reads them indexed by sample_id, the item vectors written)."""
    tmp = tmp_path_factory.mktemp("model-data")
    path = tmp / "c.yaml"
    path.write_text(
        json.dumps(
            {
                "spark": {"master": "local[2]", "shuffle_partitions": 2},
                "lake": {"uri": str(tmp / "lake")},
                "source": {"kind": "movielens", "movielens": {"path": str(tmp)}},
                "features": {
                    "history_length": 4,
                    "long_history_length": 8,
                    "buckets": 6,
                    "top_k": 2,
                    "encoder_versions": VERSIONS,
                    "split": {"method": "leave_last_out"},
                },
            }
        )
    )
    cfg = load_config(path)
    lake = Lake(cfg.lake)
    rng = np.random.default_rng(2)
    events = pd.DataFrame(
        {
            "user_id": rng.integers(1, 9, 150),
            "item_id": rng.integers(1, 30, 150),
            "event_time": pd.Timestamp("2024-01-01", tz="UTC") + pd.to_timedelta(rng.integers(0, 5 * 86_400, 150), unit="s"),
            "label": rng.integers(0, 2, 150),
        }
    ).drop_duplicates(["user_id", "item_id", "event_time"])
    vectors = random_vectors(range(1, 30), {"text": 4, "image": 3, "fused": 7}, missing={"image": {1, 2, 3}})
    write_events(spark, lake, events)
    write_vectors(spark, lake, vectors)
    build_features(spark, cfg, lake, progress=lambda _: None)
    spark_rows = lake.read(spark, "samples").toPandas().set_index("sample_id")
    return lake, spark_rows, vectors


TINY_PROTOCOL = EvaluationConfig(rolling=RollingConfig(boundaries=(0.5, 0.7, 0.85), min_test_users=2), bootstrap_resamples=50)


def evaluation(lake, directory=None):
    """The tiny lake's `Evaluation` under `TINY_PROTOCOL` (or one of tables under `directory`)."""
    from models.experiment import DataSource, Evaluation

    root = directory or lake
    return Evaluation(
        DataSource(
            str(root / "samples") if directory else lake.uri("samples"),
            str(root / "item_embeddings") if directory else lake.uri("item_embeddings"),
            evaluation=TINY_PROTOCOL,
        ),
        progress=lambda _: None,
    )
