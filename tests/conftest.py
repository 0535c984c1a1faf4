"""Shared fixtures: one real local Spark session for the whole run, a fresh lake per test."""

from __future__ import annotations

import pytest

from dmf_features.infra.config import LakeConfig, SparkConfig
from dmf_features.infra.lake import Lake
from dmf_features.infra.spark import get_spark

TEST_SPARK = SparkConfig(master="local[2]", shuffle_partitions=4, driver_memory="2g", conf={"spark.ui.enabled": "false"})


@pytest.fixture(scope="session")
def spark():
    session = get_spark(TEST_SPARK)
    yield session
    session.stop()


@pytest.fixture
def lake(tmp_path) -> Lake:
    return Lake(LakeConfig(uri=str(tmp_path / "lake"), commit_retries=12))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """`pytest -m "not e2e"` is the fast suite: a test that starts Spark without the marker is a mistake."""
    unmarked = [
        item.nodeid for item in items if "spark" in getattr(item, "fixturenames", ()) and not item.get_closest_marker("e2e")
    ]
    if unmarked:
        raise pytest.UsageError("tests that use the `spark` fixture must be marked e2e: " + ", ".join(unmarked))
