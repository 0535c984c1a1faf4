"""Runs: a table's readable version is the one the last complete run of a stage writing it left."""

from __future__ import annotations

import pytest

from dmf_features.infra.config import LakeConfig
from dmf_features.infra.lake import Lake
from dmf_features.infra.runs import IncompleteRunError, complete_version, stage_runs

pytestmark = pytest.mark.e2e


def test_readers_see_only_the_versions_of_complete_runs(spark, lake):
    numbers = spark.range(3).selectExpr("id")
    assert lake.complete_version("a") is None and complete_version(lake.root, "a") is None  # no table, no runs
    lake.write(numbers, "a")
    assert lake.complete_version("a") == 0 and complete_version(lake.root, "a") is None  # no run writes it: the latest

    with pytest.raises(RuntimeError, match="killed"), lake.stage_run("stage", "all dates", ["b", "c"]):
        lake.write(numbers, "b")
        raise RuntimeError("killed between the tables of one run")
    with pytest.raises(IncompleteRunError, match="no run that writes it has completed.*run `dmf stage` again"):
        lake.complete_version("b")

    with lake.stage_run("stage", "all dates", ["b", "c"]) as read:
        read.update({"a": 0, "absent": None})
        lake.write(numbers, "b")
        lake.write(numbers, "c")
    assert (lake.complete_version("b"), lake.complete_version("c")) == (1, 0)

    with pytest.raises(RuntimeError), lake.stage_run("stage", "all dates", ["b", "c"]):
        lake.write(numbers, "b")  # the next run commits `b`, then dies before `c`
        raise RuntimeError
    assert lake.version("b") == 2 and (lake.complete_version("b"), lake.complete_version("c")) == (1, 0)

    complete = [r for r in stage_runs(lake.root) if r.status == "complete"]
    assert [(r.produced, r.read) for r in complete] == [({"b": 1, "c": 0}, {"a": 0})]


def test_overlapping_runs_each_record_their_own_commit_and_readers_get_the_newest(spark, lake):
    """Two ingests of different days at once: each records the version it committed (not the other's),
    and readers get the newer one, which holds both days."""
    other = Lake(LakeConfig(uri=lake.root, commit_retries=12))  # a second job on the same lake
    day = spark.range(3).selectExpr("id")
    with lake.stage_run("ingest", "day 1", ["events"]):
        lake.write(day, "events")  # v0
        with other.stage_run("ingest", "day 2", ["events"]):
            other.write(day, "events")  # v1, on top of v0
    produced = [r.produced for r in stage_runs(lake.root) if r.status == "complete"]
    assert produced == [{"events": 1}, {"events": 0}]  # the day-2 run finished first
    assert lake.complete_version("events") == 1
