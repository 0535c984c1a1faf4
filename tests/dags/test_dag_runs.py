"""The DAGs run by real Airflow 3 (SQLite, a fresh AIRFLOW_HOME each) with real `spark-submit` on tiny
synthetic data: the day each kind of manual run processes, and one deployment's life: a backfill run
twice by the scheduler, a manual day (`airflow dags test`), then the training DAG and its gate."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import socket
import sqlite3
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import mlflow
import pyarrow as pa
import pytest
from deltalake import DeltaTable

from dmf_features.infra.config import load_config
from dmf_features.orchestration.environment import airflow_environment
from dmf_features.orchestration.services import Services, airflow, prepare
from dmf_features.testing.delta_rows import table_rows

pytestmark = pytest.mark.e2e
START = dt.date(2021, 6, 1)
TABLES = ("items", "events", "item_embeddings", "samples", "user_sequences")


@dataclass
class Deployment:
    config: Path
    lake: Path
    tracking_uri: str
    env: dict[str, str]

    def dags_test(self, dag_id: str, *args: str) -> str:
        """`airflow dags test`: the whole output, after checking that the run succeeded."""
        result = airflow(self.env, "dags", "test", dag_id, *args, timeout=900)
        output = result.stdout + result.stderr
        assert "state=success" in output and "DagRun failed" not in output, output[-6000:]
        return output

    def files(self, name: str) -> list[dict]:
        """The table's active files (path, rows, partition values) from its Delta log. (delta-rs's own
        readers make the process abort at exit: README, notes for developers.)"""
        return pa.table(DeltaTable(str(self.lake / name)).get_add_actions(flatten=True)).to_pylist()

    def rows(self, name: str) -> list[tuple]:
        """Every row with its partition values, in a canonical order: equal lists, equal tables."""
        return table_rows(self.lake / name)

    def days(self, name: str) -> set[str]:
        return {file["partition.date"].isoformat() for file in self.files(name) if file["num_records"]}


def deploy(tmp_path: Path, days: int) -> Deployment:
    """A tiny synthetic pipeline (`days` days of events from START) and an Airflow home for it."""
    config = tmp_path / "pipeline.yaml"
    config.write_text(f"""
spark: {{master: "local[2]", shuffle_partitions: 4, driver_memory: 2g, short_jobs: true, conf: {{spark.ui.enabled: "false"}}}}
lake: {{uri: {tmp_path / "lake"}}}
mlflow: {{tracking_uri: "sqlite:///{tmp_path / "mlflow.db"}", experiment: dags}}
source:
  kind: synthetic
  synthetic: {{output: {tmp_path / "data"}, users: 120, items: 40, events: {1500 * days}, days: {days},
              start_date: {START}, image_size: 32}}
embedding: {{batch_size: 16, items_per_task: 32}}
features: {{split: {{method: temporal, valid_from: {START}, test_from: {START + dt.timedelta(days=1)}}}}}
quality: {{results_dir: {tmp_path / "validation"}}}
evaluation: {{rolling: {{min_test_users: 10}}, bootstrap_resamples: 100}}
promotion: {{min_rows: 50}}
""")
    cfg = load_config(config)
    env = airflow_environment(cfg, tmp_path / "airflow", api_port=_free_port())
    prepare(env)
    return Deployment(config, tmp_path / "lake", cfg.mlflow.tracking_uri, env)


def test_manual_runs_process_the_day_they_name_or_the_last_complete_one(tmp_path):
    deployment = deploy(tmp_path, days=1)
    only_plan = ("--mark-success-pattern", "(?!plan_run$).*")  # the Spark stages are marked done, not run
    named = deployment.dags_test("dmf_daily", "--conf", json.dumps({"date": "2021-06-03"}), *only_plan)
    assert "processing 2021-06-03" in named
    dated = deployment.dags_test("dmf_daily", "2018-09-24", *only_plan)
    assert "processing 2018-09-24" in dated
    now = deployment.dags_test("dmf_daily", *only_plan)  # Airflow makes the logical date "now"
    assert f"processing {dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1)}" in now
    with pytest.raises(RuntimeError, match=r"Invalid input for param date: '24/09/2018' does not match"):
        airflow(deployment.env, "dags", "test", "dmf_daily", "--conf", json.dumps({"date": "24/09/2018"}), *only_plan)

    # without the connection the provider would submit to YARN: plan_run stops the run first, without retrying
    no_connection = {k: v for k, v in deployment.env.items() if k != "AIRFLOW_CONN_SPARK_DEFAULT"}
    output = _output(no_connection, "dags", "test", "dmf_daily", "2021-06-01", *only_plan)
    assert "connection spark_default submits to 'yarn' but" in output and "spark.master='local[2]'" in output
    assert "DagRun failed" in output and "up_for_retry" not in output


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
    for _ in range(30):  # the scheduler marks the previous backfill complete within 30 s of its last run
        try:
            airflow(deployment.env, *command)
            break
        except RuntimeError as e:
            if "Another backfill is running" not in str(e):
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


def _output(env: dict[str, str], *args: str) -> str:
    """An `airflow` command's whole output, whatever its exit code."""
    result = subprocess.run(["airflow", *args], env={**os.environ, **env}, capture_output=True, text=True, timeout=600)
    return result.stdout + result.stderr


def _runs(deployment: Deployment) -> list[dict]:
    """dmf_daily's runs, read from the deployment's SQLite database: polled every few seconds, where each
    `airflow dags list-runs` would cost seconds of CPU that the scheduler's Spark jobs need."""
    database = Path(deployment.env["AIRFLOW_HOME"]) / "airflow.db"
    with contextlib.closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=30)) as connection:
        connection.row_factory = sqlite3.Row
        rows = connection.execute(
            "SELECT run_id, logical_date, state, end_date FROM dag_run WHERE dag_id = 'dmf_daily' ORDER BY id"
        ).fetchall()
    return [dict(row) for row in rows]


def _timestamp(text: str) -> float:
    """A UTC time as Airflow stores it (naive in SQLite) or prints it (with its offset)."""
    when = dt.datetime.fromisoformat(text)
    return (when if when.tzinfo else when.replace(tzinfo=dt.UTC)).timestamp()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
