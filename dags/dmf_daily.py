"""dmf_daily: the daily incremental pipeline, one UTC day per run.

ingest -> validate_inputs -> embed -> build_features -> validate_samples, each Spark stage a
`spark-submit` of `jobs/*.py` in the shared `dmf_spark` pool.

Timetable: a data-interval cron at 00:00 UTC, so a run covers [day, day + 1) and starts once the day is
over (Airflow 3's default for a cron string, a trigger timetable, would process the day the run fires,
before it is complete). Which day a run processes is decided in `plan_run` and printed in its log:
a `date` param wins, then a scheduled or backfill run's data interval, then a manual run's logical
date, else the last complete day (`dmf_features.orchestration.days`). Catch-up is off: older days are
backfilled on purpose (`airflow backfill create --dag-id dmf_daily --from-date A --to-date B`). Every
stage replaces only its day, so re-running a day or a backfill changes nothing the second time."""

from __future__ import annotations

import pendulum
from airflow.sdk import DAG, CronDataIntervalTimetable, Param, chain

from dmf_features.orchestration.arguments import STAGES
from dmf_features.orchestration.dag_parts import DEFAULT_ARGS, config_params, plan_run, spark_stage

with DAG(
    dag_id="dmf_daily",
    description="ingest, validate, embed new items, build one day's features, validate",
    schedule=CronDataIntervalTimetable("0 0 * * *", timezone="UTC"),
    start_date=pendulum.datetime(1995, 1, 1, tz="UTC"),  # ingest's default min_event_time: any day can be backfilled
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    tags=["dmf-features", "pipeline"],
    doc_md=__doc__,
    params=config_params(
        date=Param(
            None,
            type=["null", "string"],
            pattern=r"^\d{4}-\d{2}-\d{2}$",
            description="process this UTC day (YYYY-MM-DD) instead of the run's own",
        )
    ),
) as dag:
    plan = plan_run.override(doc_md="Validate the config and the Spark connection; decide the run's day.")(daily=True)
    chain(plan, *(spark_stage(task_id, plan) for task_id in STAGES))
