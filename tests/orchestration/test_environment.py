"""The Spark connection the DAGs submit with, resolved by the real provider, and the services' environment."""

import json
import sys
from pathlib import Path

import pytest

from dmf_features.infra.config import load_config
from dmf_features.orchestration.environment import DAGS_FOLDER, airflow_environment, shell_exports, spark_connection

ROOT = Path(__file__).resolve().parents[2]


def resolved_master(monkeypatch, connection: str | None) -> str:
    from airflow.providers.apache.spark.hooks.spark_submit import SparkSubmitHook

    if connection is None:
        monkeypatch.delenv("AIRFLOW_CONN_SPARK_DEFAULT", raising=False)
    else:
        monkeypatch.setenv("AIRFLOW_CONN_SPARK_DEFAULT", connection)
    return SparkSubmitHook(conn_id="spark_default")._connection["master"]


@pytest.mark.parametrize("master", ["local[*]", "local[2]", "spark://127.0.0.1:7077", "yarn"])
def test_the_connection_submits_to_the_config_master(monkeypatch, master):
    assert resolved_master(monkeypatch, spark_connection(master)) == master


def test_without_the_connection_the_provider_silently_submits_to_yarn(monkeypatch):
    """Why plan_run compares the resolved master with the config's before any Spark stage runs."""
    assert resolved_master(monkeypatch, None) == "yarn"


def test_the_environment_comes_from_the_config_and_binds_to_the_loopback(tmp_path):
    cfg = load_config(ROOT / "conf" / "local.yaml", ["spark.master=local[3]"])
    env = airflow_environment(cfg, tmp_path / "home", api_port=8123)
    assert json.loads(env["AIRFLOW_CONN_SPARK_DEFAULT"]) == {"conn_type": "spark", "host": "local[3]"}
    assert env["AIRFLOW__API__HOST"] == "127.0.0.1"
    assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://127.0.0.1:8123/execution/"
    assert env["AIRFLOW__CORE__DAGS_FOLDER"] == str(DAGS_FOLDER) and env["AIRFLOW_HOME"] == str(tmp_path / "home")
    assert env["PATH"].split(":")[0] == str(Path(sys.executable).parent)  # the venv's spark-submit and dmf
    assert env["PYSPARK_PYTHON"] == sys.executable and env["SPARK_LOCAL_IP"] == "127.0.0.1"
    assert env["DMF_CONFIG"] == str(ROOT / "conf" / "local.yaml")
    assert "export AIRFLOW__API__PORT=8123" in shell_exports(env).splitlines()
