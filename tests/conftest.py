"""Shared fixtures: one real local Spark session for the whole run, a fresh lake per test."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

import pytest

from dmf_features.infra.config import LakeConfig, SparkConfig
from dmf_features.infra.lake import Lake
from dmf_features.infra.spark import get_spark

# Airflow reads its home when it is first imported: in-process Airflow (DagBag, hooks) gets a fresh,
# throwaway one per test run, never the developer's. Tests that run Airflow commands make their own.
os.environ["AIRFLOW_HOME"] = tempfile.mkdtemp(prefix="dmf-test-airflow-")
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
atexit.register(shutil.rmtree, os.environ["AIRFLOW_HOME"], ignore_errors=True)

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
