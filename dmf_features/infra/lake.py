"""The lake: Delta tables written by Spark tasks and committed by delta-rs. The only module that commits.

Write path (the way Spark's own Delta writer works, without the JVM connector, which cannot be
installed here): Spark tasks write Parquet files into a fresh folder inside the table,
`<table>/data-<stamp>-<id>/[<partition dirs>/]part-*.parquet`; the driver lists those files, reads
their footers (metadata only, never rows) for per-file statistics, and commits all of them in one
Delta transaction. Until that commit the files are invisible to every reader, so a job killed
before it leaves the table at its previous version; `vacuum` later deletes such orphans.

Tables are created with the default Delta protocol (reader 1, writer 2), which every Delta reader
understands, Spark's own `spark.read.format("delta")` included.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import random
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from deltalake import DeltaTable, write_deltalake
from deltalake import Field as DeltaField
from deltalake import Schema as DeltaSchema
from deltalake.exceptions import CommitFailedError, DeltaError, TableNotFoundError
from deltalake.transaction import (
    AddAction,
    CommitProperties,
    RemoveAction,
    Transaction,
    create_table_with_add_actions,
)
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.pandas.types import from_arrow_schema, to_arrow_schema
from pyspark.sql.types import StructType

from dmf_features.infra import faults, runs
from dmf_features.infra.config import LakeConfig
from dmf_features.infra.errors import PipelineError
from dmf_features.schemas import LINEAGE_KEY, RUNS, Lineage, TableSpec

log = logging.getLogger(__name__)

WriteMode = Literal["append", "overwrite"]
SchemaMode = Literal["enforce", "merge"]
PartitionFilter = tuple[str, str, Any]  # (column, op, value); op in = != < <= > >= in "not in"

_HIVE_NULL = "__HIVE_DEFAULT_PARTITION__"
_FILE_COLUMN = "_lake_file"
_MAX_STAT_STRING = 32  # like Delta's own writers: longer strings get no min/max
_HISTORY_SEARCHED = 100  # newest commits searched for one's own: concurrent writers land fewer in between


class LakeError(PipelineError):
    """A lake operation could not be done as asked; the message says why."""


class SchemaMismatchError(LakeError):
    """A write whose columns differ from the table's (and schema evolution was not asked for)."""


@dataclass(frozen=True)
class CommitResult:
    table: str
    version: int | None  # None: nothing was committed
    operation: str
    files_added: int = 0
    files_removed: int = 0
    rows_written: int = 0  # rows in the files this commit added
    rows_changed: int | None = None  # merge: source rows inserted or updated
    skipped_reason: str | None = None

    @property
    def committed(self) -> bool:
        return self.version is not None


@dataclass(frozen=True)
class _Commit:
    """One Delta transaction to make: the files it adds and removes, and what it records about itself."""

    table: str
    operation: str
    adds: list[AddAction]
    schema: StructType  # of the rows written: creates the table on its first commit
    partition_by: Sequence[str]
    mode: WriteMode = "append"
    removes: Sequence[RemoveAction] = ()
    replace_partitions: list[PartitionFilter] | None = None
    txns: list[Transaction] | None = None  # an idempotent batch's application transaction
    description: str | None = None
    read_version: int | None = None  # a merge: the version it read (recorded, and a conflict if another landed)
    lineage: Lineage | None = None


@dataclass
class _WrittenFiles:
    adds: list[AddAction] = field(default_factory=list)

    @property
    def rows(self) -> int:
        return sum(json.loads(a.stats)["numRecords"] for a in self.adds)


