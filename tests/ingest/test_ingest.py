"""The ingest stage end to end: real Spark, real Delta, a tiny MovieLens folder full of bad input."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from pyspark.sql import functions as F

from dmf_features.infra.config import load_config
from dmf_features.infra.dates import DateScope
from dmf_features.infra.lake import Lake
from dmf_features.infra.spark import submit_options
from dmf_features.ingest import IngestError, ingest
from dmf_features.testing import movielens_files as fx

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def cfg(tmp_path):
    data = fx.write_movielens(tmp_path / "movielens")
    config = tmp_path / "test.yaml"
    config.write_text(f"""
spark: {{master: "local[2]", shuffle_partitions: 4, driver_memory: 2g, short_jobs: true}}
lake: {{uri: {tmp_path / "lake"}}}
source: {{kind: movielens, movielens: {{path: {data}, posters: {data / "posters"}}}}}
ingest: {{max_quarantined_share: 0.5}}  # a tiny folder full of planted bad input
quality: {{results_dir: {tmp_path / "validation"}}}
""")
    return load_config(config)


def table(spark, lake, name, *order):
    return [r.asDict() for r in lake.read(spark, name).orderBy(*order).collect()]


def test_bad_records_are_quarantined_with_reasons_and_counts_reconcile(spark, cfg):
    lake = Lake(cfg.lake)
    report = ingest(spark, cfg, lake, progress=lambda _: None)

    assert all(i.balanced for i in report.inputs), report.inputs
    ratings = next(i for i in report.inputs if i.name == "ratings.csv")
    assert ratings.rows_in == 8 + len(fx.good_ratings())
    assert ratings.kept == len(fx.good_ratings()) + 1  # + the first of the duplicated pair
    assert report.table_rows["events"] == ratings.kept

    reasons = {r["record_id"]: r["reason"] for r in table(spark, lake, "quarantine", "record_id")}
    assert reasons == fx.PLANTED
    assert all(r["detail"] and r["raw"] for r in table(spark, lake, "quarantine", "record_id"))

    items = {r["item_id"]: r for r in table(spark, lake, "items", "item_id")}
    assert len(items) == fx.MOVIES  # a missing or corrupt poster loses no item
    assert items[fx.MISSING_POSTER]["image_status"] == "missing" and items[fx.MISSING_POSTER]["image"] is None
    assert items[fx.CORRUPT_POSTER]["image_status"] == "corrupt"
    assert items[fx.PNG_AS_JPG]["image_status"] == "ok"
    assert items[1]["title"] == "The Movie 1" and items[1]["year"] == 1991
    assert items[1]["genres"] == ["Drama", "Comedy"] and items[1]["tags"] == ["funny"]
    assert items[7]["title"] == "The Movie 7"  # the first line of a duplicated movieId wins

    events = lake.read(spark, "events")
    assert events.where("label not in (0, 1) or rating < 0.5 or rating > 5").count() == 0
    assert {r.date for r in events.select("date").distinct().collect()} == {fx.DAY1.date(), fx.DAY2.date()}


def test_reingest_gives_identical_tables_and_commits_nothing_new(spark, cfg):
    lake = Lake(cfg.lake)
    ingest(spark, cfg, lake, progress=lambda _: None)
    before = {
        t: table(spark, lake, t, *cols)
        for t, cols in (("items", ["item_id"]), ("events", ["user_id", "item_id", "event_time"]), ("quarantine", ["record_id"]))
    }
    versions = {t: lake.version(t) for t in before}
    ingest(spark, cfg, lake, progress=lambda _: None)
    after = {
        t: table(spark, lake, t, *cols)
        for t, cols in (("items", ["item_id"]), ("events", ["user_id", "item_id", "event_time"]), ("quarantine", ["record_id"]))
    }
    assert after == before
    assert lake.version("items") == versions["items"] and lake.version("quarantine") == versions["quarantine"]


def test_strict_mode_fails_and_writes_nothing(spark, cfg):
    lake = Lake(cfg.lake)
    strict = cfg.model_copy(update={"ingest": cfg.ingest.model_copy(update={"strict": True})})
    with pytest.raises(IngestError, match=r"(?s)strict mode: bad records, nothing written.*duplicate of line 8"):
        ingest(spark, strict, lake, progress=lambda _: None)
    assert lake.tables() == []


def test_a_dated_run_replaces_only_its_day(spark, cfg, tmp_path):
    lake = Lake(cfg.lake)
    day1, day2 = fx.DAY1.date(), fx.DAY2.date()
    first = ingest(spark, cfg, lake, DateScope(date=day1), progress=lambda _: None)
    dates = {r.date for r in lake.read(spark, "events").select("date").distinct().collect()}
    assert dates == {day1}
    assert next(i for i in first.inputs if i.name == "ratings.csv").other_dates > 0

    ingest(spark, cfg, lake, DateScope(date=day2), progress=lambda _: None)
    full = lake.read(spark, "events").count()
    assert full == len(fx.good_ratings()) + 1

    ratings = Path(cfg.source.movielens.path) / "ratings.csv"  # a corrected day-1 rating arrives
    lines = ratings.read_text().splitlines()
    victim = next(i for i, line in enumerate(lines[9:], 9) if int(line.split(",")[3]) < fx.DAY2.timestamp())
    user, movie, _, ts = lines[victim].split(",")
    lines[victim] = f"{user},{movie},0.5,{ts}"
    ratings.write_text("\n".join(lines) + "\n")
    ingest(spark, cfg, lake, DateScope(date=day1), progress=lambda _: None)
    events = lake.read(spark, "events")
    assert events.count() == full
    changed = events.where(F.col("user_id") == int(user)).where(F.col("item_id") == int(movie)).first()
    assert changed.rating == 0.5 and changed.label == 0


def test_spark_submit_runs_the_ingest_job(cfg, tmp_path):
    venv_bin = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{venv_bin}:{os.environ['PATH']}", "PYSPARK_PYTHON": sys.executable}
    result = subprocess.run(
        [
            str(venv_bin / "spark-submit"),
            *submit_options(cfg.spark),
            "--master",
            "local[1]",
            "jobs/ingest.py",
            "--config",
            str(cfg.source_file),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "quarantined by reason:" in result.stdout and "unknown_item" in result.stdout
    strict = subprocess.run(
        [
            str(venv_bin / "spark-submit"),
            *submit_options(cfg.spark),
            "jobs/ingest.py",
            "--config",
            str(cfg.source_file),
            "--strict",
            "--set",
            f"lake.uri={tmp_path / 'strict-lake'}",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    # spark-submit hands the Python driver's stderr to its stdout
    assert strict.returncode == 1 and "strict mode" in strict.stdout + strict.stderr, strict.stderr[-3000:]


def test_synthetic_source_is_ingested_and_every_planted_row_is_quarantined(spark, tmp_path):
    import json

    config = tmp_path / "synthetic.yaml"
    config.write_text(f"""
