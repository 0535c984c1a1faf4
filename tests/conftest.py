"""Shared fixtures: one real local Spark session for the whole run, a fresh lake per test, and a tiny
built lake (built once, copied for each test that uses it)."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

import pytest

from dmf_features.infra.config import LakeConfig, SparkConfig
from dmf_features.infra.lake import Lake
from dmf_features.infra.spark import get_spark
from dmf_features.testing.tiny_lake import build_tiny_lake, copy_tiny_lake

# Airflow reads its home when it is first imported: in-process Airflow (DagBag, hooks) gets a fresh,
# throwaway one per test run, never the developer's. Tests that run Airflow commands make their own.
os.environ["AIRFLOW_HOME"] = tempfile.mkdtemp(prefix="dmf-test-airflow-")
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
atexit.register(shutil.rmtree, os.environ["AIRFLOW_HOME"], ignore_errors=True)

TEST_SPARK = SparkConfig(
    master="local[2]", shuffle_partitions=4, driver_memory="2g", short_jobs=True, conf={"spark.ui.enabled": "false"}
)


@pytest.fixture(scope="session")
def spark():
    session = get_spark(TEST_SPARK)
    yield session
    session.stop()


@pytest.fixture(scope="session")
def built_tiny_lake(spark, tmp_path_factory) -> Path:
    """The config of a tiny lake (events, item vectors, samples) built once per run: use `tiny_lake`."""
    return build_tiny_lake(spark, tmp_path_factory.mktemp("tiny-lake"), users=8, items=30, events=300)


@pytest.fixture
def tiny_lake(built_tiny_lake, tmp_path) -> Path:
    """A test's own copy of the tiny lake, free to change: the config that points at it."""
    return copy_tiny_lake(built_tiny_lake, tmp_path)


@pytest.fixture
def lake(tmp_path) -> Lake:
    return Lake(LakeConfig(uri=str(tmp_path / "lake"), commit_retries=12))


# `make test` runs on two pytest-xdist workers (`--dist loadscope --no-loadscope-reorder`): each module is
# one unit of work (its module fixtures are built once), handed out in collection order. The longest
# units go first (README, "Testing"): one of them started last would finish minutes after the rest. A
# worker queues the next unit while it still runs its last two tests, so a short unit follows the longest.
LONGEST_FIRST = (
    "tests/dags/test_dag_runs.py",
    "tests/reliability/test_standalone_cluster.py",
    "tests/dags/test_manual_runs.py",
    "tests/reliability/test_crashes.py",
    "tests/reliability/test_concurrency.py",
    "tests/bench/test_benchmarks.py",
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """`pytest -m "not e2e"` is the fast suite: a test that starts Spark without the marker is a mistake.
    The longest modules go first (`LONGEST_FIRST`); the order within a module is kept."""
    unmarked = [
        item.nodeid for item in items if "spark" in getattr(item, "fixturenames", ()) and not item.get_closest_marker("e2e")
    ]
    if unmarked:
        raise pytest.UsageError("tests that use the `spark` fixture must be marked e2e: " + ", ".join(unmarked))
    rank = {module: i for i, module in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::")[0], len(rank)))  # stable: the rest keep their order
