"""The pipeline on a real Spark standalone cluster (a master and two workers on the loopback, one fake GPU
each) builds the same tables, row for row, as in local[2] mode. Each stage is submitted as the DAGs
submit it (`spark-submit jobs/<stage>.py`); on the cluster with the config's `spark.gpu` settings, so the
embedding tasks are scheduled on GPU resources and, with no CUDA here, must say that they encode on CPU."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from dmf_features.infra.config import load_config
from dmf_features.infra.spark import SHORT_JOB_JVM_OPTIONS, SPARK_CONF_DIR, submit_options
from dmf_features.ingest.sources.synthetic import generate
from dmf_features.orchestration.arguments import STAGES
from dmf_features.testing.delta_rows import table_rows
from dmf_features.testing.standalone_cluster import StandaloneCluster

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
# The DAG's Spark stages that build tables; the validate tasks only record run-stamped check results.
JOBS = [STAGES[task].job for task in ("ingest", "embed", "build_features")]
TABLES = {"items", "events", "quarantine", "item_embeddings", "samples", "user_sequences"}  # at least these
RUN_STAMPS = {"item_embeddings": {"embedded_at"}, "runs": {"run_id", "at"}}  # differ between any two runs
GPU_ON_CPU = re.compile(
    r"a GPU was assigned to this task \(spark resources: gpu \['0'\]\) but CUDA is not usable here .*; encoding on CPU"
)
# The smallest data that still gives every table rows: planted bad rows and posters fill quarantine, and
# items_per_task and batch_size give each embedding several tasks, so both executors embed.
CONFIG = """
spark:
  driver_memory: 1g
  short_jobs: true
  shuffle_partitions: 2
  conf: {{spark.ui.enabled: "false", spark.executor.extraJavaOptions: "{jvm}"}}
lake: {{uri: lake}}  # each run sets its own
source:
  kind: synthetic
  synthetic: {{output: {data}, users: 30, items: 24, events: 400, days: 3, start_date: 2021-06-01, image_size: 16}}
embedding: {{batch_size: 4, items_per_task: 4}}
features: {{history_length: 4, long_history_length: 8, top_k: 2}}
"""


def test_a_gpu_cluster_builds_the_same_tables_as_local_mode(tmp_path):
    config = tmp_path / "pipeline.yaml"
    config.write_text(CONFIG.format(data=tmp_path / "data", jvm=SHORT_JOB_JVM_OPTIONS))
    generate(load_config(config).source.synthetic)  # once, before the two runs read it at the same time
    # the runs side by side: each spends much of its time starting JVMs and Python workers, so on 2 cores
    # the test takes about 115 s instead of 150 s
    with ThreadPoolExecutor(1) as pool:
        local_run = pool.submit(_submit_pipeline, tmp_path / "local", config, "local[2]")
        with StandaloneCluster(tmp_path / "cluster") as cluster:
            cluster_output = _submit_pipeline(
                tmp_path / "on-cluster", config, cluster.url, "spark.gpu.executor_amount=1", "spark.gpu.task_amount=1"
            )
            executor_logs = {path: path.read_text(errors="replace") for path in cluster.executor_logs()}
        local_output = local_run.result()

    lakes = [tmp_path / run / "lake" for run in ("local", "on-cluster")]
    tables, on_cluster = ({path.name for path in lake.iterdir() if (path / "_delta_log").is_dir()} for lake in lakes)
    assert tables == on_cluster and tables >= TABLES
    # Exact, vectors included: both modes run 2 tasks at a time with 1 torch thread each (spark.task.cpus),
    # so the embedding tasks and their batches are the same and so are the float operations.
    for name in sorted(tables):
        expected, rows = (table_rows(lake / name, drop=RUN_STAMPS.get(name, ())) for lake in lakes)
        assert expected, f"{name} is empty: the test data is too small to compare it"
        assert rows == expected, f"{name} differs"

    assert not GPU_ON_CPU.search(local_output["embed_items"])  # no GPU was assigned in local mode
    said = {path.relative_to(tmp_path / "cluster").parts[0] for path, text in executor_logs.items() if GPU_ON_CPU.search(text)}
    assert said == {"worker-0", "worker-1"}, (
        f"executor logs: {sorted(executor_logs)}; driver: {cluster_output['embed_items'][-3000:]}"
    )


def _submit_pipeline(folder: Path, config: Path, master: str, *overrides: str) -> dict[str, str]:
    """spark-submit each job in turn, from `folder` and with its own TMPDIR, into `folder/lake`; the output of each."""
    (folder / "tmp").mkdir(parents=True)
    bin_dir = Path(sys.executable).parent  # the venv's: spark-submit, and Python for Spark's workers
    env = os.environ | {
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "PYSPARK_PYTHON": sys.executable,
        "SPARK_LOCAL_IP": "127.0.0.1",
        "SPARK_CONF_DIR": str(SPARK_CONF_DIR),
        "TMPDIR": str(folder / "tmp"),
    }
    settings = [f"spark.master={master}", f"lake.uri={folder / 'lake'}", *overrides]
    outputs = {}
    for job in JOBS:
        command = [
            str(bin_dir / "spark-submit"),
            "--master",
            master,
            *submit_options(load_config(config).spark),
            str(ROOT / "jobs" / f"{job}.py"),
        ]
        command += ["--config", str(config), *(arg for setting in settings for arg in ("--set", setting))]
        result = subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True, timeout=300, check=False)
        outputs[job] = result.stdout + result.stderr
        (folder / f"{job}.log").write_text(outputs[job])
        assert result.returncode == 0, f"{job} on {master} failed ({result.returncode}):\n{outputs[job][-6000:]}"
    return outputs
