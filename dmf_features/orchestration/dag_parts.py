"""The parts the DAGs in `dags/` share: assets, default arguments, params, the run plan, Spark stages
and the train-and-gate chain. This module imports Airflow (and only the DAG files import it); the
project's heavy modules (pyspark, torch, MLflow) are imported inside tasks, never at parse time."""

from __future__ import annotations

import datetime as dt
import os

from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator
from airflow.sdk import Asset, Param, XComArg, get_current_context, task
from airflow.sdk.exceptions import AirflowFailException

from dmf_features.orchestration.arguments import STAGES
from dmf_features.orchestration.environment import PROJECT_ROOT, SPARK_CONN_ID, SPARK_POOL

# One asset per Delta table (names as in dmf_features.schemas, checked by a test): task outlets show
# the lineage in the UI, and the training DAG is scheduled on `samples`.
LAKE_TABLES = ("items", "events", "item_embeddings", "samples", "user_sequences")
ASSETS = {name: Asset(name=f"dmf.{name}", uri=f"dmf-lake://lake/{name}", group="dmf-lake") for name in LAKE_TABLES}

DEFAULT_ARGS = {
    "owner": "dmf-features",
    "retries": 1,  # every job is idempotent: a retry replaces what a failed attempt may have left
    "retry_delay": dt.timedelta(minutes=2),
}
DEFAULT_CONFIG = os.environ.get("DMF_CONFIG", str(PROJECT_ROOT / "conf" / "local.yaml"))


def config_params(**extra: Param) -> dict[str, Param]:
    """Params every DAG takes: the pipeline config and `--set` overrides applied to every job."""
    return {
        "config": Param(DEFAULT_CONFIG, type="string", description="pipeline config (YAML); default: $DMF_CONFIG"),
        "overrides": Param(
            [], type="array", items={"type": "string"}, description="KEY.PATH=VALUE settings, as `dmf --set`, for every job"
        ),
        **extra,
    }


@task(multiple_outputs=True)
def plan_run(daily: bool = True, spark: bool = True) -> dict:
    """Load and validate the config, check that `spark_default` submits to the config's Spark master
    (DAGs with Spark stages), decide the day (daily runs; see `dmf_features.orchestration.days`) and
    return every job's arguments."""
    from airflow.providers.apache.spark.hooks.spark_submit import SparkSubmitHook

    from dmf_features.infra.config import load_config
    from dmf_features.infra.spark import launch_conf
    from dmf_features.orchestration.arguments import plan_output
    from dmf_features.orchestration.days import processing_day

    context = get_current_context()
    params, run = context["params"], context["dag_run"]
    try:  # a wrong setting is not fixed by a retry: fail the run at once, saying what to change
        cfg = load_config(params["config"], params["overrides"])
        # what the provider will pass to --master (it silently falls back to yarn without a connection)
        master = SparkSubmitHook(conn_id=SPARK_CONN_ID)._connection["master"] if spark else cfg.spark.master
        if master != cfg.spark.master:
            raise ValueError(
                f"connection {SPARK_CONN_ID} submits to {master!r} but {params['config']} sets "
                f"spark.master={cfg.spark.master!r}: set AIRFLOW_CONN_{SPARK_CONN_ID.upper()} from the config "
                "(`dmf airflow env` prints it)"
            )
        day = None
        if daily:
            run_type = str(getattr(run.run_type, "value", run.run_type))
            day = processing_day(run_type, run.data_interval_start, run.logical_date, run.run_after, params.get("date"))
            print(f"{run_type} run {run.run_id}: processing {day} (UTC)")
    except ValueError as e:  # ConfigError is one
        raise AirflowFailException(str(e)) from e
    return plan_output(params, day, launch_conf(cfg.spark))


