"""The DAG folder as Airflow's DAG processor sees it: no import errors, the expected DAGs, tasks,
dependencies, pools, assets and documentation, nothing heavy imported at parse time, Airflow 3 lint."""

import subprocess
import sys
from pathlib import Path

import pendulum
import pytest

from dmf_features.orchestration.days import processing_day
from dmf_features.orchestration.environment import SPARK_CONN_ID, SPARK_POOL

ROOT = Path(__file__).resolve().parents[2]
SPARK_STAGES = {"ingest", "validate_inputs", "embed", "build_features", "validate_samples"}
GATE = {"train_candidate", "evaluate_candidate", "promote_champion", "keep_champion"}


def dag_bag():
    try:
        from airflow.dag_processing.dagbag import DagBag
    except ImportError:  # before Airflow 3.2
        from airflow.models.dagbag import DagBag
    return DagBag(str(ROOT / "dags"))


@pytest.fixture(scope="module")
def dags():
    bag = dag_bag()
    assert bag.import_errors == {}
    return bag.dags


def upstream(dag) -> dict[str, set[str]]:
    return {t.task_id: set(t.upstream_task_ids) for t in dag.tasks}


def outlets(dag) -> dict[str, set[str]]:
    return {t.task_id: {a.name for a in t.outlets} for t in dag.tasks if t.outlets}


def test_the_dag_ids(dags):
    assert set(dags) == {"dmf_daily", "dmf_training", "dmf_encoder_rollout"}


def test_every_dag_is_explicit_and_documented(dags):
    for dag in dags.values():
        assert dag.catchup is False and dag.max_active_runs == 1, dag.dag_id
        assert dag.default_args["retries"] >= 0 and dag.tags and "dmf-features" in dag.tags, dag.dag_id
        assert dag.doc_md and len(dag.doc_md) > 200, dag.dag_id
        assert "config" in dag.params and "overrides" in dag.params, dag.dag_id
        for task in dag.tasks:
            assert task.doc_md, f"{dag.dag_id}.{task.task_id} has no doc_md"


def test_daily_pipeline_order_pools_and_assets(dags):
    dag = dags["dmf_daily"]
    assert type(dag.timetable).__name__ == "CronDataIntervalTimetable"
    assert upstream(dag) == {
        "plan_run": set(),
        "ingest": {"plan_run"},
        "validate_inputs": {"plan_run", "ingest"},
        "embed": {"plan_run", "validate_inputs"},
        "build_features": {"plan_run", "embed"},
        "validate_samples": {"plan_run", "build_features"},
    }
    for task in dag.tasks:
        if task.task_id in SPARK_STAGES:
            assert task.pool == SPARK_POOL and task._conn_id == SPARK_CONN_ID
            assert Path(task.application).is_file() and Path(task.application).parent == ROOT / "jobs"
    assert outlets(dag) == {
        "ingest": {"dmf.items", "dmf.events"},
        "embed": {"dmf.item_embeddings"},
        "build_features": {"dmf.user_sequences"},
        "validate_samples": {"dmf.samples"},  # published after its gate: training never starts on unvalidated samples
    }
    assert "date" in dag.params


def test_training_runs_on_validated_samples_and_branches_on_the_gate(dags):
    dag = dags["dmf_training"]
    assert type(dag.timetable).__name__ == "AssetTriggeredTimetable"
    assert dag.timetable.asset_condition.name == "dmf.samples"
    assert upstream(dag) == {
        "plan_run": set(),
        "train_candidate": {"plan_run"},
        "evaluate_candidate": {"plan_run", "train_candidate"},
        "promote_champion": {"plan_run", "evaluate_candidate"},
        "keep_champion": {"plan_run", "evaluate_candidate"},
    }
    assert type(dag.get_task("evaluate_candidate")).__name__ == "_BranchPythonDecoratedOperator"


def test_encoder_rollout_embeds_rebuilds_then_trains_and_gates(dags):
    dag = dags["dmf_encoder_rollout"]
    assert type(dag.timetable).__name__ == "NullTimetable"  # on demand only
    deps = upstream(dag)
    assert deps["embed"] == {"plan_run"} and deps["build_features"] == {"plan_run", "embed"}
    assert deps["train_candidate"] == {"plan_run", "validate_samples"} and GATE <= set(deps)
    assert "dmf.samples" not in set().union(*outlets(dag).values())  # dmf_training must not train a second candidate


def test_assets_are_the_lake_tables():
    from dmf_features import schemas
    from dmf_features.orchestration.dag_parts import ASSETS

    tables = {spec.name for spec in vars(schemas).values() if isinstance(spec, schemas.TableSpec)}
    assert set(ASSETS) <= tables and {a.name for a in ASSETS.values()} == {f"dmf.{t}" for t in ASSETS}


def test_a_scheduled_run_processes_the_day_before_it_fires(dags):
    """The real timetable: the run that fires at 2018-09-25 00:00 covers 2018-09-24, and so processes it."""
    from airflow.serialization.encoders import coerce_to_core_timetable
    from airflow.timetables.base import DataInterval, TimeRestriction

    timetable = coerce_to_core_timetable(dags["dmf_daily"].timetable)
    previous = DataInterval(pendulum.datetime(2018, 9, 23, tz="UTC"), pendulum.datetime(2018, 9, 24, tz="UTC"))
    info = timetable.next_dagrun_info(
        last_automated_data_interval=previous, restriction=TimeRestriction(earliest=None, latest=None, catchup=True)
    )
    assert info.run_after == pendulum.datetime(2018, 9, 25, tz="UTC")
    day = processing_day("scheduled", info.data_interval.start, info.logical_date, info.run_after)
    assert day.isoformat() == "2018-09-24"


def test_parsing_the_dags_imports_nothing_heavy():
    code = (
        "import sys; sys.path.insert(0, 'tests/dags'); from test_dagbag import dag_bag; assert not dag_bag().import_errors; "
        "print(sorted(m for m in ('pyspark', 'torch', 'mlflow', 'pyarrow', 'great_expectations', 'pandas') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1] == "[]"


def test_the_dags_pass_ruffs_airflow_3_rules():
    ruff = Path(sys.executable).parent / "ruff"
    result = subprocess.run([str(ruff), "check", "dags/", "--select", "AIR3"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
