"""`airflow dags test` of dmf_daily with only `plan_run` run (the Spark stages marked done): the day each
kind of manual run processes, a bad date param, and the missing Spark connection refused."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from dmf_features.orchestration.services import airflow
from tests.dags.deployment import _output, deploy

pytestmark = pytest.mark.e2e


def test_manual_runs_process_the_day_they_name_or_the_last_complete_one(tmp_path):
    deployment = deploy(tmp_path, days=1)
    only_plan = ("--mark-success-pattern", "(?!plan_run$).*")  # the Spark stages are marked done, not run
    named = deployment.dags_test("dmf_daily", "--conf", json.dumps({"date": "2021-06-03"}), *only_plan)
    assert "processing 2021-06-03" in named
    dated = deployment.dags_test("dmf_daily", "2018-09-24", *only_plan)
    assert "processing 2018-09-24" in dated
    now = deployment.dags_test("dmf_daily", *only_plan)  # Airflow makes the logical date "now"
    assert f"processing {dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1)}" in now
    with pytest.raises(RuntimeError, match=r"Invalid input for param date: '24/09/2018' does not match"):
        airflow(deployment.env, "dags", "test", "dmf_daily", "--conf", json.dumps({"date": "24/09/2018"}), *only_plan)

    # without the connection the provider would submit to YARN: plan_run stops the run first, without retrying
    no_connection = {k: v for k, v in deployment.env.items() if k != "AIRFLOW_CONN_SPARK_DEFAULT"}
    output = _output(no_connection, "dags", "test", "dmf_daily", "2021-06-01", *only_plan)
    assert "connection spark_default submits to 'yarn' but" in output and "spark.master='local[2]'" in output
    assert "DagRun failed" in output and "up_for_retry" not in output