class Lake:
    """Named Delta tables under one root URI (a folder or an object-store prefix)."""

    def __init__(self, cfg: LakeConfig):
        self.root = cfg.uri.rstrip("/")
        self.storage_options = dict(cfg.storage_options) or None
        self.commit_retries = cfg.commit_retries
        self._fs, self._fs_root = pafs.FileSystem.from_uri(self.root if "://" in self.root else f"file://{self.root}")
        self._run_commits: dict[str, int] | None = None  # inside `stage_run`: the versions this process committed

    # ------------------------------------------------------------------------------ table handles
    def uri(self, table: str) -> str:
        return f"{self.root}/{table}"

    def exists(self, table: str) -> bool:
        return DeltaTable.is_deltatable(self.uri(table), storage_options=self.storage_options)

    def tables(self) -> list[str]:
        infos = self._fs.get_file_info(pafs.FileSelector(self._fs_root, allow_not_found=True))
        return sorted(i.base_name for i in infos if i.type == pafs.FileType.Directory and self.exists(i.base_name))

    def delta(self, table: str, version: int | None = None, as_of: dt.datetime | None = None) -> DeltaTable:
        """The table at its latest version, at `version`, or as it was at time `as_of`."""
        try:
            handle = DeltaTable(self.uri(table), version=version, storage_options=self.storage_options)
        except TableNotFoundError as e:
            raise LakeError(f"table {table!r} does not exist under {self.root}") from e
        if as_of is not None:
            handle.load_as_version(as_of)
        return handle

    def row_count(self, table: str) -> int:
        """Rows at the latest version, from the Delta log's per-file statistics (no data is read)."""
        return sum(f["rows"] for f in _active_files(self.delta(table)))

    def version(self, table: str) -> int | None:
        return self.delta(table).version() if self.exists(table) else None

    def missing_columns(self, table: str, columns: Sequence[str]) -> list[str]:
        """Those of `columns` that `table` lacks (none when the table does not exist yet)."""
        if not self.exists(table):
            return []
        present = set(_arrow_schema(self.delta(table)).names)
        return [c for c in columns if c not in present]

    # -------------------------------------------------------------------------------------- reads
    def read(
        self,
        spark: SparkSession,
        table: str,
        *,
        version: int | None = None,
        as_of: dt.datetime | None = None,
        partition_filters: Sequence[PartitionFilter] = (),
    ) -> DataFrame:
        """The table as a Spark DataFrame, partition columns included; filters on them prune files."""
        return self._read_snapshot(spark, table, self.delta(table, version, as_of), partition_filters)

    def _read_snapshot(
        self,
        spark: SparkSession,
        table: str,
        snapshot: DeltaTable,
        partition_filters: Sequence[PartitionFilter] = (),
        with_file_column: bool = False,
    ) -> DataFrame:
        schema = _arrow_schema(snapshot)
        partition_cols = list(snapshot.metadata().partition_columns)
        spark_schema = from_arrow_schema(schema)
        files = _pruned(_active_files(snapshot), schema, partition_cols, partition_filters)
        columns = spark_schema.fieldNames() + ([_FILE_COLUMN] if with_file_column else [])
        if not files:
            empty = spark.createDataFrame([], spark_schema)
            return empty.withColumn(_FILE_COLUMN, F.lit(None).cast("string")).select(*columns)
        data_schema = StructType([f for f in spark_schema.fields if f.name not in partition_cols])
        relative = [urllib.parse.unquote(f["path"]) for f in files]
        if any("://" in r or r.startswith("/") for r in relative):
            raise LakeError(f"table {table!r} refers to files outside its folder; reading those is not supported")
        df = spark.read.schema(data_schema).parquet(*(_spark_uri(f"{self.uri(table)}/{r}") for r in relative))
        # Each row's file, as its path relative to the table (how the Delta log names it). Spark
        # reuses file names across partition folders, so the whole relative path is the key.
        decoded = F.expr("url_decode(replace(_metadata.file_path, '+', '%2B'))")
        df = df.withColumn(_FILE_COLUMN, F.substring_index(decoded, f"{self._fs_root}/{table}/", -1))
        if partition_cols:
            mapping = spark.createDataFrame(
                [(r, *(f["partition"][c] for c in partition_cols)) for r, f in zip(relative, files)],
                [_FILE_COLUMN, *partition_cols],
            ).select(_FILE_COLUMN, *(F.col(c).cast(spark_schema[c].dataType).alias(c) for c in partition_cols))
            df = df.join(F.broadcast(mapping), _FILE_COLUMN)
        return df.select(*columns)

    # ------------------------------------------------------------------------------------- writes
    def write(
        self,
        df: DataFrame,
        table: str,
        *,
        mode: WriteMode = "append",
        partition_by: Sequence[str] = (),
        replace_partitions: Sequence[PartitionFilter] | None = None,
        batch_id: str | None = None,
        schema_mode: SchemaMode = "enforce",
        description: str | None = None,
        lineage: Lineage | None = None,
    ) -> CommitResult:
        """Append, overwrite, or (with `replace_partitions`) overwrite only the matching partitions.

        `batch_id` makes the write idempotent: a batch already committed (a retried job) is skipped,
        using Delta's own application-transaction record (`txn`), which every Delta reader keeps.
        `lineage` goes into the commit's metadata (`schemas.LINEAGE_KEY`): what the rows were built from.
        """
        if replace_partitions is not None and mode != "overwrite":
            raise LakeError("replace_partitions goes with mode='overwrite'")
        operation = "replace partitions" if replace_partitions else mode
        app_id = f"dmf:{table}:{batch_id}" if batch_id else None
        if app_id and self._batch_committed(table, app_id):
            return CommitResult(table, None, operation, skipped_reason=f"batch {batch_id!r} already committed")
        partition_by = self._partition_columns(table, partition_by)
        df = self._conform(df, table, schema_mode)
        written = self._write_files(df, table, partition_by)
        if replace_partitions:
            _check_within(written.adds, df.schema, replace_partitions, table)
        faults.crash_point(f"written:{table}")

        def commit(snapshot: DeltaTable | None) -> int | None:
            if app_id and snapshot is not None and snapshot.transaction_version(app_id) is not None:
                return None
            return self._commit(
                snapshot,
                _Commit(
                    table,
                    operation,
                    written.adds,
                    df.schema,
                    partition_by,
                    mode=mode,
                    replace_partitions=list(replace_partitions or []) or None,
                    txns=[Transaction(app_id, 0)] if app_id else None,
                    description=description,
                    lineage=lineage,
                ),
            )

        version = self._with_retries(table, commit)
        faults.crash_point(f"committed:{table}")
        if version is None:
            return CommitResult(table, None, operation, skipped_reason=f"batch {batch_id!r} already committed")
        return CommitResult(table, version, operation, len(written.adds), 0, written.rows)

    def merge(
        self,
        df: DataFrame,
        table: str,
        keys: Sequence[str],
        *,
        when_matched: Literal["update", "ignore"] = "update",
        partition_by: Sequence[str] = (),
        schema_mode: SchemaMode = "enforce",
        description: str | None = None,
        lineage: Lineage | None = None,
    ) -> CommitResult:
        """Upsert `df` on `keys`: new keys are inserted; matched rows are replaced when any column
        differs (`update`) or kept as they are (`ignore`). Unchanged rows cause no commit at all.
        Only the files holding replaced rows are rewritten (copy-on-write, as Delta's MERGE does)."""
        keys = list(keys)
        spark = df.sparkSession
        _require_unique_keys(df, keys, table)
        outcome: dict[str, Any] = {}

        def attempt(snapshot: DeltaTable | None) -> int | None:
            if snapshot is None:  # a new table; when another writer creates it first, the retry merges into it
                written = self._write_files(df, table, partition_by)
                faults.crash_point(f"written:{table}")
                rows = written.rows  # all of them new
                outcome.update(files_added=len(written.adds), files_removed=0, rows_written=rows, rows_changed=rows)
                first = _Commit(table, "append", written.adds, df.schema, partition_by, description=description, lineage=lineage)
                return self._commit(None, first)
            parts = self._partition_columns(table, partition_by)
            source = self._conform(df, table, schema_mode)
            columns = source.columns
            target = self._read_snapshot(spark, table, snapshot, with_file_column=True)
            changed = _changed_rows(source, target, keys, columns, when_matched).persist()
            try:
                counts = changed.groupBy(_FILE_COLUMN).count().collect()
                n_changed = sum(r["count"] for r in counts)
                touched = {r[_FILE_COLUMN] for r in counts if r[_FILE_COLUMN] is not None}
                outcome.update(rows_changed=n_changed, files_added=0, files_removed=len(touched), rows_written=0)
                if n_changed == 0:
                    return None
                kept = (
                    target.where(F.col(_FILE_COLUMN).isin(list(touched))).join(changed.select(*keys), keys, "left_anti")
                    if touched
                    else None
                )
                new_rows = changed.select(*columns)
                if kept is not None:
                    new_rows = new_rows.unionByName(kept.select(*columns))
                written = self._write_files(new_rows, table, parts)
            finally:
                changed.unpersist()
            faults.crash_point(f"written:{table}")
            removes = _remove_actions(snapshot, touched)
            outcome.update(files_added=len(written.adds), rows_written=written.rows)
            return self._commit(
                snapshot,
                _Commit(
                    table,
                    "merge",
                    written.adds,
                    source.schema,
                    parts,
                    removes=removes,
                    description=description,
                    read_version=snapshot.version(),
                    lineage=lineage,
                ),
            )

        version = self._with_retries(table, attempt)
        faults.crash_point(f"committed:{table}")
        if version is None:
            return CommitResult(table, None, "merge", rows_changed=0, skipped_reason="no row changed")
        return CommitResult(
            table,
            version,
            "merge",
            outcome["files_added"],
            outcome["files_removed"],
            outcome["rows_written"],
            outcome["rows_changed"],
        )

    def delete(self, keys_df: DataFrame, table: str, keys: Sequence[str], *, description: str | None = None) -> CommitResult:
        """Delete the rows whose `keys` appear in `keys_df`: only the files holding them are rewritten
        (copy-on-write, as Delta's DELETE does); no matching row means no commit."""
        keys = list(keys)
        if not self.exists(table):
            return CommitResult(table, None, "delete", skipped_reason="no table")
        spark, outcome = keys_df.sparkSession, {}
        wanted = keys_df.select(*keys).distinct()

        def attempt(snapshot: DeltaTable | None) -> int | None:
            assert snapshot is not None
            target = self._read_snapshot(spark, table, snapshot, with_file_column=True)
            columns = [c for c in target.columns if c != _FILE_COLUMN]
            doomed = target.join(wanted, keys, "left_semi").groupBy(_FILE_COLUMN).count().collect()
            outcome["rows"] = sum(r["count"] for r in doomed)
            if not doomed:
                return None
            touched = [r[_FILE_COLUMN] for r in doomed]
            kept = target.where(F.col(_FILE_COLUMN).isin(touched)).join(wanted, keys, "left_anti").select(*columns)
            written = self._write_files(kept, table, list(snapshot.metadata().partition_columns))
            faults.crash_point(f"written:{table}")
            return self._commit(
                snapshot,
                _Commit(
                    table,
                    "delete",
                    written.adds,
                    kept.schema,
                    list(snapshot.metadata().partition_columns),
                    removes=_remove_actions(snapshot, touched),
                    description=description,
                    read_version=snapshot.version(),
                ),
            )

        version = self._with_retries(table, attempt)
        faults.crash_point(f"committed:{table}")
        if version is None:
            return CommitResult(table, None, "delete", rows_changed=0, skipped_reason="no row matched")
        return CommitResult(table, version, "delete", rows_changed=outcome["rows"])

    # ---------------------------------------------------------------------------------------- runs
    @contextmanager
    def stage_run(self, stage: str, scope: str, produces: Sequence[str]) -> Iterator[dict[str, int | None]]:
        """Record a run of `stage` around its commits: a `started` row now, and a `complete` row with the
        versions of the `produces` tables when the block ends without an error. The block fills the
        yielded dict with the versions it read. Until the complete row lands, readers keep the previous
        run's versions (see `runs`)."""
        run_id, read = uuid.uuid4().hex, {}
        self._append_run(runs.StageRun(run_id, stage, runs.STARTED, dt.datetime.now(dt.UTC), scope, dict.fromkeys(produces)))
        at_start = {t: self.version(t) for t in produces}
        self._run_commits = {}
        try:
            yield read
            mine = self._run_commits
        finally:
            self._run_commits = None
        # a table this run changed: its own commit's version (never a concurrent run's); one it left as
        # it found it: the version it built on
        produced = {t: mine.get(t, at_start[t]) for t in produces}
        done = {t: v for t, v in read.items() if v is not None}
        self._append_run(runs.StageRun(run_id, stage, runs.COMPLETE, dt.datetime.now(dt.UTC), scope, produced, done))

    def _append_run(self, run: runs.StageRun) -> None:
        row = {**asdict(run), "produced": json.dumps(run.produced, sort_keys=True), "read": json.dumps(run.read, sort_keys=True)}
        write_deltalake(
            self.uri(RUNS.name),
            pa.Table.from_pylist([row], RUNS.schema),
            mode="append",
            storage_options=self.storage_options,
            commit_properties=CommitProperties(custom_metadata={"dmf.operation": f"run {run.stage} {run.status}"}),
        )

    def complete_version(self, table: str) -> int | None:
        """The version of `table` to read: that of the last complete run that produced it (see `runs`),
        else the latest (a table no recorded run produced); None when the table does not exist."""
        recorded = runs.complete_version(self.root, table, self.storage_options)
        return recorded if recorded is not None else self.version(table)

    # ---------------------------------------------------------------------------------- maintenance
    def history(self, table: str, limit: int | None = None) -> list[dict[str, Any]]:
        return self.delta(table).history(limit)

    def optimize(self, table: str, target_size: int | None = None) -> dict[str, Any]:
        """Compact small files into larger ones (a new version with the same rows)."""
        return self.delta(table).optimize.compact(target_size=target_size)

    def vacuum(self, table: str, retention_hours: int = 168, dry_run: bool = False) -> list[str]:
        """Delete files no version within the retention window refers to (orphans of killed jobs too);
        the paths deleted (or that would be), relative to the table."""
        removed = self.delta(table).vacuum(
            retention_hours=retention_hours, dry_run=dry_run, enforce_retention_duration=False, full=True
        )
        return removed + self._spark_leftovers(table, retention_hours, dry_run)

    def _spark_leftovers(self, table: str, retention_hours: int, dry_run: bool) -> list[str]:
        """The files of Spark writes killed before their job committed: they stay in the write folder's
        `_temporary`, which Delta's vacuum never looks at (names starting with `_` are hidden to it)."""
        cutoff, base, found = time.time() - retention_hours * 3600, f"{self._fs_root}/{table}", []
        for folder in self._fs.get_file_info(pafs.FileSelector(base, allow_not_found=True)):
            temporary = f"{folder.path}/_temporary"
            if not folder.base_name.startswith("data-") or self._fs.get_file_info(temporary).type != pafs.FileType.Directory:
                continue
            files = [
                i for i in self._fs.get_file_info(pafs.FileSelector(temporary, recursive=True)) if i.type == pafs.FileType.File
            ]
            if any(i.mtime.timestamp() > cutoff for i in files):
                continue  # a write that may still be running
            found += [i.path[len(base) + 1 :] for i in files]
            if not dry_run:
                self._fs.delete_dir(temporary)
        return found

    # ---------------------------------------------------------------------------------- internals
    def _batch_committed(self, table: str, app_id: str) -> bool:
        return self.exists(table) and self.delta(table).transaction_version(app_id) is not None

    def _partition_columns(self, table: str, requested: Sequence[str]) -> list[str]:
        if not self.exists(table):
            return list(requested)
        existing = list(self.delta(table).metadata().partition_columns)
        if requested and list(requested) != existing:
            raise LakeError(f"table {table!r} is partitioned by {existing}, not {list(requested)}")
        return existing

    def _conform(self, df: DataFrame, table: str, schema_mode: SchemaMode) -> DataFrame:
        """Check `df` against the table's schema; with `merge`, add new columns to the table first."""
        if not self.exists(table):
            return df
        table_schema = _arrow_schema(self.delta(table))
        incoming = _spark_to_arrow(df.schema)
        table_types = {f.name: f.type for f in table_schema}
        incoming_types = {f.name: f.type for f in incoming}
        missing = [n for n in table_types if n not in incoming_types]
        extra = [n for n in incoming_types if n not in table_types]
        changed = [
            f"{n}: table {table_types[n]} vs write {incoming_types[n]}"
            for n in incoming_types
            if n in table_types and not _same_type(table_types[n], incoming_types[n])
        ]
        if not (missing or extra or changed):
            return df.select(*table_schema.names)
        problems = "; ".join(
            p
            for p in (
                f"missing columns {missing}" if missing else "",
                f"unexpected columns {extra}" if extra else "",
                f"changed types [{', '.join(changed)}]" if changed else "",
            )
            if p
        )
        if schema_mode != "merge" or changed:
            hint = "" if changed else " (pass schema_mode='merge' to evolve the schema)"
            raise SchemaMismatchError(f"write to {table!r} does not match the table schema: {problems}{hint}")
        if extra:
            new_fields = [DeltaField.from_arrow(incoming.field(n)) for n in extra]
            self.delta(table).alter.add_columns(new_fields)
            log.info("table %s: added columns %s", table, extra)
        spark_table = from_arrow_schema(table_schema)
        for name in missing:
            df = df.withColumn(name, F.lit(None).cast(spark_table[name].dataType))
        return df.select(*table_schema.names, *extra)

    def _write_files(self, df: DataFrame, table: str, partition_by: Sequence[str]) -> _WrittenFiles:
        stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S")
        folder = f"data-{stamp}-{uuid.uuid4().hex[:8]}"
        writer = df.write.mode("errorifexists")
        if partition_by:
            writer = writer.partitionBy(*partition_by)
        base = f"{self._fs_root}/{table}/{folder}"
        with faults.crash_while(f"writing:{table}", lambda: self._holds_files(base)):
            writer.parquet(_spark_uri(f"{self.uri(table)}/{folder}"))
        infos = [
            i
            for i in self._fs.get_file_info(pafs.FileSelector(base, recursive=True))
            if i.type == pafs.FileType.File and i.base_name.endswith(".parquet")
        ]
        with ThreadPoolExecutor(max_workers=16) as pool:
            stats = list(pool.map(lambda i: _file_stats(self._fs, i.path), infos))
        adds: list[AddAction] = []
        for info, (num_rows, stat) in zip(infos, stats):
            if num_rows == 0:  # Spark writes an empty file for an empty input: not worth a log entry
                self._fs.delete_file(info.path)
                continue
            relative = f"{folder}/{info.path[len(base) + 1 :]}"
            adds.append(
                AddAction(
                    path=urllib.parse.quote(relative, safe="/="),
                    size=info.size,
                    partition_values=_partition_values(relative, partition_by),
                    modification_time=int(info.mtime.timestamp() * 1000),
                    data_change=True,
                    stats=json.dumps(stat),
                )
            )
        return _WrittenFiles(adds)

    def _holds_files(self, folder: str) -> bool:
        found = self._fs.get_file_info(pafs.FileSelector(folder, recursive=True, allow_not_found=True))
        return any(i.type == pafs.FileType.File for i in found)

    def _commit(self, snapshot: DeltaTable | None, commit: _Commit) -> int:
        """Make `commit` one Delta transaction on `snapshot` (None: create the table); the new version."""
        commit_id = uuid.uuid4().hex  # finds this commit's version afterwards, whatever others committed since
        metadata = {
            "dmf.operation": commit.operation,
            "dmf.rows": sum(json.loads(a.stats)["numRecords"] for a in commit.adds),
            "dmf.commitId": commit_id,
        }
        if commit.lineage:
            metadata[LINEAGE_KEY] = commit.lineage.to_json()
        if commit.read_version is not None:
            metadata["dmf.readVersion"] = commit.read_version
        # delta-rs may rebase a blind append onto a newer version by itself; a merge (which read the
        # table) or an idempotent batch must instead see the newer snapshot, so the caller retries.
        retries = 0 if (commit.removes or commit.txns) else None
        props = CommitProperties(custom_metadata=metadata, app_transactions=commit.txns, max_commit_retries=retries)
        partition_by = list(commit.partition_by) or None
        if snapshot is None:
            create_table_with_add_actions(
                self.uri(commit.table),
                DeltaSchema.from_arrow(_spark_to_arrow(commit.schema)),
                commit.adds,
                mode="error",
                partition_by=partition_by,
                description=commit.description,
                storage_options=self.storage_options,
                commit_properties=props,
            )
        else:
            snapshot.create_write_transaction(
                [*commit.adds, *commit.removes],
                commit.mode,
                schema=snapshot.schema(),
                partition_by=partition_by,
                partition_filters=_delta_filters(commit.replace_partitions),
                commit_properties=props,
            )
        version = next(
            h["version"] for h in self.delta(commit.table).history(_HISTORY_SEARCHED) if h.get("dmf.commitId") == commit_id
        )
        if self._run_commits is not None:
            self._run_commits[commit.table] = version
        return version

    def _with_retries(self, table: str, attempt: Callable[[DeltaTable | None], int | None]) -> int | None:
        """Run `attempt` on a fresh snapshot (it returns the version it committed, or None when there
        was nothing to commit); when another writer committed first, back off and retry."""
        for n in range(self.commit_retries + 1):
            snapshot = self.delta(table) if self.exists(table) else None
            try:
                return attempt(snapshot)
            except (CommitFailedError, DeltaError) as e:
                if not _is_conflict(e, snapshot is None) or n == self.commit_retries:
                    raise
                delay = min(5.0, 0.05 * 2**n) * (0.5 + random.random())
                log.info("table %s: concurrent commit (%s); retry %d in %.2fs", table, e, n + 1, delay)
                time.sleep(delay)
        raise AssertionError("unreachable")


