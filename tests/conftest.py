"""Shared fixtures: one real local Spark session for the whole run, a fresh lake per test."""

from __future__ import annotations

import pytest

from dmf_features.config import LakeConfig, SparkConfig
from dmf_features.lake import Lake
from dmf_features.spark import get_spark

TEST_SPARK = SparkConfig(master="local[2]", shuffle_partitions=4, driver_memory="2g",
                         conf={"spark.ui.enabled": "false"})


@pytest.fixture(scope="session")
def spark():
    session = get_spark(TEST_SPARK)
    yield session
    session.stop()


@pytest.fixture
def lake(tmp_path) -> Lake:
    return Lake(LakeConfig(uri=str(tmp_path / "lake"), commit_retries=12))
