"""The tiny lake the models' end-to-end tests read: built once per run with Spark (events, item
vectors, then `build_features`), since training, tracking, serving and recommending all start from it."""

from __future__ import annotations

import pytest

from dmf_features.infra.config import load_config
from dmf_features.infra.lake import Lake
from dmf_features.testing.tiny_lake import build_tiny_lake, tiny_vectors
from models.protocol import EvaluationConfig, RollingConfig


@pytest.fixture(scope="session")
def tables(spark, tmp_path_factory):
    """(lake, the samples rows as Spark reads them indexed by sample_id, the item vectors written)."""
    config = build_tiny_lake(spark, tmp_path_factory.mktemp("model-data"), items=29)
    lake = Lake(load_config(config).lake)
    spark_rows = lake.read(spark, "samples").toPandas().set_index("sample_id")
    return lake, spark_rows, tiny_vectors(29)


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