# -------------------------------------------------------------------------------- module helpers
def spark_schema(spec: TableSpec) -> StructType:
    """A table's schema (declared in pyarrow by the Spark-free contract, `dmf_features.schemas`) for Spark."""
    return from_arrow_schema(spec.schema)


def _spark_uri(uri: str) -> str:
    """Spark's Hadoop connectors name S3 `s3a://`; delta-rs and pyarrow say `s3://`."""
    return "s3a://" + uri[5:] if uri.startswith("s3://") else uri


def _spark_to_arrow(schema: StructType) -> pa.Schema:
    return _nullable(to_arrow_schema(schema, timezone="UTC"))


def _arrow_schema(snapshot: DeltaTable) -> pa.Schema:
    return _nullable(pa.schema(snapshot.schema().to_arrow()))


def _nullable(schema: pa.Schema) -> pa.Schema:
    """Every column nullable: Delta's non-null columns are writer invariants we do not use."""

    def relax(t: pa.DataType) -> pa.DataType:
        if pa.types.is_list(t) or pa.types.is_large_list(t):
            return pa.list_(pa.field("element", relax(t.value_type), True))
        if pa.types.is_struct(t):
            return pa.struct([pa.field(f.name, relax(f.type), True) for f in t])
        if pa.types.is_large_string(t) or pa.types.is_string_view(t):
            return pa.string()
        if pa.types.is_large_binary(t) or pa.types.is_binary_view(t):
            return pa.binary()
        return t

    return pa.schema([pa.field(f.name, relax(f.type), True) for f in schema])


