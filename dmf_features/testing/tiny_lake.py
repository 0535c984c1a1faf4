"""A tiny built lake (`events`, random item vectors, and `samples` from the real feature job) with the
config that points at it, MLflow included: what training and comparing models needs, built in seconds
without the real data, for checks that must not depend on `make demo` (the model-quality benchmark's
`--tiny` size)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
from pyspark.sql import SparkSession

from dmf_features.features.stage import build_features
from dmf_features.infra.config import load_config
from dmf_features.infra.lake import Lake
from dmf_features.testing.feature_inputs import VERSIONS, random_vectors, write_events, write_vectors


def build_tiny_lake(spark: SparkSession, folder: Path, users: int = 8, items: int = 30, events: int = 150, seed: int = 2) -> Path:
    """Write `folder/tiny.yaml` and the lake, MLflow store and reports it names, all under `folder`;
    returns the config's path. The evaluation protocol is sized for so few users."""
    config = folder / "tiny.yaml"
    config.write_text(
        json.dumps(
            {
                "root": str(folder),
                "spark": {"master": "local[2]", "shuffle_partitions": 2, "short_jobs": True},
                "lake": {"uri": str(folder / "lake")},
                "mlflow": {"tracking_uri": f"sqlite:///{folder / 'mlflow.db'}", "experiment": "tiny"},
                "source": {"kind": "movielens", "movielens": {"path": str(folder)}},
                "features": {
                    "history_length": 4,
                    "long_history_length": 8,
                    "buckets": 6,
                    "top_k": 2,
                    "encoder_versions": VERSIONS,
                    "split": {"method": "leave_last_out"},
                },
                "evaluation": {"rolling": {"boundaries": [0.5, 0.7, 0.85], "min_test_users": 2}, "bootstrap_resamples": 50},
            }
        )
    )
    cfg = load_config(config)
    lake = Lake(cfg.lake)
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "user_id": rng.integers(1, users + 1, events),
            "item_id": rng.integers(1, items + 1, events),
            "event_time": pd.Timestamp("2024-01-01", tz="UTC") + pd.to_timedelta(rng.integers(0, 5 * 86_400, events), unit="s"),
            "label": rng.integers(0, 2, events),
        }
    )
    write_events(spark, lake, frame.drop_duplicates(["user_id", "item_id", "event_time"]))
    write_vectors(spark, lake, tiny_vectors(items))
    build_features(spark, cfg, lake, progress=lambda _: None)
    return config


def copy_tiny_lake(config: Path, folder: Path) -> Path:
    """A copy of the lake `build_tiny_lake` wrote with `config` (its whole folder: tables, config) under
    `folder`, its config pointing at the copy; returns the copy's config. Delta tables copy as folders
    (their log names files relative to the table), so tests that change a lake can share one build."""
    source = config.parent
    shutil.copytree(source, folder, dirs_exist_ok=True)
    copied = folder / config.name
    copied.write_text(config.read_text().replace(str(source), str(folder)))
    return copied


def tiny_vectors(items: int = 30) -> dict:
    """The item vectors `build_tiny_lake` writes (seeded): items 1, 2 and 3 have no image vector."""
    return random_vectors(range(1, items + 1), {"text": 4, "image": 3, "fused": 7}, missing={"image": {1, 2, 3}})
