"""The feature stage: `events` + `item_embeddings` -> `samples` (training data) and `user_sequences`
(serving state), through the lake.

A full build rewrites `samples`; `--date D` / `--since D` replace only those days' partitions, with
histories that reach back into earlier days (each user's newest `long_history_length` behaviours
before the first day are all a window can need). `user_sequences` is merged for the users with
behaviour in scope, so a run without new events commits nothing there, and Delta time travel gives
the table as of any earlier run.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from dmf_features.embedding.versions import item_vector_versions
from dmf_features.features.history_order import newest_first_window
from dmf_features.features.item_vectors import load_item_vectors
from dmf_features.features.kernels.similarity import FeatureShape, bucket_edges
from dmf_features.features.samples import (
    behaviour_events,
    item_availability,
    negative_samples,
    observed_samples,
    with_features,
)
from dmf_features.features.user_sequences import user_sequence_rows
from dmf_features.infra.accounting import StageAccount
from dmf_features.infra.config import Config
from dmf_features.infra.dates import DateScope
from dmf_features.infra.errors import PipelineError
from dmf_features.infra.lake import CommitResult, Lake
from dmf_features.infra.progress import SparkProgress
from dmf_features.infra.spark import session_conf
from dmf_features.schemas import EVENTS, ITEM_EMBEDDINGS, SAMPLES, USER_SEQUENCES, Lineage


class FeaturesError(PipelineError):
    """The stage cannot run as configured, or its counts do not reconcile."""


@dataclass
class FeaturesReport:
    scope: str
    versions: dict[str, str]
    events: int = 0  # events in scope: each is one observed sample
    negatives: int = 0
    splits: dict[str, int] = field(default_factory=dict)
    samples_written: int = 0
    users_updated: int = 0
    commits: list[CommitResult] = field(default_factory=list)
    seconds: float = 0.0
    phases: dict[str, float] = field(default_factory=dict)  # seconds of setup, samples and user_sequences

    @property
    def balanced(self) -> bool:
        return self.samples_written == self.events + self.negatives

    @property
    def account(self) -> StageAccount:
        return StageAccount("features", self.scope, self.events + self.negatives, self.samples_written, 0)

    def render(self) -> str:
        splits = ", ".join(f"{name} {count:,}" for name, count in sorted(self.splits.items()))
        lines = [
            f"features ({self.scope}) in {self.seconds:.1f}s",
            f"  events in scope      {self.events:>12,}",
            f"  sampled negatives    {self.negatives:>12,}",
            f"  samples written      {self.samples_written:>12,}   ({splits})",
            f"  user_sequences rows  {self.users_updated:>12,}   changed",
            "  item vectors: " + "; ".join(f"{m} {v}" for m, v in self.versions.items()),
        ]
        for c in self.commits:
            what = f"committed version {c.version}" if c.committed else f"no new version ({c.skipped_reason})"
            lines.append(f"  {c.table:<20} {what}")
        return "\n".join(lines)


def build_features(
    spark: SparkSession,
    cfg: Config,
    lake: Lake,
    scope: DateScope = DateScope(),
    progress: Callable[[str], None] = print,
) -> FeaturesReport:
    started = time.monotonic()
    features = cfg.features
    for table, stage in ((EVENTS.name, "dmf ingest"), (ITEM_EMBEDDINGS.name, "dmf embed")):
        if not lake.exists(table):
            raise FeaturesError(f"the lake has no {table} table yet: run `{stage}` first")
    if scope.incremental and features.split.method == "leave_last_out":
        raise FeaturesError(
            "the leave_last_out split needs a full build (a user's test event moves when new events arrive); "
            "run without --date/--since, or use features.split.method: temporal for daily builds"
        )

    progress("loading item vectors")
    try:
        versions = item_vector_versions(cfg, lake.root)
    except LookupError as e:
        raise FeaturesError(f"features.item_vectors is {features.item_vectors}, but {e}") from None
    report = FeaturesReport(str(scope), versions)
    # the versions of the last complete ingest and embed runs: never half of a crashed run
    events_version, embeddings_version = lake.complete_version(EVENTS.name), lake.complete_version(ITEM_EMBEDDINGS.name)
    loaded = load_item_vectors(spark, lake, report.versions, embeddings_version)
    progress("item vectors: " + ", ".join(f"{m} {len(v.ids):,} x {v.matrix.shape[1]}" for m, v in loaded.items()))
    edges = {m: bucket_edges(v.matrix, features.buckets, features.bucket_edges) for m, v in loaded.items()}
    progress(
        f"similarity bucket edges ({features.bucket_edges}): "
        + "; ".join(f"{m} " + " ".join(f"{e:.3f}" for e in edge) for m, edge in edges.items())
    )
    vectors = spark.sparkContext.broadcast(loaded)
    # read once: samples, negatives, histories and user_sequences all start from it
    events = lake.read(spark, EVENTS.name, version=events_version).persist(StorageLevel.MEMORY_AND_DISK)
    lineage = Lineage(
        events_version,
        embeddings_version,
        report.versions,
        str(scope),
        features.model_dump(mode="json", exclude={"batch_rows", "encoder_versions"}),
        {m: edge.tolist() for m, edge in edges.items()},
    )
    try:
        with lake.stage_run("features", str(scope), [SAMPLES.name, USER_SEQUENCES.name]) as read:
            read.update({EVENTS.name: events_version, ITEM_EMBEDDINGS.name: embeddings_version})
            _build(spark, cfg, lake, scope, events, vectors, edges, report, lineage, progress)
    finally:
        events.unpersist()
    report.seconds = time.monotonic() - started
    # the rest: item vectors and bucket edges, events read and cached, the split counts
    report.phases = {"setup": report.seconds - sum(report.phases.values()), **report.phases}
    return report


def _build(
    spark: SparkSession,
    cfg: Config,
    lake: Lake,
    scope: DateScope,
    events: DataFrame,
    vectors,
    edges: dict,
    report: FeaturesReport,
    lineage: Lineage,
    progress: Callable[[str], None],
) -> None:
    features = cfg.features
    samples = observed_samples(events.where(scope.condition(F.col("date"))), features.split)
    if features.negatives.ratio:
        availability = spark.sparkContext.broadcast(item_availability(events))
        negatives = negative_samples(
            samples.where(F.col("label") == 1), availability, features.negatives.ratio, features.negatives.seed
        )
        samples = samples.unionByName(negatives)
    samples = samples.persist(StorageLevel.MEMORY_AND_DISK)
    try:
        for row in samples.groupBy("is_negative", "split").count().collect():
            if row["is_negative"]:
                report.negatives += row["count"]
            else:
                report.events += row["count"]
            report.splits[row["split"]] = report.splits.get(row["split"], 0) + row["count"]
        if not report.events:
            progress(f"no events in scope ({scope}): nothing to build")
            return
        progress(f"{report.events:,} events in scope ({scope}), {report.negatives:,} sampled negatives")

        behaviours = behaviour_events(events, features.behaviour)
        if scope.incremental:
            behaviours = _behaviours_for_scope(behaviours, samples, scope, features.long_history_length)
        shape = FeatureShape(features.history_length, features.long_history_length, features.buckets, features.top_k)
        # one task per day writes that day's file: the partitions stay one file each
        rows = with_features(samples, behaviours, vectors, shape, edges, cfg.spark.shuffle_partitions).repartition("date")
        total = report.events + report.negatives
        started = time.monotonic()
        # rows per Arrow batch handed to the feature UDF: its memory is proportional to this
        with (
            session_conf(spark, "spark.sql.execution.arrow.maxRecordsPerBatch", str(features.batch_rows)),
            SparkProgress(spark, total, "building samples", progress, unit="samples"),
        ):
            commit = lake.write(
                rows,
                SAMPLES.name,
                mode="overwrite",
                partition_by=SAMPLES.partition_by,
                replace_partitions=scope.partitions(),
                description=f"samples ({scope})",
                lineage=lineage,
            )
        report.commits.append(commit)
        report.samples_written = commit.rows_written
        report.phases["samples"] = time.monotonic() - started
    finally:
        samples.unpersist()
    if not report.balanced:
        raise FeaturesError(
            f"samples do not reconcile: {report.events:,} events + {report.negatives:,} negatives "
            f"!= {report.samples_written:,} rows written"
        )

    progress("merging user_sequences")
    started = time.monotonic()
    report.commits.append(_merge_user_sequences(spark, cfg, lake, events, scope, vectors, lineage, progress))
    report.phases["user_sequences"] = time.monotonic() - started
    sequences = report.commits[-1]  # a merge counts the rows it changed, a rebuild the rows it wrote
    report.users_updated = sequences.rows_changed if sequences.rows_changed is not None else sequences.rows_written


def _behaviours_for_scope(behaviours: DataFrame, samples: DataFrame, scope: DateScope, long_length: int) -> DataFrame:
    """The behaviours an incremental build needs: for the users with samples in scope, their newest
    `long_length` behaviours before the first day, and their behaviours within the scope."""
    first_day = scope.date or scope.since
    users = samples.select("user_id").distinct()
    mine = behaviours.join(users, "user_id", "left_semi")
    newest = newest_first_window()
    earlier = (
        mine.where(F.col("date") < F.lit(first_day))
        .withColumn("rank", F.row_number().over(newest))
        .where(F.col("rank") <= long_length)
        .drop("rank")
    )
    return earlier.unionByName(mine.where(scope.condition(F.col("date"))))


def _merge_user_sequences(
    spark: SparkSession,
    cfg: Config,
    lake: Lake,
    events: DataFrame,
    scope: DateScope,
    vectors,
    lineage: Lineage,
    progress: Callable[[str], None],
) -> CommitResult:
    behaviours = behaviour_events(events, cfg.features.behaviour)
    as_of = events.agg(F.max("event_time")).first()[0]
    missing = lake.missing_columns(USER_SEQUENCES.name, USER_SEQUENCES.columns)
    if missing:  # written by an earlier version: every row needs the new columns, not only the changed users'
        progress(f"user_sequences lacks the columns {missing} of this version: rebuilding it for every user")
    else:
        changed_users = behaviours.where(scope.condition(F.col("date"))).select("user_id").distinct()
        behaviours = behaviours.join(changed_users, "user_id", "left_semi")
    rows = user_sequence_rows(
        behaviours, vectors, cfg.features.history_length, cfg.features.long_history_length, cfg.features.sequence_vectors, as_of
    )
    if missing:
        return lake.write(
            rows,
            USER_SEQUENCES.name,
            mode="overwrite",
            schema_mode="merge",
            description="user_sequences (rebuilt for a new schema)",
            lineage=lineage,
        )
    # a row holds L vectors per modality (about 0.7 MB at L=50 with the default encoders): the merge
    # reads the table's rows a few at a time, not Spark's default 4,096 at once
    with session_conf(spark, "spark.sql.parquet.columnarReaderBatchSize", "64"):
        return lake.merge(
            rows, USER_SEQUENCES.name, USER_SEQUENCES.keys, description=f"user_sequences ({scope})", lineage=lineage
        )