def _same_type(a: pa.DataType, b: pa.DataType) -> bool:
    if pa.types.is_timestamp(a) and pa.types.is_timestamp(b):
        return (a.tz is None) == (b.tz is None)
    return a.equals(b)


def _active_files(snapshot: DeltaTable) -> list[dict[str, Any]]:
    actions = pa.table(snapshot.get_add_actions(flatten=True)).to_pylist()
    return [
        {
            "path": a["path"],
            "size": a["size_bytes"],
            "rows": a["num_records"] or 0,
            "partition": {k[len("partition.") :]: _partition_text(v) for k, v in a.items() if k.startswith("partition.")},
        }
        for a in actions
    ]


def _partition_text(value: Any) -> str | None:
    """Partition values as the Delta log writes them (delta-rs hands them back typed)."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return str(value).lower()
    return value.isoformat() if isinstance(value, (dt.date, dt.datetime)) else str(value)


def _typed_partition_value(raw: str | None, arrow_type: pa.DataType) -> Any:
    if raw is None:
        return None
    if pa.types.is_date(arrow_type):
        return dt.date.fromisoformat(raw)
    if pa.types.is_integer(arrow_type):
        return int(raw)
    if pa.types.is_floating(arrow_type):
        return float(raw)
    if pa.types.is_boolean(arrow_type):
        return raw.lower() == "true"
    return raw


_OPS: dict[str, Callable[[Any, Any], bool]] = {
    "=": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
    "<": lambda a, b: a is not None and a < b,
    "<=": lambda a, b: a is not None and a <= b,
    ">": lambda a, b: a is not None and a > b,
    ">=": lambda a, b: a is not None and a >= b,
    "in": lambda a, b: a in b,
    "not in": lambda a, b: a not in b,
}


def _pruned(
    files: list[dict[str, Any]], schema: pa.Schema, partition_cols: list[str], filters: Sequence[PartitionFilter]
) -> list[dict[str, Any]]:
    for column, op, _ in filters:
        if column not in partition_cols:
            raise LakeError(f"partition filter on {column!r}, which is not a partition column {partition_cols}")
        if op not in _OPS:
            raise LakeError(f"partition filter operator {op!r} is not one of {sorted(_OPS)}")
    return [
        f
        for f in files
        if all(_OPS[op](_typed_partition_value(f["partition"][c], schema.field(c).type), value) for c, op, value in filters)
    ]


def _check_within(adds: list[AddAction], schema: StructType, filters: Sequence[PartitionFilter], table: str) -> None:
    """A partition overwrite must only write rows inside the partitions it replaces."""
    arrow = _spark_to_arrow(schema)
    for add in adds:
        for column, op, value in filters:
            typed = _typed_partition_value(add.partition_values.get(column), arrow.field(column).type)
            if not _OPS[op](typed, value):
                raise LakeError(
                    f"write to {table!r} has rows with {column}={typed}, outside the partitions it replaces "
                    f"({column} {op} {value!r})"
                )


def _delta_filters(filters: list[PartitionFilter] | None) -> list[tuple[str, str, Any]] | None:
    """delta-rs compares partition values as strings."""
    if not filters:
        return None

    def text(v: Any) -> Any:
        return [_partition_text(x) for x in v] if isinstance(v, (list, tuple, set)) else _partition_text(v)

    return [(c, op, text(v)) for c, op, v in filters]


def _partition_values(relative: str, partition_by: Sequence[str]) -> dict[str, str | None]:
    """Partition values from Spark's Hive-style folder names (`col=escaped%20value`)."""
    values: dict[str, str | None] = {}
    for part in relative.split("/")[1:-1]:
        name, _, escaped = part.partition("=")
        raw = urllib.parse.unquote(escaped)
        values[urllib.parse.unquote(name)] = None if raw == _HIVE_NULL else raw
    if set(values) != set(partition_by):
        raise LakeError(f"unexpected file layout {relative!r} for partition columns {list(partition_by)}")
    return values


