"""One tiny Airflow deployment for the DAG tests: a synthetic pipeline config, a fresh AIRFLOW_HOME
(SQLite) and the environment its services and commands run in."""

from __future__ import annotations

import datetime as dt
import os
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
from deltalake import DeltaTable

from dmf_features.infra.config import load_config
from dmf_features.orchestration.environment import airflow_environment
from dmf_features.orchestration.services import airflow, prepare
from dmf_features.testing.delta_rows import table_rows

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


def _output(env: dict[str, str], *args: str) -> str:
    """An `airflow` command's whole output, whatever its exit code."""
    result = subprocess.run(["airflow", *args], env={**os.environ, **env}, capture_output=True, text=True, timeout=600)
    return result.stdout + result.stderr


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
