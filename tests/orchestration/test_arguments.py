import datetime as dt

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

    plan = plan_output({"config": "/c.yaml", "overrides": ("a=1",)}, dt.date(2018, 9, 24), "2g")
    assert json.loads(json.dumps(plan)) == plan
    assert plan["day"] == "2018-09-24" and plan["driver_memory"] == "2g" and plan["overrides"] == ["a=1"]
