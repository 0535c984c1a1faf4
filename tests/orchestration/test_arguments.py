import datetime as dt

from dmf_features.infra.config import SparkConfig
from dmf_features.infra.spark import launch_conf
from dmf_features.orchestration.arguments import STAGES, job_arguments, plan_output


def test_dated_stages_get_the_day_and_every_stage_the_config_and_overrides():
    args = job_arguments("/c.yaml", ["spark.master=local[2]"], dt.date(2018, 9, 24))
    common = ["--config", "/c.yaml", "--set", "spark.master=local[2]"]
    assert args["ingest"] == [*common, "--date", "2018-09-24"]
    assert args["build_features"] == [*common, "--date", "2018-09-24"]
    assert args["embed"] == common
    assert args["validate_inputs"] == [*common, "--table", "items", "--table", "events"]
    assert args["validate_samples"] == [*common, "--table", "samples"]


def test_without_a_day_every_stage_covers_all_days():
    args = job_arguments("/c.yaml", [], None)
    assert all("--date" not in a for a in args.values())
    assert set(args) == set(STAGES)


def test_the_plan_is_json_ready():
    import json

    plan = plan_output({"config": "/c.yaml", "overrides": ("a=1",)}, dt.date(2018, 9, 24), {"spark.driver.memory": "2g"})
    assert json.loads(json.dumps(plan)) == plan
    assert plan["day"] == "2018-09-24" and plan["launch_conf"] == {"spark.driver.memory": "2g"} and plan["overrides"] == ["a=1"]


def test_the_driver_settings_spark_submit_needs_come_from_the_config():
    """The driver JVM starts before a submitted job reads its config: its memory and JVM options must go to
    spark-submit (the DAG's --conf), or they would be silently ignored."""
    cfg = SparkConfig(driver_memory="3g", conf={"spark.driver.extraJavaOptions": "-XX:+UseSerialGC", "spark.ui.enabled": "false"})
    assert launch_conf(cfg) == {"spark.driver.memory": "3g", "spark.driver.extraJavaOptions": "-XX:+UseSerialGC"}
