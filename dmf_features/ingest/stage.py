"""The ingest stage: raw sources -> `items`, `events`, `quarantine` Delta tables, counts reconciled.

Every input record ends in exactly one place: its table or the quarantine (with a reason). The
stage classifies all records before writing anything, so strict mode can refuse a dirty source
without touching the lake. Re-running it leaves the tables as they were:
- `items` is merged on item_id (unchanged items commit nothing);
- `events` replaces exactly the dates in scope (all of them without --date/--since);
- `quarantine` is merged on record id (`ratings.csv:1207`), so a record is reported once.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import reduce

from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from dmf_features.infra.accounting import StageAccount
from dmf_features.infra.config import Config, IngestConfig
from dmf_features.infra.dates import DateScope
from dmf_features.infra.errors import PipelineError
from dmf_features.infra.lake import CommitResult, Lake
from dmf_features.ingest import quarantine as q
from dmf_features.ingest.sources import movielens as ml
from dmf_features.schemas import EVENTS, ITEMS, QUARANTINE


class IngestError(PipelineError):
    """Strict mode found bad records, or the counts did not reconcile."""


@dataclass
class InputCount:
    """One input's reconciliation: rows_in == kept + quarantined + other_dates."""

    name: str
    rows_in: int  # counted from the raw input, before parsing
    kept: int
    quarantined: dict[str, int] = field(default_factory=dict)
    other_dates: int = 0  # records a dated run does not cover
    resolved: int = 0  # quarantine rows removed because this run kept their record (its line was fixed)

    @property
    def balanced(self) -> bool:
        return self.rows_in == self.kept + sum(self.quarantined.values()) + self.other_dates

    @property
    def in_scope(self) -> int:
        return self.rows_in - self.other_dates

    @property
    def quarantined_share(self) -> float:
        return sum(self.quarantined.values()) / self.in_scope if self.in_scope else 0.0


@dataclass
class IngestReport:
    scope: str
    inputs: list[InputCount]
    commits: list[CommitResult]
    table_rows: dict[str, int]

    @property
    def account(self) -> StageAccount:
        return StageAccount(
            "ingest",
            self.scope,
            sum(i.in_scope for i in self.inputs),
            sum(i.kept for i in self.inputs),
            sum(sum(i.quarantined.values()) for i in self.inputs),
            sum(i.resolved for i in self.inputs),
        )

    @property
    def quarantined_by_reason(self) -> dict[str, int]:
        reasons: dict[str, int] = {}
        for i in self.inputs:
            for reason, n in i.quarantined.items():
                reasons[reason] = reasons.get(reason, 0) + n
        return dict(sorted(reasons.items()))

    def render(self) -> str:
        lines = [
            f"ingest: {self.scope}",
            "",
            f"  {'input':<14}{'rows in':>11}{'kept':>11}{'quarantined':>13}{'other dates':>13}{'resolved':>10}",
        ]
        for i in self.inputs:
            quarantined = sum(i.quarantined.values())
            lines.append(f"  {i.name:<14}{i.rows_in:>11,}{i.kept:>11,}{quarantined:>13,}{i.other_dates:>13,}{i.resolved:>10,}")
        lines += ["", "quarantined by reason:"]
        lines += [f"  {r:<20}{n:>9,}" for r, n in self.quarantined_by_reason.items()] or ["  (none)"]
        lines += ["", "tables:"]
        for c in self.commits:
            what = f"committed version {c.version}" if c.committed else f"no new version ({c.skipped_reason})"
            lines.append(f"  {c.table:<12}{self.table_rows.get(c.table, 0):>11,} rows   {what}")
        return "\n".join(lines)