def _file_stats(fs: pafs.FileSystem, path: str) -> tuple[int, dict[str, Any]]:
    """Delta file statistics (numRecords, min/max, null counts) from the Parquet footer alone."""
    with fs.open_input_file(path) as f:
        meta = pq.ParquetFile(f).metadata
    stats: dict[str, Any] = {"numRecords": meta.num_rows, "minValues": {}, "maxValues": {}, "nullCount": {}}
    for col in range(meta.num_columns):
        name = meta.schema.column(col).path
        if "." in name:  # nested (arrays, structs): Delta keeps no stats we could use for skipping
            continue
        chunks = [meta.row_group(rg).column(col).statistics for rg in range(meta.num_row_groups)]
        if not chunks or any(s is None for s in chunks):
            continue
        if all(s.has_null_count for s in chunks):
            stats["nullCount"][name] = sum(s.null_count for s in chunks)
        with_values = [s for s in chunks if s.has_min_max]
        if len(with_values) == len([s for s in chunks if s.num_values > 0]) and with_values:
            low = _stat_value(min(s.min for s in with_values), round_up=False)
            high = _stat_value(max(s.max for s in with_values), round_up=True)
            if low is not None and high is not None:
                stats["minValues"][name], stats["maxValues"][name] = low, high
    return meta.num_rows, stats


