"""dmf_training: retrain DMF whenever validated `samples` change, and promote it only if it is better.

train_candidate (DMF of `conf/train/dmf.yaml`, registered in MLflow) -> evaluate_candidate, which scores
the candidate, the current `champion` and the item-mean baseline on the same rows (those newer than
anything either model trained on) with paired user-bootstrap intervals -> promote_champion (alias set)
or keep_champion (the refusal and its reason in the task log and on the candidate's MLflow run and
model version). A refusal is a normal outcome, not a failure. Settings: `promotion:` in the config."""

from __future__ import annotations

import pendulum
from airflow.sdk import DAG

from dmf_features.orchestration.dag_parts import ASSETS, DEFAULT_ARGS, config_params, plan_run, train_and_gate

with DAG(
    dag_id="dmf_training",
    description="train DMF on the latest samples; promote it to champion only if it beats the champion and the item mean",
    schedule=ASSETS["samples"],
    start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args={**DEFAULT_ARGS, "retries": 0},  # a failed training is worth a look before another hour of CPU
    tags=["dmf-features", "training"],
    doc_md=__doc__,
    params=config_params(),
) as dag:
    train_and_gate(plan_run.override(doc_md="Validate the config.")(daily=False, spark=False))