spark: {{master: "local[2]", shuffle_partitions: 4}}
lake: {{uri: {tmp_path / "lake"}}}
source:
  kind: synthetic
  synthetic: {{output: {tmp_path / "gen"}, users: 200, items: 80, events: 5000, days: 20, image_size: 24,
               bad_row_fraction: 0.004}}
""")
    cfg = load_config(config)
    lake = Lake(cfg.lake)
    report = ingest(spark, cfg, lake, progress=lambda _: None)
    planted = json.loads((tmp_path / "gen" / "manifest.json").read_text())["planted"]
    ratings = next(i for i in report.inputs if i.name == "ratings.csv")
    assert ratings.balanced and ratings.rows_in == 5000
    assert ratings.quarantined == {
        "duplicate_event": planted["duplicate"],
        "null_key": planted["empty_user_id"],
        "out_of_range": planted["rating_out_of_range"] + planted["timestamp_before_1990"],
        "unknown_item": planted["unknown_movie_id"],
        "unparseable_line": planted["garbage"],
    }
    statuses = {r.image_status: r["count"] for r in lake.read(spark, "items").groupBy("image_status").count().collect()}
    assert statuses == {"ok": 78, "missing": 1, "corrupt": 1}


def test_a_fixed_record_leaves_the_quarantine_and_the_report_counts_it_resolved(spark, cfg):
    lake = Lake(cfg.lake)
    ingest(spark, cfg, lake, progress=lambda _: None)
    ratings = Path(cfg.source.movielens.path) / "ratings.csv"
    lines = ratings.read_text().splitlines()
    assert lines[4].startswith("2,3,9.5,")  # ratings.csv:5, out_of_range
    lines[4] = lines[4].replace(",9.5,", ",4.5,")
    ratings.write_text("\n".join(lines) + "\n")

    report = ingest(spark, cfg, lake, progress=lambda _: None)
    assert {i.name: i.resolved for i in report.inputs}["ratings.csv"] == 1
    assert "resolved" in report.render()
    quarantined = {r["record_id"] for r in table(spark, lake, "quarantine", "record_id")}
    assert quarantined == set(fx.PLANTED) - {"ratings.csv:5"}
    assert lake.read(spark, "events").where("user_id = 2 and item_id = 3 and rating = 4.5").count() == 1
    again = ingest(spark, cfg, lake, progress=lambda _: None)  # nothing left to resolve: no commit
    assert sum(i.resolved for i in again.inputs) == 0
    assert next(c for c in again.commits if c.operation == "delete").version is None
