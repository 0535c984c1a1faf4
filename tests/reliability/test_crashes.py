"""Jobs killed with SIGKILL (the whole process group, as a lost machine) at several points of each
stage: every table stays at its previous version or its new one, readers keep the last complete
run's versions, a re-run gives exactly the uninterrupted run's tables, and the killed job's files
are never read as data and are removed by `dmf lake vacuum`."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from deltalake import DeltaTable

from dmf_features.embedding.stage import embed_items
from dmf_features.features.stage import build_features
from dmf_features.infra.config import load_config
from dmf_features.infra.faults import CRASH_AT
from dmf_features.infra.lake import Lake
from dmf_features.infra.runs import complete_version
from dmf_features.infra.spark import submit_options
from dmf_features.ingest import ingest
from dmf_features.testing import movielens_files as fx
from dmf_features.testing.delta_rows import table_rows

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
TABLES = ("items", "events", "quarantine", "item_embeddings", "samples", "user_sequences")
# columns that differ between two runs by design: when a vector was computed
RUN_TIME_COLUMNS = {"item_embeddings": ["embedded_at"]}
STAGES = {  # stage -> (job, the reference's snapshot before it, and after it)
    "ingest": ("jobs/ingest.py", "start", "ingested"),
    "embed": ("jobs/embed_items.py", "ingested", "embedded"),
    "features": ("jobs/build_features.py", "embedded", "built"),
}
QUIET = {"progress": lambda _: None}


def _config(folder: Path, lake: Path) -> Path:
    path = folder / f"{lake.name}.yaml"
    path.write_text(f"""
spark: {{master: "local[1]", shuffle_partitions: 2, driver_memory: 1g, short_jobs: true}}
lake: {{uri: {lake}}}
source: {{kind: movielens, movielens: {{path: {folder / "movielens"}, posters: {folder / "movielens" / "posters"}}}}}
ingest: {{max_quarantined_share: 0.5}}
embedding: {{batch_size: 8, items_per_task: 32}}
features: {{history_length: 4, long_history_length: 8, buckets: 4, top_k: 2, split: {{method: leave_last_out}}}}
""")
    return path


@pytest.fixture(scope="module")
def reference(spark, tmp_path_factory):
    """The uninterrupted run, with copies of its lake after each stage to start a crashed one from."""
    folder = tmp_path_factory.mktemp("crashes")
    fx.write_movielens(folder / "movielens")
    lake_dir = folder / "reference"
    cfg = load_config(_config(folder, lake_dir))
    lake = Lake(cfg.lake)
    snapshots = {"start": folder / "start"}
    snapshots["start"].mkdir()
    ingest(spark, cfg, lake, **QUIET)
    shutil.copytree(lake_dir, snapshots.setdefault("ingested", folder / "ingested"))
    embed_items(spark, cfg, lake, **QUIET)
    shutil.copytree(lake_dir, snapshots.setdefault("embedded", folder / "embedded"))
    build_features(spark, cfg, lake, **QUIET)
    snapshots["built"] = lake_dir
    return folder, snapshots


def _tables(lake: Path) -> dict[str, list]:
    return {t: table_rows(lake / t, RUN_TIME_COLUMNS.get(t, ())) for t in TABLES if (lake / t / "_delta_log").is_dir()}


def _versions(lake: Path) -> dict[str, int]:
    return {t: DeltaTable(str(lake / t)).version() for t in (*TABLES, "runs") if (lake / t / "_delta_log").is_dir()}


def _killed(argv: list[str], point: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    """Run `argv` in its own process group with the crash point set; it must die of SIGKILL there."""
    venv_bin = Path(sys.executable).parent
    env = {**os.environ, CRASH_AT: point, "PATH": f"{venv_bin}:{os.environ['PATH']}", "PYSPARK_PYTHON": sys.executable}
    done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=600, start_new_session=True)
    # the whole group died at once: the job's own last words may not get out of spark-submit's pipes
    assert done.returncode in (-9, 137), f"exit {done.returncode}\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    return done


@pytest.mark.parametrize(
    ("stage", "point"),
    [
        ("ingest", "writing:events"),  # Spark tasks are writing the files
        ("ingest", "committed:items"),  # between the tables of one run
        ("ingest", "written:quarantine"),  # the files written, the commit not made
        ("embed", "written:item_embeddings"),
        ("features", "committed:samples"),  # samples committed, user_sequences not
    ],
)
def test_a_killed_stage_leaves_every_table_whole_and_a_rerun_finishes_the_job(spark, reference, tmp_path, stage, point):
    folder, snapshots = reference
    job, before, after = STAGES[stage]
    lake_dir = tmp_path / "lake"
    shutil.copytree(snapshots[before], lake_dir, dirs_exist_ok=True)
    config = _config(folder, lake_dir)
    cfg = load_config(config)
    lake = Lake(cfg.lake)
    versions_before = _versions(lake_dir)
    readable_before = {t: lake.complete_version(t) for t in versions_before if t != "runs"}

    _killed([str(Path(sys.executable).parent / "spark-submit"), *submit_options(cfg.spark), job, "--config", str(config)], point)

    for table, version in _versions(lake_dir).items():  # each at its previous version or the next: never in between
        assert version - versions_before.get(table, -1) in (0, 1), (table, versions_before.get(table), version)
    for table, version in readable_before.items():  # readers still get the last complete run's version
        assert lake.complete_version(table) == version, table

    {"ingest": ingest, "embed": embed_items, "features": build_features}[stage](spark, cfg, lake, **QUIET)
    expected = _tables(snapshots[after])
    assert _tables(lake_dir) == expected  # the killed job's files were never read as data

    removed = [path for table in lake.tables() for path in lake.vacuum(table, retention_hours=0)]
    if point.startswith(("writing", "written")):  # files no commit refers to
        assert any(path.startswith("data-") for path in removed), removed
    assert not [p for p in lake_dir.rglob("_temporary")]
    assert _tables(lake_dir) == expected


def test_a_killed_training_run_registers_nothing_and_a_rerun_registers_the_model(tiny_lake):
    import mlflow

    config = tiny_lake
    cfg = load_config(config)
    train = [sys.executable, "-m", "dmf_features.cli", "train", "--config", str(config)]
    samples_version = complete_version(cfg.lake.uri, "samples")
    _killed(train, "trained:dmf")

    client = mlflow.MlflowClient(cfg.mlflow.tracking_uri)
    assert client.search_model_versions("name='dmf'") == []  # nothing half-registered
    done = subprocess.run(train, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    (registered,) = client.search_model_versions("name='dmf'")
    run = client.get_run(registered.run_id)
    assert int(run.data.tags["lineage.samples_version"]) == samples_version