def ingest(
    spark: SparkSession,
    cfg: Config,
    lake: Lake,
    scope: DateScope = DateScope(),
    progress: Callable[[str], None] = print,
) -> IngestReport:
    files = _source_files(cfg, progress)
    progress(f"reading the {files.name} source in {files.ratings.parent} ({scope})")
    max_time = cfg.ingest.max_event_time or dt.datetime.now(dt.UTC)

    movies = _persist(ml.parse_movies(spark, files, cfg.ingest))
    known = q.kept(movies.records).select("item_id")
    inputs = [movies]
    items = q.kept(movies.records).drop("line_no")
    if files.tags is not None:
        tags, tag_lines = ml.parse_tags(spark, files, known, cfg.ingest)
        inputs.append(_persist(tag_lines))
        items = items.join(tags, "item_id", "left")
    else:
        items = items.withColumn("tags", F.lit(None).cast("array<string>"))
    if files.posters is not None:
        posters = _persist(ml.read_posters(spark, files, known, cfg.ingest))
        inputs.append(posters)
        images = q.kept(posters.records).select("item_id", "image", "image_path", "image_status", "image_sha256")
        items = items.join(images, "item_id", "left")
    else:
        items = items.select(
            "*",
            *[
                F.lit(None).cast(t).alias(c)
                for c, t in (
                    ("image", "binary"),
                    ("image_path", "string"),
                    ("image_status", "string"),
                    ("image_sha256", "string"),
                )
            ],
        )
    ratings = _persist(ml.parse_ratings(spark, files, known, cfg.ingest, scope.condition(F.col("date")), F.lit(max_time)))
    inputs.append(ratings)

    progress("classifying records")
    counts = [_count(c) for c in inputs]
    rejected = {c.name: c.quarantined for c in counts if c.quarantined}
    if cfg.ingest.strict and rejected:
        raise IngestError(f"strict mode: bad records, nothing written: {rejected}\nexamples:\n{_examples(inputs)}")
    _check_quarantined_share(counts, inputs, cfg.ingest)

    with lake.stage_run("ingest", str(scope), [ITEMS.name, EVENTS.name, QUARANTINE.name]):
        progress("writing items")
        commits = [lake.merge(_finish_items(items, files.name), ITEMS.name, ITEMS.keys, description="item catalogue")]
        progress("writing events")
        event_rows = q.kept(ratings.in_scope).select(*EVENTS.columns).repartition("date")
        events_commit = lake.write(
            event_rows,
            EVENTS.name,
            mode="overwrite",
            partition_by=EVENTS.partition_by,
            replace_partitions=scope.partitions(),
            description="behaviour events, one partition per day",
        )
        commits.append(events_commit)
        progress("writing quarantine")
        quarantined = reduce(DataFrame.unionByName, [q.quarantine_rows(c.in_scope, files.name, c.target) for c in inputs])
        commits.append(
            lake.merge(
                quarantined,
                QUARANTINE.name,
                QUARANTINE.keys,
                partition_by=QUARANTINE.partition_by,
                description="rejected records, each with the reason",
            )
        )

        progress("resolving quarantine rows of records that are now kept")
        commits.append(_resolve_quarantine(lake, inputs, counts))
        ratings_count = next(c for c in counts if c.name == ratings.input)
        _reconcile(counts, ratings_count, events_commit)
    for c in inputs:
        c.records.unpersist()
    table_rows = {t: lake.row_count(t) for t in (ITEMS.name, EVENTS.name, QUARANTINE.name)}
    return IngestReport(str(scope), counts, commits, table_rows)


def _source_files(cfg: Config, progress: Callable[[str], None]) -> ml.MovielensFiles:
    if cfg.source.kind == "synthetic":
        from dmf_features.ingest.sources.synthetic import generate

        generated = generate(cfg.source.synthetic, progress=progress)
        folder = generated.path
        return ml.MovielensFiles.at("synthetic", folder, folder / "posters", with_tags=True)
    src = cfg.source.movielens
    return ml.MovielensFiles.at("movielens", src.path, src.posters, with_tags=src.tags)


def _persist(classified: q.Classified) -> q.Classified:
    return replace(classified, records=classified.records.persist(StorageLevel.MEMORY_AND_DISK))


