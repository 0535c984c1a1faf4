"""The command line of each DAG task that runs a job: `--config`, the run's `--set` overrides, and the
day for the stages that take one. Pure, so that a test can read exactly what a run will submit."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Stage:
    job: str  # jobs/<job>.py
    extra: tuple[str, ...] = ()
    dated: bool = False  # limited to the run's day, when the run has one


# task id -> its job: the Spark stages of the daily pipeline, in order (the roll-out uses a subset)
STAGES: dict[str, Stage] = {
    "ingest": Stage("ingest", dated=True),
    "validate_inputs": Stage("validate", ("--table", "items", "--table", "events")),
    "embed": Stage("embed_items"),
    "build_features": Stage("build_features", dated=True),
    "validate_samples": Stage("validate", ("--table", "samples")),
}


def job_arguments(config: str, overrides: Sequence[str], day: dt.date | None) -> dict[str, list[str]]:
    """Arguments per task id; without a day (an encoder roll-out) the dated stages cover every day."""
    common = ["--config", config, *(arg for item in overrides for arg in ("--set", item))]
    return {
        task_id: [*common, *stage.extra, *(("--date", day.isoformat()) if stage.dated and day else ())]
        for task_id, stage in STAGES.items()
    }


def plan_output(params: Mapping, day: dt.date | None, launch_conf: Mapping[str, str]) -> dict:
    """What the `plan_run` task hands its downstream tasks (an XCom: JSON-serialisable). `launch_conf`:
    the config's driver settings that spark-submit must be given (`infra.spark.launch_conf`)."""
    return {
        "config": params["config"],
        "overrides": list(params["overrides"]),
        "day": day.isoformat() if day else None,
        "launch_conf": dict(launch_conf),
        **job_arguments(params["config"], params["overrides"], day),
    }
