"""Which table versions belong together: the `runs` table, read without Spark.

A stage commits its tables one by one (ingest: items, events, quarantine; features: samples, then
user_sequences), so a job killed between two commits leaves the newest versions of its tables from
two different runs. Each stage run therefore appends a `started` row naming the tables it will write
and, after its last commit, a `complete` row with the versions it produced and read (see
`Lake.stage_run`). Readers (the next stage, the trainer, `dmf recommend`) take a table at the version
of the last complete run that produced it, never simply the latest; a table that runs write but no
run has completed yet is not readable at all.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field

import pyarrow.parquet as pq
from deltalake import DeltaTable

from dmf_features.schemas import RUNS

STARTED, COMPLETE = "started", "complete"


class IncompleteRunError(LookupError):
    """Runs write this table, but none of them has completed: there is no consistent version to read."""


@dataclass(frozen=True)
class StageRun:
    run_id: str
    stage: str
    status: str  # STARTED or COMPLETE
    at: dt.datetime
    scope: str
    produced: dict[str, int | None]  # table -> the version the run left it at (None while started)
    read: dict[str, int] = field(default_factory=dict)  # table -> the version the run read


def stage_runs(lake_root: str, storage_options: dict | None = None) -> list[StageRun]:
    """Every recorded run row, oldest first (none when the lake has no `runs` table yet)."""
    uri = f"{lake_root.rstrip('/')}/{RUNS.name}"
    if not DeltaTable.is_deltatable(uri, storage_options=storage_options):
        return []
    files = DeltaTable(uri, storage_options=storage_options).file_uris()
    rows = [r for f in files for r in pq.read_table(f.removeprefix("file://")).to_pylist()]
    runs = [
        StageRun(r["run_id"], r["stage"], r["status"], r["at"], r["scope"], json.loads(r["produced"]), json.loads(r["read"]))
        for r in rows
    ]
    return sorted(runs, key=lambda r: (r.at, r.status == COMPLETE))


def complete_version(lake_root: str, table: str, storage_options: dict | None = None) -> int | None:
    """The newest version of `table` that a complete run produced (runs may overlap: two ingests of
    different days each produce a version, and the later one holds both). None when no run writes
    it (a lake from before runs were recorded, or a table written by hand): then the latest is meant."""
    return _complete_version(stage_runs(lake_root, storage_options), table)


def readable_versions(lake_root: str, storage_options: dict | None = None) -> dict[str, int]:
    """`complete_version` of every table a complete run produced, from one read of `runs`."""
    recorded = stage_runs(lake_root, storage_options)
    tables = {t for r in recorded if r.status == COMPLETE for t in r.produced}
    versions = {t: _complete_version(recorded, t) for t in sorted(tables)}
    return {t: v for t, v in versions.items() if v is not None}


def _complete_version(recorded: list[StageRun], table: str) -> int | None:
    writing = [r for r in recorded if table in r.produced]
    if not writing:
        return None
    complete = [r for r in writing if r.status == COMPLETE]
    if not complete:
        started = writing[-1]
        raise IncompleteRunError(
            f"{table}: no run that writes it has completed (the {started.stage} run started at "
            f"{started.at:%Y-%m-%d %H:%M:%S} UTC did not finish): run `dmf {started.stage}` again"
        )
    versions = [r.produced[table] for r in complete if r.produced[table] is not None]
    return max(versions) if versions else None
