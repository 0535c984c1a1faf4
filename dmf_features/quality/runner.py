"""Run the expectation suites on lake tables and keep the results where people look for them.

Each table is read at one pinned version (the version recorded with its results) and validated
with Great Expectations 1.x in an ephemeral context, so nothing is written to a `gx/` folder. Every
expectation's outcome becomes a row of the Delta table `validation_results` (partitioned by table)
and of `<results_dir>/<run_id>.json`; `ValidationReport.summary()` is the text a person reads.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import great_expectations as gx
from great_expectations.core import ExpectationValidationResult
from great_expectations.data_context import AbstractDataContext
from great_expectations.data_context.types.base import ProgressBarsConfig
from pyspark.sql import DataFrame, SparkSession

from dmf_features.infra.config import ConfigError, IngestConfig
from dmf_features.infra.lake import Lake, spark_schema
from dmf_features.quality.suites import suite_for
from dmf_features.schemas import VALIDATION_RESULTS

log = logging.getLogger(__name__)

MISSING_TABLE = "expect_table_to_exist"  # the outcome recorded for a table that is not in the lake
_DATASOURCE = "lake"
# BASIC: counts and up to 20 unexpected values; SUMMARY would add a value-count job per expectation
_RESULT_FORMAT = "BASIC"
_EXAMPLES = 5  # distinct unexpected values quoted in a detail


@dataclass(frozen=True)
class ExpectationResult:
    """One expectation's outcome on one table version: one row of `validation_results`."""

    table: str
    table_version: int | None
    suite: str
    expectation: str
    columns: tuple[str, ...]
    success: bool
    observed: str | None
    details: str | None

    @property
    def column_name(self) -> str | None:
        return ", ".join(self.columns) or None

    @property
    def target(self) -> str:
        """`table`, `table.column` or `table.(col, col)`: what a summary line points at."""
        if not self.columns:
            return self.table
        return f"{self.table}.{self.columns[0]}" if len(self.columns) == 1 else f"{self.table}.({self.column_name})"


@dataclass(frozen=True)
class ValidationReport:
    """The outcome of one validation run and where its results were kept."""

    run_id: str
    checked_at: dt.datetime
    results: tuple[ExpectationResult, ...]
    json_path: Path
    results_version: int | None  # version of `validation_results` that holds this run

    @property
    def success(self) -> bool:
        return all(r.success for r in self.results)

    def failures(self) -> list[ExpectationResult]:
        return [r for r in self.results if not r.success]

    def summary(self) -> str:
        failed = self.failures()
        verdict = "PASSED" if self.success else f"FAILED, {len(failed)} of {len(self.results)} expectations failed"
        lines = [f"validation run {self.run_id}: {verdict}"]
        for table, results in _by_table(self.results).items():
            version = results[0].table_version
            where = f"{table} v{version}" if version is not None else f"{table} (missing)"
            n_failed = sum(not r.success for r in results)
            lines.append(f"  {where}: {len(results) - n_failed} passed, {n_failed} failed")
        if failed:
            lines.append("failed expectations:")
            lines += [f"  {r.target}: {r.expectation}: {'; '.join(filter(None, (r.observed, r.details)))}" for r in failed]
        lines.append(f"results: Delta table {VALIDATION_RESULTS.name} v{self.results_version}, {self.json_path}")
        return "\n".join(lines)


def validate_tables(
    spark: SparkSession,
    lake: Lake,
    tables: Sequence[str],
    ingest_cfg: IngestConfig,
    results_dir: str | Path,
) -> ValidationReport:
    """Validate each table at its current version with its suite; record and return every outcome.

    A table missing from the lake is a failed expectation, not an error; a table without a suite
    is a configuration error and raises before anything runs.
    """
    if not tables:
        raise ConfigError("no tables to validate: list them in quality.tables or pass --table")
    suites = {table: suite_for(table, ingest_cfg) for table in tables}
    checked_at = dt.datetime.now(dt.UTC)
    run_id = _run_id(checked_at)
    context = _context()
    results = tuple(r for table, suite in suites.items() for r in _validate_table(spark, lake, context, table, suite))
    rows = [_row(run_id, checked_at, r) for r in results]
    json_path = _write_json(Path(results_dir) / f"{run_id}.json", run_id, checked_at, rows)
    commit = lake.write(
        spark.createDataFrame([tuple(row.values()) for row in rows], spark_schema(VALIDATION_RESULTS)),
        VALIDATION_RESULTS.name,
        partition_by=list(VALIDATION_RESULTS.partition_by),
    )
    report = ValidationReport(run_id, checked_at, results, json_path, commit.version)
    log.info("validation run %s: %d expectations, %d failed", run_id, len(results), len(report.failures()))
    return report


def _run_id(now: dt.datetime) -> str:
    """UTC time to the millisecond, then a random suffix: sorts by time, unique across processes."""
    return f"{now:%Y%m%dT%H%M%S}{now.microsecond // 1000:03d}Z-{secrets.token_hex(3)}"


def _context() -> AbstractDataContext:
    """An in-memory GX context with one Spark data source; GX's tqdm progress bars off."""
    context = gx.get_context(mode="ephemeral")
    # GX passes `disable=` to tqdm itself, so tqdm's TQDM_DISABLE variable has no effect.
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    context.data_sources.add_spark(name=_DATASOURCE)
    return context


