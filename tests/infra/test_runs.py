"""Runs: a table's readable version is the one the last complete run of a stage writing it left."""

from __future__ import annotations

import pytest

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