# what each Spark stage updates (asset events) and says about itself in the UI
STAGE_OUTLETS = {
    "ingest": ("items", "events"),
    "embed": ("item_embeddings",),
    "build_features": ("user_sequences",),
    # `samples` is published after its gate (write-audit-publish): dmf_training starts only on validated samples
    "validate_samples": ("samples",),
}
STAGE_DOCS = {
    "ingest": "`dmf ingest --date DAY`: merge the catalogue into `items`, replace DAY's partition of `events`, "
    "quarantine bad records with their reasons.",
    "validate_inputs": "Great Expectations gates on `items` and `events`: the run stops before anything reads bad data.",
    "embed": "`dmf embed`: embed the items that lack vectors of the configured encoder versions (new or changed "
    "items; every item for a new version, beside the old one's) and rebuild the nearest-item index.",
    "build_features": "`dmf features [--date DAY]`: replace the run's day of `samples` (every day in a roll-out): "
    "point-in-time histories and DMF similarity features; merge `user_sequences`.",
    "validate_samples": "Gate on `samples`; the `dmf.samples` asset event (which starts dmf_training) is emitted "
    "here, after the gate, in the daily DAG.",
}


def spark_stage(task_id: str, plan: XComArg, outlets: tuple[str, ...] | None = None) -> SparkSubmitOperator:
    """`spark-submit jobs/<job>.py` with the plan's arguments for `task_id` (a key of
    `arguments.STAGES`), in the shared Spark pool; `outlets` replaces the stage's usual ones."""
    return SparkSubmitOperator(
        task_id=task_id,
        application=str(PROJECT_ROOT / "jobs" / f"{STAGES[task_id].job}.py"),
        application_args=plan[task_id],
        conn_id=SPARK_CONN_ID,
        conf=plan["launch_conf"],  # the driver's memory and JVM options: read before the job reads its config
        name=f"dmf-{task_id}",
        pool=SPARK_POOL,
        outlets=[ASSETS[name] for name in (STAGE_OUTLETS.get(task_id, ()) if outlets is None else outlets)],
        doc_md=STAGE_DOCS[task_id],
    )


def train_and_gate(plan: XComArg) -> XComArg:
    """Train DMF on the latest samples, compare it with the registered champion and the item-mean
    baseline on rows neither model trained on, and promote it (alias `champion`) only if it is better.
    A refusal is the `keep_champion` branch, with its reason in the log and on the MLflow run.
    Returns the first task's output, for upstream dependencies."""

    @task(doc_md="Train DMF (`conf/train/dmf.yaml`) on the latest samples under the config's protocol; register it.")
    def train_candidate(plan: dict) -> dict:
        from models.promotion import train_candidate

        return train_candidate(_config(plan))

    @task.branch(doc_md="Score the candidate, the champion and the item mean on the same unseen rows; decide.")
    def evaluate_candidate(plan: dict, candidate: dict) -> str:
        from models.promotion import evaluate_candidate

        decision = evaluate_candidate(_config(plan), candidate["version"])
        print(decision.render())
        get_current_context()["ti"].xcom_push(key="decision", value=decision.to_json())
        return "promote_champion" if decision.promote else "keep_champion"

    @task(doc_md="Point the registered model's `champion` alias at the candidate.")
    def promote_champion(plan: dict) -> None:
        from models.promotion import Decision, promote

        decision = Decision.from_json(get_current_context()["ti"].xcom_pull(task_ids="evaluate_candidate", key="decision"))
        promote(_config(plan), decision)

    @task(doc_md="The gate refused the candidate: keep the champion; the reason is logged here and on the MLflow run.")
    def keep_champion(plan: dict) -> None:
        from models.promotion import Decision

        decision = Decision.from_json(get_current_context()["ti"].xcom_pull(task_ids="evaluate_candidate", key="decision"))
        print(f"{decision.model} version {decision.candidate_version} refused, champion unchanged: {decision.reason}")

    candidate = train_candidate(plan)
    evaluate_candidate(plan, candidate) >> [promote_champion(plan), keep_champion(plan)]
    return candidate


def _config(plan: dict):
    """The run's config, as `plan_run` validated it (XComs carry the path and overrides, not the object)."""
    from dmf_features.infra.config import load_config

    return load_config(plan["config"], plan["overrides"])