def _validate_table(
    spark: SparkSession, lake: Lake, context: AbstractDataContext, table: str, suite: gx.ExpectationSuite
) -> list[ExpectationResult]:
    version = lake.complete_version(table)  # what readers will read: the last complete run's
    if version is None:
        detail = f"table {table!r} does not exist under {lake.root}"
        return [ExpectationResult(table, None, suite.name, MISSING_TABLE, (), False, "missing", detail)]
    df = lake.read(spark, table, version=version)
    try:
        outcomes = _run_suite(context, table, suite, df)
    finally:
        df.unpersist()  # GX persists the batch DataFrame (so its jobs share one scan) and never releases it
    return [_result(table, version, suite.name, r) for r in outcomes]


def _run_suite(
    context: AbstractDataContext, table: str, suite: gx.ExpectationSuite, df: DataFrame
) -> list[ExpectationValidationResult]:
    """The suite's results on `df` in the suite's order (GX returns them in its own plan's order)."""
    asset = context.data_sources.get(_DATASOURCE).add_dataframe_asset(name=table)
    batch = asset.add_batch_definition_whole_dataframe(name=table)
    added = context.suites.add(suite)  # gives each expectation the id its result carries
    definition = context.validation_definitions.add(gx.ValidationDefinition(name=table, data=batch, suite=added))
    outcome = definition.run(batch_parameters={"dataframe": df}, result_format=_RESULT_FORMAT)
    order = {e.id: i for i, e in enumerate(added.expectations)}
    return sorted(outcome.results, key=lambda r: order.get(r.expectation_config.id, len(order)))


def _result(table: str, version: int, suite: str, r: ExpectationValidationResult) -> ExpectationResult:
    config = r.expectation_config
    kwargs = config.kwargs
    if "column_list" in kwargs:
        columns = tuple(kwargs["column_list"])
    else:
        columns = tuple(kwargs[k] for k in ("column", "column_A", "column_B") if k in kwargs)
    observed, details = _describe(r.result or {}, kwargs, _error(r.exception_info))
    return ExpectationResult(table, version, suite, config.type, columns, bool(r.success), observed, details)


def _describe(result: dict[str, Any], kwargs: dict[str, Any], error: str | None) -> tuple[str | None, str | None]:
    """(observed, details): what was measured and, for a failure, what was wrong in words."""
    if error:
        return None, f"error: {error}"
    if "observed_value" in result:  # aggregate expectations (row count, ...)
        return _text(result["observed_value"]), _expected_range(kwargs)
    if "unexpected_count" not in result:
        return None, None
    unexpected, total = result["unexpected_count"], result.get("element_count")
    observed = f"{unexpected} of {total} rows unexpected"
    if not unexpected:
        return observed, None
    examples = _distinct(result.get("partial_unexpected_list") or [])
    if examples and all(v is None for v in examples):
        return observed, f"{unexpected} null value{'s' if unexpected != 1 else ''}"
    return observed, f"{unexpected} unexpected value{'s' if unexpected != 1 else ''}, e.g. {_text(examples)}"


def _expected_range(kwargs: dict[str, Any]) -> str | None:
    low, high = kwargs.get("min_value"), kwargs.get("max_value")
    if low is not None and high is not None:
        return f"expected between {low} and {high}"
    if low is not None:
        return f"expected >= {low}"
    return f"expected <= {high}" if high is not None else None


def _error(info: dict[str, Any] | None) -> str | None:
    """The message of an expectation that raised. GX 1.x gives either one flat record or, when a
    metric failed (a missing column, say), a mapping of metric ids to records."""
    if not info:
        return None
    records = [info] if "raised_exception" in info else [v for v in info.values() if isinstance(v, dict)]
    messages = [
        (rec.get("exception_message") or "unknown error").removeprefix("Error: ")
        for rec in records
        if rec.get("raised_exception")
    ]
    return "; ".join(dict.fromkeys(messages)) or None


def _distinct(values: list[Any]) -> list[Any]:
    """The first few distinct values (rows of a compound key come as dicts, which do not hash)."""
    seen: dict[str, Any] = {}
    for value in values:
        seen.setdefault(_text(value), value)
    return list(seen.values())[:_EXAMPLES]


def _text(value: Any) -> str:
    return json.dumps(value, default=lambda v: v.item() if hasattr(v, "item") else str(v))


def _by_table(results: Sequence[ExpectationResult]) -> dict[str, list[ExpectationResult]]:
    grouped: dict[str, list[ExpectationResult]] = {}
    for r in results:
        grouped.setdefault(r.table, []).append(r)
    return grouped


def _row(run_id: str, checked_at: dt.datetime, r: ExpectationResult) -> dict[str, Any]:
    """A `validation_results` row, its keys in the table's column order."""
    values = {
        "run_id": run_id,
        "checked_at": checked_at,
        "table_name": r.table,
        "table_version": r.table_version,
        "suite": r.suite,
        "expectation": r.expectation,
        "column_name": r.column_name,
        "success": r.success,
        "observed": r.observed,
        "details": r.details,
    }
    return {name: values[name] for name in VALIDATION_RESULTS.columns}


def _write_json(path: Path, run_id: str, checked_at: dt.datetime, rows: list[dict[str, Any]]) -> Path:
    """Written to a temporary name and renamed, so a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "run_id": run_id,
        "checked_at": checked_at.isoformat(),
        "success": all(row["success"] for row in rows),
        "results": [{**row, "checked_at": checked_at.isoformat()} for row in rows],
    }
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(document, indent=2) + "\n")
    partial.replace(path)
    return path
