"""The command line of each DAG task that runs a job: `--config`, the run's `--set` overrides, and the
day for the stages that take one. Pure, so that a test can read exactly what a run will submit."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence

# task id -> (extra arguments, whether the stage is limited to the run's day)
STAGE_ARGUMENTS: dict[str, tuple[tuple[str, ...], bool]] = {
    "ingest": ((), True),
    "validate_inputs": (("--table", "items", "--table", "events"), False),
    "embed": ((), False),
    "build_features": ((), True),
    "validate_samples": (("--table", "samples"), False),
}


def job_arguments(config: str, overrides: Sequence[str], day: dt.date | None) -> dict[str, list[str]]:
    """Arguments per task id; without a day (an encoder roll-out) the dated stages cover every day."""
    common = ["--config", config, *(arg for item in overrides for arg in ("--set", item))]
    return {
        task_id: [*common, *extra, *(("--date", day.isoformat()) if dated and day else ())]
        for task_id, (extra, dated) in STAGE_ARGUMENTS.items()
    }


def plan_output(params: Mapping, day: dt.date | None, driver_memory: str) -> dict:
    """What the `plan_run` task hands its downstream tasks (an XCom: JSON-serialisable)."""
    return {
        "config": params["config"],
        "overrides": list(params["overrides"]),
        "day": day.isoformat() if day else None,
        "driver_memory": driver_memory,
        **job_arguments(params["config"], params["overrides"], day),
    }
