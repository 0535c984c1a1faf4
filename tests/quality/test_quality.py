"""Data-quality gates: real Great Expectations suites on real Spark over real Delta tables."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from dmf_features import schemas
from dmf_features.infra.config import IngestConfig
from dmf_features.infra.lake import spark_schema
from dmf_features.quality import validate_tables
from dmf_features.quality.runner import MISSING_TABLE

pytestmark = pytest.mark.e2e

INGEST = IngestConfig()
START = dt.datetime(2024, 3, 1, tzinfo=dt.UTC)


def item_rows(n: int = 30) -> list[tuple]:
    rows = []
    for i in range(1, n + 1):
        ok = i % 3 != 0
        rows.append(
            (
                i,
                f"Film {i}",
                1950 + i,
                ["Drama"],
                [f"tag{i}"],
                b"\xff\xd8jpeg" if ok else None,
                f"posters/{i}.jpg" if ok else None,
                "ok" if ok else "missing",
                f"sha{i}" if ok else None,
                f"hash{i}",
                "test",
            )
        )
    rows.append((n + 1, "Undated", None, [], [], None, None, "missing", None, f"hash{n + 1}", "test"))
    return rows


def event_rows(n: int = 40) -> list[tuple]:
    rows = []
    for i in range(n):
        when = START + dt.timedelta(hours=7 * i)
        rating = 0.5 + (i % 10) * 0.5
        rows.append((i % 8, 1 + i % 30, when, "rating", rating, int(rating >= INGEST.click_threshold), "test", when.date()))
    return rows


def write_tables(spark, lake, items: list[tuple], events: list[tuple]) -> None:
    lake.write(spark.createDataFrame(items, spark_schema(schemas.ITEMS)), "items")
    lake.write(spark.createDataFrame(events, spark_schema(schemas.EVENTS)), "events", partition_by=["date"])


def test_clean_tables_pass_and_every_result_is_kept(spark, lake, tmp_path):
    write_tables(spark, lake, item_rows(), event_rows())

    report = validate_tables(spark, lake, ["items", "events"], INGEST, tmp_path / "results")

    assert report.success, report.summary()
    assert report.failures() == []
    assert len(report.results) == 7 + 8
    assert [r.expectation for r in report.results[:2]] == [
        "expect_column_values_to_not_be_null",
        "expect_column_values_to_be_unique",
    ]  # in the suite's order
    key = next(r for r in report.results if r.expectation == "expect_compound_columns_to_be_unique")
    assert key.column_name == "user_id, item_id, event_time, event_type"
    assert key.observed == "0 of 40 rows unexpected"
    count = next(r for r in report.results if r.table == "items" and r.expectation.startswith("expect_table_row"))
    assert (count.observed, count.table_version) == ("31", 0)
    summary = report.summary()
    assert "PASSED" in summary and "items v0: 7 passed, 0 failed" in summary and "events v0: 8 passed" in summary

    stored = lake.read(spark, "validation_results").where(f"run_id = '{report.run_id}'").collect()
    assert len(stored) == len(report.results) and all(r.success for r in stored)
    assert {(r.table_name, r.table_version) for r in stored} == {("items", 0), ("events", 0)}
    assert lake.delta("validation_results").metadata().partition_columns == ["table_name"]

    document = json.loads((tmp_path / "results" / f"{report.run_id}.json").read_text())
    assert document["run_id"] == report.run_id and document["success"] is True
    assert [(d["table_name"], d["expectation"], d["column_name"]) for d in document["results"]] == [
        (r.table, r.expectation, r.column_name) for r in report.results
    ]


def test_planted_problems_fail_and_the_report_names_them(spark, lake, tmp_path):
    items = item_rows()
    items[4] = (*items[4][:1], None, *items[4][2:])  # a null title
    items[7] = (*items[7][:7], "blurry", *items[7][8:])  # an unknown image status
    events = event_rows()
    events.append(events[5])  # a duplicated event key
    events[11] = (*events[11][:4], 9.0, *events[11][5:])  # a rating above rating_max
    write_tables(spark, lake, items, events)

    report = validate_tables(spark, lake, ["items", "events"], INGEST, tmp_path / "results")

    assert not report.success
    failed = {(r.table, r.expectation, r.column_name): r for r in report.failures()}
    assert set(failed) == {
        ("items", "expect_column_values_to_not_be_null", "title"),
        ("items", "expect_column_values_to_be_in_set", "image_status"),
        ("events", "expect_column_values_to_be_between", "rating"),
        ("events", "expect_compound_columns_to_be_unique", "user_id, item_id, event_time, event_type"),
    }
    assert failed["items", "expect_column_values_to_not_be_null", "title"].details == "1 null value"
    assert failed["items", "expect_column_values_to_be_in_set", "image_status"].details == ('1 unexpected value, e.g. ["blurry"]')
    rating = failed["events", "expect_column_values_to_be_between", "rating"]
    assert (rating.observed, rating.details) == ("1 of 41 rows unexpected", "1 unexpected value, e.g. [9.0]")
    duplicate = failed["events", "expect_compound_columns_to_be_unique", "user_id, item_id, event_time, event_type"]
    assert duplicate.observed == "2 of 41 rows unexpected" and '"user_id": 5' in duplicate.details

    summary = report.summary()
    assert "FAILED, 4 of 15 expectations failed" in summary
    assert "items v0: 5 passed, 2 failed" in summary and "events v0: 6 passed, 2 failed" in summary
    assert "events.rating: expect_column_values_to_be_between: 1 of 41 rows unexpected; 1 unexpected value, e.g. [9.0]" in summary
    assert "events.(user_id, item_id, event_time, event_type): expect_compound_columns_to_be_unique" in summary

    stored = lake.read(spark, "validation_results").where("not success").collect()
    assert {(r.table_name, r.expectation, r.column_name) for r in stored} == set(failed)


def test_a_missing_table_is_a_reported_failure(spark, lake, tmp_path):
    report = validate_tables(spark, lake, ["events"], INGEST, tmp_path / "results")

    assert not report.success
    (missing,) = report.failures()
    assert (missing.table, missing.expectation, missing.table_version) == ("events", MISSING_TABLE, None)
    assert "events (missing): 0 passed, 1 failed" in report.summary()
    assert "table 'events' does not exist" in report.summary()
    (stored,) = lake.read(spark, "validation_results").collect()
    assert (stored.table_name, stored.success, stored.table_version) == ("events", False, None)
    assert json.loads(report.json_path.read_text())["success"] is False

    again = validate_tables(spark, lake, ["events"], INGEST, tmp_path / "results")
    assert report.run_id < again.run_id  # run ids sort by time
    assert again.results_version == report.results_version + 1  # each run appends
    assert sorted(p.name for p in (tmp_path / "results").iterdir()) == [f"{report.run_id}.json", f"{again.run_id}.json"]


def test_a_table_without_a_suite_is_refused_before_anything_runs(spark, lake, tmp_path):
    with pytest.raises(ValueError, match="no expectation suite for table 'ratings'"):
        validate_tables(spark, lake, ["items", "ratings"], INGEST, tmp_path / "results")
    assert not lake.exists("validation_results") and not (tmp_path / "results").exists()
