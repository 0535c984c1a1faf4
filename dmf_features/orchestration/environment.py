"""The environment Airflow's services and the DAGs' tasks run in, derived from the pipeline config.

One function builds it for `dmf airflow start` (what `make airflow` runs), `dmf airflow env` (a shell
that triggers runs or backfills) and the tests, so that they all see the same Airflow home, DAG
folder, Spark connection and interpreter. Every service binds to 127.0.0.1."""

from __future__ import annotations

import json
import os
import shlex
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dmf_features.infra.config import Config

SPARK_CONN_ID = "spark_default"
SPARK_POOL = "dmf_spark"  # one slot: Spark stages of concurrent runs queue instead of overloading a machine
SPARK_POOL_SLOTS = 1
PROJECT_ROOT = Path(__file__).resolve().parents[2]
DAGS_FOLDER = PROJECT_ROOT / "dags"
DEFAULT_AIRFLOW_HOME = PROJECT_ROOT / "airflow-home"  # ignored by git
SPARK_CONF_DIR = Path(__file__).resolve().parents[1] / "infra" / "spark_conf"


def spark_connection(master: str) -> str:
    """The `spark_default` connection (AIRFLOW_CONN_SPARK_DEFAULT, JSON) for a Spark master URL. The whole
    URL goes in `host`: the provider then passes it to `--master` unchanged (local[*], yarn, spark://h:p,
    k8s://https://h:p)."""
    return json.dumps({"conn_type": "spark", "host": master})


def airflow_environment(cfg: Config, home: Path, api_port: int = 8080) -> dict[str, str]:
    """Variables to add to the environment of every Airflow process (and so of every task and spark-submit)."""
    if cfg.source_file is None:
        raise ValueError("the config has no source file: load it with load_config(path)")
    venv_bin = str(Path(sys.executable).parent)
    env = {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS_FOLDER),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(api_port),
        "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{api_port}",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{api_port}/execution/",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
        f"AIRFLOW_CONN_{SPARK_CONN_ID.upper()}": spark_connection(cfg.spark.master),
        "DMF_CONFIG": str(Path(cfg.source_file).resolve()),
        "PATH": os.pathsep.join([venv_bin, os.environ.get("PATH", "")]),  # spark-submit and dmf: the venv's
        "PYSPARK_PYTHON": sys.executable,
        "PYSPARK_DRIVER_PYTHON": sys.executable,
        "SPARK_CONF_DIR": str(SPARK_CONF_DIR),
    }
    if cfg.spark.is_local:
        env["SPARK_LOCAL_IP"] = "127.0.0.1"
    return env


def shell_exports(env: dict[str, str]) -> str:
    """`export K=v` lines (shell-quoted) for `eval "$(dmf airflow env)"`."""
    return "\n".join(f"export {key}={shlex.quote(value)}" for key, value in env.items())