def _finish_items(items: DataFrame, source: str) -> DataFrame:
    """Items as the table stores them: an image status for every item, a hash of what encoders see."""
    status = F.coalesce("image_status", F.lit("missing"))
    content = F.concat_ws(
        "\u001f",
        F.coalesce("title", F.lit("")),
        F.coalesce(F.col("year").cast("string"), F.lit("")),
        F.array_join(F.coalesce("genres", F.array()), "|"),
        F.coalesce("image_sha256", F.lit("")),
    )
    return items.select(
        "item_id",
        "title",
        "year",
        "genres",
        F.coalesce("tags", F.array().cast("array<string>")).alias("tags"),
        "image",
        "image_path",
        status.alias("image_status"),
        "image_sha256",
        F.sha2(content, 256).alias("content_hash"),
        F.lit(source).alias("source"),
    ).select(*ITEMS.columns)


def _resolve_quarantine(lake: Lake, inputs: list[q.Classified], counts: list[InputCount]) -> CommitResult:
    """Remove the quarantine rows of records this run kept: the quarantine says what is wrong now,
    not what once was. Records out of this run's scope are not looked at, so they stay as they are."""
    kept = [c.in_scope.where(F.col("reason").isNull()).select("record_id", F.lit(c.input).alias("input")) for c in inputs]
    kept_ids = reduce(DataFrame.unionByName, kept)
    if lake.exists(QUARANTINE.name):
        quarantined = lake.read(kept_ids.sparkSession, QUARANTINE.name).select("record_id")
        resolved = dict(kept_ids.join(quarantined, "record_id", "left_semi").groupBy("input").count().collect())
        for count in counts:
            count.resolved = resolved.get(count.name, 0)
    return lake.delete(kept_ids, QUARANTINE.name, QUARANTINE.keys, description="quarantined records that are now kept")


def _count(classified: q.Classified) -> InputCount:
    groups = classified.records.groupBy("in_scope", "reason").count().collect()
    other = sum(g["count"] for g in groups if not g["in_scope"])
    kept = sum(g["count"] for g in groups if g["in_scope"] and g["reason"] is None)
    bad: dict[str, int] = {}
    for g in groups:
        if g["in_scope"] and g["reason"] is not None:
            bad[g["reason"]] = bad.get(g["reason"], 0) + g["count"]
    return InputCount(classified.input, classified.rows_in, kept, dict(sorted(bad.items())), other)


def _check_quarantined_share(counts: list[InputCount], inputs: list[q.Classified], cfg: IngestConfig) -> None:
    """A source this dirty is more likely read wrongly (another delimiter or encoding, a shifted
    column) than bad record by record: stop before writing, with the reasons and examples."""
    dirty = [c for c in counts if c.in_scope >= cfg.share_min_records and c.quarantined_share > cfg.max_quarantined_share]
    if not dirty:
        return
    lines = [
        f"  {c.name}: {sum(c.quarantined.values()):,} of {c.in_scope:,} records ({c.quarantined_share:.1%}), {c.quarantined}"
        for c in dirty
    ]
    names = {c.name for c in dirty}
    raise IngestError(
        f"more than ingest.max_quarantined_share ({cfg.max_quarantined_share:.1%}) of an input would be quarantined; "
        "nothing written:\n"
        + "\n".join(lines)
        + "\nexamples:\n"
        + _examples([c for c in inputs if c.input in names])
        + "\nfix the input, or raise ingest.max_quarantined_share if this much bad data is expected"
    )


def _examples(inputs: list[q.Classified]) -> str:
    """One rejected record of each reason per input (the one with the smallest id)."""
    rows = []
    for c in inputs:
        first = F.min_by(F.struct("record_id", "detail"), "record_id")
        for r in c.in_scope.where("reason is not null").groupBy("reason").agg(first.alias("e")).orderBy("reason").collect():
            rows.append(f"  {r.e.record_id}: {r.reason}: {r.e.detail}")
    return "\n".join(rows)


def _reconcile(counts: list[InputCount], ratings: InputCount, events_commit: CommitResult) -> None:
    """Every input record in exactly one place, and the events written are exactly those kept."""
    unbalanced = [c for c in counts if not c.balanced]
    if unbalanced:
        raise IngestError(f"counts do not reconcile (a record went missing or was counted twice): {unbalanced}")
    if events_commit.rows_written != ratings.kept:
        raise IngestError(f"kept {ratings.kept} events but the commit wrote {events_commit.rows_written}")
