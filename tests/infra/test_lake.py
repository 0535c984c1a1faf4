"""The lake layer on real Spark and real Delta tables (delta-rs)."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from deltalake import DeltaTable
from pyspark.sql import functions as F

from dmf_features.infra.config import LakeConfig
from dmf_features.infra.lake import Lake, LakeError, SchemaMismatchError

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]


def rows(df, *order):
    return [tuple(r) for r in df.orderBy(*order).collect()]


def events(spark, data):
    return spark.createDataFrame(data, "user_id long, item_id long, rating double").withColumn(
        "date", F.to_date(F.lit("2024-01-01")) + (F.col("user_id") % 3).cast("int")
    )


def test_append_then_overwrite_are_versions_with_time_travel(spark, lake):
    first = lake.write(events(spark, [(1, 10, 4.0), (2, 11, 3.0)]), "ev", partition_by=["date"])
    second = lake.write(events(spark, [(3, 12, 5.0)]), "ev")
    assert (first.version, second.version) == (0, 1)
    assert first.rows_written == 2 and second.rows_written == 1
    assert rows(lake.read(spark, "ev").select("user_id"), "user_id") == [(1,), (2,), (3,)]

    third = lake.write(events(spark, [(9, 99, 1.0)]), "ev", mode="overwrite")
    assert third.version == 2
    assert rows(lake.read(spark, "ev").select("user_id"), "user_id") == [(9,)]
    assert rows(lake.read(spark, "ev", version=1).select("user_id"), "user_id") == [(1,), (2,), (3,)]
    history = DeltaTable(lake.uri("ev")).history()
    assert [h["version"] for h in history] == [2, 1, 0]

    time.sleep(0.05)
    when = dt.datetime.now(dt.UTC)
    lake.write(events(spark, [(4, 1, 2.0)]), "ev")
    assert rows(lake.read(spark, "ev", as_of=when).select("user_id"), "user_id") == [(9,)]


def test_partition_columns_come_back_typed_and_filters_prune(spark, lake):
    lake.write(events(spark, [(u, u, 1.0) for u in range(9)]), "ev", partition_by=["date"])
    df = lake.read(spark, "ev")
    assert dict(df.dtypes)["date"] == "date"
    expected = {(u, dt.date(2024, 1, 1) + dt.timedelta(days=u % 3)) for u in range(9)}
    assert set(map(tuple, df.select("user_id", "date").collect())) == expected

    pruned = lake.read(spark, "ev", partition_filters=[("date", "=", dt.date(2024, 1, 2))])
    assert sorted(r.user_id for r in pruned.collect()) == [1, 4, 7]
    assert len(pruned.inputFiles()) < len(df.inputFiles())
    with pytest.raises(LakeError, match="not a partition column"):
        lake.read(spark, "ev", partition_filters=[("rating", "=", 1.0)])


def test_overwrite_of_given_partitions_keeps_the_others(spark, lake):
    lake.write(events(spark, [(u, u, 1.0) for u in range(6)]), "ev", partition_by=["date"])
    day2 = dt.date(2024, 1, 2)
    replacement = events(spark, [(100, 1, 5.0)]).withColumn("date", F.lit(day2))
    lake.write(replacement, "ev", mode="overwrite", replace_partitions=[("date", "in", [day2])])
    got = rows(lake.read(spark, "ev").select("user_id", "date"), "user_id")
    assert [u for u, d in got] == [0, 2, 3, 5, 100]
    assert all(d == day2 for u, d in got if u == 100)

    outside = events(spark, [(7, 1, 5.0)])  # user 7 -> 2024-01-02, not the replaced day 3
    with pytest.raises(LakeError, match="outside the partitions"):
        lake.write(outside, "ev", mode="overwrite", replace_partitions=[("date", "=", dt.date(2024, 1, 3))])


def test_merge_upserts_and_commits_nothing_when_nothing_changed(spark, lake):
    schema = "item_id long, title string, year int"
    lake.merge(spark.createDataFrame([(1, "a", 2000), (2, "b", 2001), (3, "c", None)], schema), "items", ["item_id"])
    source = spark.createDataFrame([(2, "B", 2001), (3, "c", None), (4, "d", 2004)], schema)
    result = lake.merge(source, "items", ["item_id"])
    assert result.rows_changed == 2 and result.files_removed == 1
    assert rows(lake.read(spark, "items"), "item_id") == [(1, "a", 2000), (2, "B", 2001), (3, "c", None), (4, "d", 2004)]

    again = lake.merge(source, "items", ["item_id"])
    assert not again.committed and again.rows_changed == 0
    assert lake.version("items") == 1

    ignored = lake.merge(spark.createDataFrame([(1, "zzz", 1), (5, "e", 5)], schema), "items", ["item_id"], when_matched="ignore")
    assert ignored.rows_changed == 1
    assert rows(lake.read(spark, "items").where("item_id in (1, 5)"), "item_id") == [(1, "a", 2000), (5, "e", 5)]

    with pytest.raises(LakeError, match="duplicate keys"):
        lake.merge(spark.createDataFrame([(7, "x", 1), (7, "y", 2)], schema), "items", ["item_id"])


def test_merge_into_partitioned_table_moves_rows_between_partitions(spark, lake):
    lake.write(events(spark, [(0, 1, 1.0), (1, 1, 1.0)]), "ev", partition_by=["date"])
    moved = events(spark, [(0, 1, 2.0)]).withColumn("date", F.to_date(F.lit("2024-02-01")))
    lake.merge(moved, "ev", ["user_id", "item_id"])
    got = rows(lake.read(spark, "ev").select("user_id", "rating", "date"), "user_id")
    assert got == [(0, 2.0, dt.date(2024, 2, 1)), (1, 1.0, dt.date(2024, 1, 2))]


def test_batch_id_makes_a_retried_write_idempotent(spark, lake):
    df = events(spark, [(1, 1, 1.0), (2, 2, 2.0)])
    assert lake.write(df, "ev", batch_id="2024-01-01").committed
    retry = lake.write(df, "ev", batch_id="2024-01-01")
    assert not retry.committed and "already committed" in retry.skipped_reason
    assert lake.read(spark, "ev").count() == 2
    assert lake.write(df, "ev", batch_id="2024-01-02").committed
    assert lake.read(spark, "ev").count() == 4


def test_schema_mismatch_names_the_columns_and_evolution_is_opt_in(spark, lake):
    lake.write(events(spark, [(1, 1, 1.0)]), "ev", partition_by=["date"])
    wider = events(spark, [(2, 2, 2.0)]).withColumn("device", F.lit("ios"))
    with pytest.raises(SchemaMismatchError, match=r"unexpected columns \['device'\]"):
        lake.write(wider, "ev")
    retyped = events(spark, [(2, 2, 2.0)]).withColumn("rating", F.lit("high"))
    with pytest.raises(SchemaMismatchError, match="rating: table double vs write string"):
        lake.write(retyped, "ev", schema_mode="merge")
    with pytest.raises(SchemaMismatchError, match=r"missing columns \['rating'\]"):
        lake.write(events(spark, [(2, 2, 2.0)]).drop("rating"), "ev")

    lake.write(wider, "ev", schema_mode="merge")
    got = rows(lake.read(spark, "ev").select("user_id", "device"), "user_id")
    assert got == [(1, None), (2, "ios")]


def test_a_merge_that_loses_the_race_to_create_its_table_merges_into_the_winners(spark, lake, monkeypatch):
    """Two first merges (two ingests on an empty lake): the one whose create fails must not append its rows."""
    schema = "item_id long, title string"
    write_files = Lake._write_files

    def other_writer_first(self, df, table, partition_by):
        if self is lake and not lake.exists(table):
            Lake(LakeConfig(uri=lake.root)).merge(spark.createDataFrame([(1, "a"), (3, "c")], schema), table, ["item_id"])
        return write_files(self, df, table, partition_by)

    monkeypatch.setattr(Lake, "_write_files", other_writer_first)
    result = lake.merge(spark.createDataFrame([(1, "a"), (2, "b")], schema), "items", ["item_id"])
    assert rows(lake.read(spark, "items"), "item_id") == [(1, "a"), (2, "b"), (3, "c")]
    assert result.version == 1 and result.rows_changed == 1


def test_two_processes_appending_concurrently_both_land(lake, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "dmf_features.testing.lake_writer", lake.root, "ev", tag, "4"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for tag in ("a", "b")
    ]
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    table = DeltaTable(lake.uri("ev"))
    assert table.version() == 7  # 8 commits, none lost
    rows_per_file = [a["num_records"] for a in __import__("pyarrow").table(table.get_add_actions(flatten=True)).to_pylist()]
    assert sum(rows_per_file) == 800


def test_killed_before_commit_leaves_previous_version_readable(spark, lake):
    lake.write(spark.range(5).selectExpr("id", "'x' as tag", "0 as batch"), "ev")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    crashed = subprocess.run(
        [sys.executable, "-m", "dmf_features.testing.lake_writer", lake.root, "ev", "y", "1", "--crash-before-commit"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert crashed.returncode == -9, crashed.stdout + crashed.stderr
    orphans = [p for p in Path(lake.uri("ev")).rglob("*.parquet")]
    assert len(orphans) > 1  # the killed job's files are there...
    assert lake.version("ev") == 0  # ...but not committed
    assert lake.read(spark, "ev").count() == 5

    removed = lake.vacuum("ev", retention_hours=0)
    assert removed and all("data-" in p for p in removed)
    assert lake.read(spark, "ev").count() == 5


def test_optimize_compacts_and_history_lists_commits(spark, lake):
    for i in range(3):
        lake.write(spark.range(10).selectExpr("id", f"{i} as batch"), "t")
    metrics = lake.optimize("t")
    assert metrics["numFilesRemoved"] >= 3
    assert lake.read(spark, "t").count() == 30
    ops = [h["operation"] for h in lake.history("t")]
    assert ops[0] == "OPTIMIZE" and ops.count("WRITE") >= 1


def test_tables_use_the_plain_protocol_and_carry_file_statistics(spark, lake):
    df = events(spark, [(1, 10, 4.0), (2, 11, 3.0), (3, 12, None)]).withColumn(
        "event_time", F.to_timestamp(F.lit("2024-01-01 10:00:00.123456"))
    )
    lake.write(df, "ev", partition_by=["date"])
    protocol = DeltaTable(lake.uri("ev")).protocol()
    assert (protocol.min_reader_version, protocol.min_writer_version) == (1, 2)
    assert not protocol.reader_features and not protocol.writer_features
    log = (Path(lake.uri("ev")) / "_delta_log" / "00000000000000000000.json").read_text()
    import json

    adds = [json.loads(line)["add"] for line in log.splitlines() if '"add"' in line]
    stats = [json.loads(a["stats"]) for a in adds]
    assert sum(s["numRecords"] for s in stats) == 3
    by_user = {s["minValues"]["user_id"]: s for s in stats}
    assert by_user[3]["nullCount"]["rating"] == 1
    # milliseconds, widened so that the true value lies inside [min, max]
    assert by_user[1]["minValues"]["event_time"] == "2024-01-01T10:00:00.123Z"
    assert by_user[1]["maxValues"]["event_time"] == "2024-01-01T10:00:00.124Z"
    assert all(a["partitionValues"]["date"].startswith("2024-01-0") for a in adds)