def _stat_value(value: Any, round_up: bool) -> Any:
    if isinstance(value, dt.datetime):  # Delta keeps milliseconds: widen the range, never narrow it
        value = value.astimezone(dt.UTC) if value.tzinfo else value.replace(tzinfo=dt.UTC)
        floor = value.replace(microsecond=value.microsecond // 1000 * 1000)
        if round_up and floor != value:
            floor += dt.timedelta(milliseconds=1)
        return floor.strftime("%Y-%m-%dT%H:%M:%S.") + f"{floor.microsecond // 1000:03d}Z"
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, bool) or isinstance(value, int):
        return value
    if isinstance(value, float):
        return value if value == value and abs(value) != float("inf") else None
    if isinstance(value, str):
        return value if len(value) <= _MAX_STAT_STRING else None
    return None  # binary and anything else: no min/max


def _require_unique_keys(df: DataFrame, keys: list[str], table: str) -> None:
    dupes = df.groupBy(*keys).count().where("count > 1").limit(3).collect()
    if dupes:
        shown = ", ".join(str({k: r[k] for k in keys}) for r in dupes)
        raise LakeError(f"merge into {table!r}: the source has duplicate keys {keys}, e.g. {shown}")


def _changed_rows(source: DataFrame, target: DataFrame, keys: list[str], columns: list[str], when_matched: str) -> DataFrame:
    """Source rows to write, each with the target file holding the row it replaces (null: new key)."""
    t = target.select(*[F.col(c).alias(f"__t_{c}") for c in columns], _FILE_COLUMN)
    condition = [F.col(k) == F.col(f"__t_{k}") for k in keys]
    joined = source.join(t, condition, "left")
    is_new = F.col(_FILE_COLUMN).isNull()
    if when_matched == "ignore":
        keep = is_new
    else:
        same = [F.col(c).eqNullSafe(F.col(f"__t_{c}")) for c in columns if c not in keys]
        unchanged = same[0] if same else F.lit(True)
        for s in same[1:]:
            unchanged = unchanged & s
        keep = is_new | ~unchanged
    return joined.where(keep).select(*columns, _FILE_COLUMN)


def _remove_actions(snapshot: DeltaTable, relative_paths: Iterable[str]) -> list[RemoveAction]:
    wanted = set(relative_paths)
    now = int(time.time() * 1000)
    return [
        RemoveAction(
            path=f["path"], data_change=True, deletion_timestamp=now, size=f["size"], partition_values=f["partition"] or None
        )
        for f in _active_files(snapshot)
        if urllib.parse.unquote(f["path"]) in wanted
    ]


def _is_conflict(error: Exception, was_creating: bool) -> bool:
    text = str(error).lower()
    if was_creating:  # another writer created the table first: retry as a normal commit
        return "already exists" in text or "exist" in text
    return isinstance(error, CommitFailedError) or "conflict" in text or "version" in text and "exists" in text
