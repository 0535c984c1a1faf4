"""dmf_encoder_rollout: introduce a new encoder version beside the current one, then retrain.

Trigger it with the config that names the new encoder (param `config`, or `overrides` such as
`embedding.text.kind=clip-text` and `embedding.text.path=/models/clip`): embed embeds every item with
the new version (vectors are keyed by encoder version, so the old version's rows stay untouched and
time travel and older models keep working), build_features rebuilds every day's samples with the new vectors, validate_samples
gates them, and the candidate trained on them must pass the same promotion gate as in dmf_training.
Afterwards point the daily DAG at the new config (DMF_CONFIG): its daily feature builds must use the
same encoder version as the rest of `samples`.

The rebuilt `samples` are not published as an asset event here, so that dmf_training does not train
a second candidate on them."""

from __future__ import annotations

import pendulum
from airflow.sdk import DAG, chain

from dmf_features.orchestration.dag_parts import DEFAULT_ARGS, config_params, plan_run, spark_stage, train_and_gate

with DAG(
    dag_id="dmf_encoder_rollout",
    description="embed every item with a new encoder version (old one kept), rebuild features, retrain and gate",
    schedule=None,  # on demand
    start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    tags=["dmf-features", "encoders", "training"],
    doc_md=__doc__,
    params=config_params(),
) as dag:
    plan = plan_run.override(doc_md="Validate the config (with the new encoder) and the Spark connection.")(daily=False)
    stages = [spark_stage("embed", plan), spark_stage("build_features", plan), spark_stage("validate_samples", plan, outlets=())]
    chain(plan, *stages, train_and_gate(plan))
