"""The DAGs run by real Airflow 3 (SQLite, a fresh AIRFLOW_HOME) with real `spark-submit` on tiny synthetic
data, through one deployment's life: a backfill run twice by the scheduler, a manual day (`airflow dags
test`), then the training DAG and its gate. (The day of each kind of manual run: test_manual_runs.py.)"""

from __future__ import annotations

import contextlib
import datetime as dt
import sqlite3
import time
from pathlib import Path

import mlflow
import pytest
from deltalake import DeltaTable

from dmf_features.orchestration.services import Services, airflow
from tests.dags.deployment import START, TABLES, Deployment, deploy

pytestmark = pytest.mark.e2e


def test_backfill_twice_then_a_manual_day_then_training_promotes_then_refuses(tmp_path):
    """One deployment through its life: a backfill of two of three days, the same backfill again (nothing
    changes), `airflow dags test` of the remaining day (only its partitions change), then the training
    DAG twice: the first model becomes champion, the second (no better) is refused with its reason."""
    deployment = deploy(tmp_path, days=3)
    day1, day2, day3 = (START + dt.timedelta(days=i) for i in range(3))
    # the scheduler runs a backfill only for an unpaused DAG; unpaused, it would also start the run of
    # the latest complete day (catch-up is off), which this test does not want
    deployment.env["AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE"] = "False"
    airflow(deployment.env, "dags", "reserialize")
    airflow(deployment.env, "dags", "unpause", "dmf_daily")
    services = Services(deployment.env).start()
    try:
        services.wait_until_healthy()
        _backfill(deployment, day2, day3)
        assert deployment.days("events") == deployment.days("samples") == {day2.isoformat(), day3.isoformat()}
        before = {name: deployment.rows(name) for name in TABLES}
        events_version = DeltaTable(str(deployment.lake / "events")).version()

        _backfill(deployment, day2, day3, "--reprocess-behavior", "completed")
        assert DeltaTable(str(deployment.lake / "events")).version() > events_version  # it did run again
        for name in TABLES:
            assert deployment.rows(name) == before[name], f"{name} changed when its days were backfilled again"
    finally:
        services.stop()

    output = deployment.dags_test("dmf_daily", day1.isoformat())
    assert f"processing {day1}" in output
    assert deployment.days("events") == deployment.days("samples") == {d.isoformat() for d in (day1, day2, day3)}
    for name in ("events", "samples"):  # the other days' rows are untouched
        assert [r for r in deployment.rows(name) if repr(day1) not in r] == [r for r in before[name]]

    first = deployment.dags_test("dmf_training")
    assert "dmf version 1: PROMOTED (no champion yet" in first
    second = deployment.dags_test("dmf_training")  # same samples, same seed: not better than the champion
    assert "dmf version 2: REFUSED (AUC" in second and "does not beat the champion (version 1)" in second
    assert "dmf version 2 refused, champion unchanged" in second  # the keep_champion branch ran

    client = mlflow.MlflowClient(deployment.tracking_uri)
    assert str(client.get_model_version_by_alias("dmf", "champion").version) == "1"
    refused = client.get_model_version("dmf", "2")
    assert refused.tags["gate"].startswith("refused: AUC")
    run = client.get_run(refused.run_id)
    assert run.data.tags["gate.decision"] == "refused" and run.data.tags["gate.champion_version"] == "1"
    assert {"gate.candidate_auc", "gate.champion_auc", "gate.item_mean_auc", "gate.rows"} <= set(run.data.metrics)


def _backfill(deployment: Deployment, start: dt.date, end: dt.date, *options: str, timeout: float = 900) -> None:
    """`airflow backfill create` and wait for the scheduler to finish every run of the range."""
    created = time.time()
    command = ("backfill", "create", "--dag-id", "dmf_daily", "--from-date", str(start), "--to-date", str(end), *options)
    # Retried while the scheduler has not yet marked the previous backfill complete (within 30 s of its last
    # run), and while SQLite is locked by another service's write (seen when the machine is busy).
    for attempt in range(30):
        try:
            airflow(deployment.env, *command)
            break
        except RuntimeError as e:
            if attempt == 29 or not any(m in str(e) for m in ("Another backfill is running", "database is locked")):
                raise
            time.sleep(5)
    expected = {(start + dt.timedelta(days=i)).isoformat() for i in range((end - start).days + 1)}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = [r for r in _runs(deployment) if r["run_id"].startswith("backfill__")]
        done = {
            r["logical_date"][:10]: r["state"]
            for r in runs
            if r["state"] in ("success", "failed") and r["end_date"] and _timestamp(r["end_date"]) > created
        }
        if set(done) >= expected:
            assert all(done[d] == "success" for d in expected), f"backfill runs: {done}; logs in {deployment.env['AIRFLOW_HOME']}"
            return
        time.sleep(5)
    raise TimeoutError(f"the backfill of {start}..{end} did not finish in {timeout:.0f} s: {_runs(deployment)}")


def _runs(deployment: Deployment) -> list[dict]:
    """dmf_daily's runs, read from the deployment's SQLite database: polled every few seconds, where each
    `airflow dags list-runs` would cost seconds of CPU that the scheduler's Spark jobs need."""
    database = Path(deployment.env["AIRFLOW_HOME"]) / "airflow.db"
    try:
        with contextlib.closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=30)) as connection:
            connection.row_factory = sqlite3.Row
            rows = connection.execute(
                "SELECT run_id, logical_date, state, end_date FROM dag_run WHERE dag_id = 'dmf_daily' ORDER BY id"
            ).fetchall()
    except sqlite3.OperationalError:  # the scheduler holds a write lock: the next poll reads it
        return []
    return [dict(row) for row in rows]


def _timestamp(text: str) -> float:
    """A UTC time as Airflow stores it (naive in SQLite) or prints it (with its offset)."""
    when = dt.datetime.fromisoformat(text)
    return (when if when.tzinfo else when.replace(tzinfo=dt.UTC)).timestamp()
