"""The embedding stage: `items` -> `item_embeddings` (one row per item, modality and encoder version)
and a nearest-item index over the fused vectors.

Encoders run inside an iterator Arrow UDF, so each Python worker loads a model once and keeps it
for every batch of every task (`spark.python.worker.reuse`); images are decoded and resized there
too; vectors leave the UDFs as Arrow buffers, never as a Python object per row. A run embeds only
what is new: an (item, modality) whose input hash already has a vector for the current encoder
version is skipped, a changed title or image is embedded again, and a new encoder version adds rows
beside the old ones, so two versions can be compared.

Every item with an input gets a vector or a quarantine row with the reason (see `images.py`,
`empty_text`, `encoder_error`); a bad input never fails its batch or the job.

The fused vector is the L2-normalised concatenation (or mean, for encoders sharing one space such
as CLIP) of the item's modality vectors; a missing modality contributes zeros, so an item without
a poster is still found by its title. The modality and fused vectors of a run are written by one
merge: one commit to `item_embeddings` per run, none when nothing is new.
"""

from __future__ import annotations

import datetime as dt
import math
import os
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
from pyspark import StorageLevel
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import ArrayType, FloatType, StringType, StructField, StructType

from dmf_features.embedding import images
from dmf_features.embedding.item_index import build_index, current_index
from dmf_features.embedding.versions import Plan, fused_version, plans
from dmf_features.infra.accounting import StageAccount
from dmf_features.infra.config import Config, EmbeddingConfig
from dmf_features.infra.lake import CommitResult, Lake
from dmf_features.infra.progress import SparkProgress
from dmf_features.schemas import FUSED, ITEM_EMBEDDINGS, ITEMS, QUARANTINE

if TYPE_CHECKING:  # the driver never loads a model (versions come from the encoders' files): no torch here
    from dmf_features.embedding.encoders.base import Encoder

EMPTY_TEXT = "empty_text"
ENCODER_ERROR = "encoder_error"
_RESULT = StructType(
    [
        StructField("vector", ArrayType(FloatType())),
        StructField("reason", StringType()),
        StructField("detail", StringType()),
    ]
)
# Work per item relative to a poster, on a CPU: MiniLM on a title is about ten times cheaper than decoding
# a poster and running EfficientNet-Lite0 on it, so a text task holds ten times as many items.
_COST = {"image": 1.0, "text": 0.1}


@dataclass
class ModalityCount:
    """with_input == unchanged + embedded + quarantined; without_input items have nothing to embed."""

    modality: str
    version: str
    with_input: int
    unchanged: int = 0
    embedded: int = 0
    quarantined: dict[str, int] = field(default_factory=dict)
    without_input: int = 0

    @property
    def balanced(self) -> bool:
        return self.with_input == self.unchanged + self.embedded + sum(self.quarantined.values())


@dataclass
class EmbedReport:
    counts: list[ModalityCount]
    commits: list[CommitResult]
    index_path: str | None
    phases: dict[str, float] = field(default_factory=dict)  # seconds of setup, embed, write and index
    resolved: int = 0  # quarantine rows removed: items that failed before and are embedded now

    @property
    def account(self) -> StageAccount:
        """Over the content modalities (fused vectors are made from them, not from input)."""
        content = [c for c in self.counts if c.modality != FUSED]
        return StageAccount(
            "embed",
            "items",
            sum(c.with_input - c.unchanged for c in content),
            sum(c.embedded for c in content),
            sum(sum(c.quarantined.values()) for c in content),
            self.resolved,
        )

    def render(self) -> str:
        lines = [
            "embed:",
            "",
            f"  {'modality':<9}{'with input':>11}{'unchanged':>11}{'embedded':>10}{'quarantined':>13}{'no input':>10}   version",
        ]
        for c in self.counts:
            lines.append(
                f"  {c.modality:<9}{c.with_input:>11,}{c.unchanged:>11,}{c.embedded:>10,}"
                f"{sum(c.quarantined.values()):>13,}{c.without_input:>10,}   {c.version}"
            )
        reasons = {f"{c.modality}: {r}": n for c in self.counts for r, n in c.quarantined.items()}
        lines += ["", "quarantined by reason:"] + ([f"  {r:<28}{n:>7,}" for r, n in reasons.items()] or ["  (none)"])
        lines += [f"  resolved (embedded now){self.resolved:>12,}"]
        if all(c.embedded == 0 for c in self.counts):
            lines += ["", "nothing new to embed: every item already has vectors for these encoder versions"]
        if self.index_path:
            lines += ["", f"nearest-item index: {self.index_path}"]
        return "\n".join(lines)


def embed_items(
    spark: SparkSession,
    cfg: Config,
    lake: Lake,
    progress: Callable[[str], None] = print,
) -> EmbedReport:
    clock = time.monotonic()
    progress("loading encoders")
    plan_list = plans(cfg.embedding)
    items_version = lake.complete_version(ITEMS.name)  # never half of a crashed ingest
    items = lake.read(spark, ITEMS.name, version=items_version)
    existing = lake.read(spark, ITEM_EMBEDDINGS.name) if lake.exists(ITEM_EMBEDDINGS.name) else None
    totals = items.agg(F.count("*").alias("items"), F.count("title").alias("text"), F.count("image").alias("image")).first()
    counts, todo = [], {}
    for plan in plan_list:
        inputs = _inputs(items, plan.modality)
        todo[plan.modality] = inputs if existing is None else _not_yet_embedded(inputs, existing, plan.version)
        with_input = totals[plan.modality]
        pending = with_input if existing is None else todo[plan.modality].count()
        counts.append(
            ModalityCount(
                plan.modality,
                plan.version,
                with_input,
                unchanged=with_input - pending,
                without_input=totals["items"] - with_input,
            )
        )
    phases = {"setup": time.monotonic() - clock}

    clock, results, resolved_rows = time.monotonic(), {}, 0
    for plan, count in zip(plan_list, counts):
        if count.with_input == count.unchanged:
            progress(f"{plan.modality}: nothing to embed ({count.with_input:,} items unchanged for {plan.version})")
        else:
            results[plan.modality] = _embed_modality(spark, todo[plan.modality], plan, cfg.embedding, count, progress)
    phases["embed"] = time.monotonic() - clock

    clock = time.monotonic()
    # from here on the work per row is small: a task per core, not one per embedding task
    new = [_vector_rows(results[p.modality], p).coalesce(_slots(spark)) for p in plan_list if p.modality in results]
    fused, fused_count = _fused(existing, new, plan_list, cfg.embedding)
    fused_count.without_input = totals["items"] - fused_count.with_input
    counts.append(fused_count)
    with lake.stage_run("embed", "items", [ITEM_EMBEDDINGS.name, QUARANTINE.name]) as read:
        read[ITEMS.name] = items_version
        commits = []
        if any(c.embedded for c in counts):  # one commit for every new vector, the fused ones included
            progress("writing item_embeddings")
            fresh = [fused.where("fresh").drop("fresh")] if fused_count.embedded else []
            rows = _union(new + fresh).coalesce(_slots(spark))
            commits.append(
                lake.merge(
                    rows,
                    ITEM_EMBEDDINGS.name,
                    ITEM_EMBEDDINGS.keys,
                    partition_by=ITEM_EMBEDDINGS.partition_by,
                    description="item vectors",
                )
            )
        if any(c.quarantined for c in counts):
            rejected = [_quarantine_rows(results[p.modality], p) for p in plan_list if p.modality in results]
            commits.append(lake.merge(_union(rejected), QUARANTINE.name, QUARANTINE.keys, partition_by=QUARANTINE.partition_by))
        if results:  # an item embedded now that was quarantined before (its poster was replaced): resolved
            embedded = [_record_ids(results[p.modality].where("reason is null"), p) for p in plan_list if p.modality in results]
            resolved = lake.delete(_union(embedded), QUARANTINE.name, QUARANTINE.keys, description="items now embedded")
            commits.append(resolved)
            resolved_rows = resolved.rows_changed or 0
    for cached in (*results.values(), fused):
        if cached is not None:
            cached.unpersist()
    unbalanced = [c for c in counts if not c.balanced]
    if unbalanced:
        raise RuntimeError(f"embedding counts do not reconcile: {unbalanced}")
    phases["write"] = time.monotonic() - clock

    clock = time.monotonic()
    index_path = current_index(lake, fused_count.version)
    if index_path is None:
        progress("building the nearest-item index")
        index_path = build_index(spark, lake, fused_count.version)
    else:
        progress("the nearest-item index is up to date: built from these item_embeddings and items versions")
    phases["index"] = time.monotonic() - clock
    return EmbedReport(counts, commits, index_path, phases, resolved_rows)


def _embed_modality(
    spark: SparkSession,
    todo: DataFrame,
    plan: Plan,
    cfg: EmbeddingConfig,
    count: ModalityCount,
    progress: Callable[[str], None],
) -> DataFrame:
    """Embed `todo` (cached: item_id, input_hash, vector, reason, detail) and fill in `count`'s outcomes."""
    pending = count.with_input - count.unchanged
    result = (
        todo.repartition(_task_count(pending, plan.modality, cfg, _slots(spark)))
        .select("item_id", "input_hash", _embedding_udf(plan, cfg)(F.col("input")).alias("r"))
        .select("item_id", "input_hash", "r.*")
        .persist(StorageLevel.MEMORY_AND_DISK)
    )
    with SparkProgress(spark, pending, f"embedding {plan.modality} with {plan.encoder}", progress):
        rejected = Counter(r.reason for r in result.where("reason is not null").select("reason").collect())
    count.quarantined = dict(sorted(rejected.items()))
    count.embedded = pending - rejected.total()
    return result


def _slots(spark: SparkSession) -> int:
    """Tasks that run at once: the cores, over the cores each task takes."""
    context = spark.sparkContext
    return max(1, context.defaultParallelism // int(context.getConf().get("spark.task.cpus", "1")))


def _task_count(pending: int, modality: str, cfg: EmbeddingConfig, slots: int) -> int:
    """Tasks of at most `items_per_task` posters' worth of work (`_COST`), in whole waves of `slots` (the
    tasks that run at once) so that no core waits for the last one; but none smaller than one batch.
    Every task has a fixed cost (a few tenths of a second here), which many small tasks pay over and over."""
    waves = math.ceil(pending * _COST[modality] / (cfg.items_per_task * slots))
    return max(1, min(waves * slots, pending // cfg.batch_size))


def _fused(
    existing: DataFrame | None,
    new: list[DataFrame],
    plan_list: list[Plan],
    cfg: EmbeddingConfig,
) -> tuple[DataFrame | None, ModalityCount]:
    """Fused vectors (cached, `fresh` where the table lacks them) of the modality vectors the table will hold
    once `new` is merged into `existing`, and their count; nothing is read back after the merge."""
    version = fused_version(cfg, plan_list)
    count = ModalityCount(FUSED, version, 0)
    if not new and existing is None:
        return None, count
    merged = existing
    if new:  # a merge replaces a row with the same key, and keeps every other
        vectors, keys = _union(new), list(ITEM_EMBEDDINGS.keys)
        merged = vectors if existing is None else vectors.unionByName(existing.join(vectors.select(*keys), keys, "left_anti"))
    fused = _fused_rows(merged, plan_list, cfg)
    if existing is None:
        fused = fused.withColumn("fresh", F.lit(True))
    else:
        have = existing.where(F.col("encoder_version") == version).select("item_id", "input_hash", F.lit(False).alias("fresh"))
        fused = fused.join(have, ["item_id", "input_hash"], "left").withColumn("fresh", F.coalesce("fresh", F.lit(True)))
    fused = fused.persist(StorageLevel.MEMORY_AND_DISK)  # counted, then merged: computed once
    outcomes = {r["fresh"]: r["count"] for r in fused.groupBy("fresh").count().collect()}
    count.with_input, count.embedded, count.unchanged = sum(outcomes.values()), outcomes.get(True, 0), outcomes.get(False, 0)
    return fused, count


def _vector_rows(result: DataFrame, plan: Plan) -> DataFrame:
    return result.where("reason is null").select(
        "item_id",
        F.lit(plan.modality).alias("modality"),
        F.lit(plan.encoder).alias("encoder"),
        F.lit(plan.version).alias("encoder_version"),
        "input_hash",
        F.lit(plan.dim).alias("dim"),
        "vector",
        F.lit(dt.datetime.now(dt.UTC)).alias("embedded_at"),
    )


def _record_ids(result: DataFrame, plan: Plan) -> DataFrame:
    """The quarantine record id of each item of `result` (`item:<id>:<modality>:<encoder version>`)."""
    return result.select(_record_id(plan).alias("record_id"))


def _record_id(plan: Plan) -> Column:
    return F.concat_ws(":", F.lit("item"), "item_id", F.lit(plan.modality), F.lit(plan.version))


def _quarantine_rows(result: DataFrame, plan: Plan) -> DataFrame:
    return result.where("reason is not null").select(
        _record_id(plan).alias("record_id"),
        F.lit(f"embed:{plan.encoder}").alias("source"),
        "reason",
        "detail",
        F.concat(F.lit("item_id="), "item_id").alias("raw"),
        F.lit(ITEM_EMBEDDINGS.name).alias("target"),
    )


def _inputs(items: DataFrame, modality: str) -> DataFrame:
    """item_id, the encoder's input, and a hash of it (what decides whether to embed again)."""
    if modality == "text":
        return items.where(F.col("title").isNotNull()).select(
            "item_id", F.col("title").alias("input"), F.sha2(F.col("title"), 256).alias("input_hash")
        )
    return items.where(F.col("image").isNotNull()).select(
        "item_id", F.col("image").alias("input"), F.col("image_sha256").alias("input_hash")
    )


def _not_yet_embedded(rows: DataFrame, existing: DataFrame, version: str) -> DataFrame:
    have = existing.where(F.col("encoder_version") == version).select("item_id", "input_hash")
    return rows.join(have, ["item_id", "input_hash"], "left_anti")


def _union(frames: list[DataFrame]) -> DataFrame:
    out = frames[0]
    for f in frames[1:]:
        out = out.unionByName(f)
    return out


def _embedding_udf(plan: Plan, cfg: EmbeddingConfig):
    spec, modality, batch_size, max_pixels, device = plan.spec, plan.modality, cfg.batch_size, cfg.max_image_pixels, cfg.device

    @F.arrow_udf(_RESULT)
    def embed(batches: Iterator[pa.Array]) -> Iterator[pa.Array]:
        import torch
        from pyspark import TaskContext

        from dmf_features.embedding.encoders.base import load_encoder

        context = TaskContext.get()
        torch.set_num_threads(max(1, int(context.cpus() if context else os.cpu_count() or 1)))
        gpu = context.resources().get("gpu") if context else None  # spark.gpu on a cluster
        encoder = load_encoder(spec, device, gpu.addresses if gpu else ())  # cached per worker: loaded once, reused by every task
        for inputs in batches:
            yield embed_batch(encoder, inputs.to_pylist(), modality, batch_size, max_pixels)

    return embed


def embed_batch(encoder: Encoder, inputs: list, modality: str, batch_size: int, max_pixels: int) -> pa.StructArray:
    """Vectors for the good inputs, a reason and detail for each bad one (`_RESULT`); never raises for input."""
    n = len(inputs)
    vectors = np.zeros((n, encoder.dim), np.float32)
    reasons: list[str | None] = [None] * n
    details: list[str | None] = [None] * n
    ready: list[tuple[int, object]] = []
    for i, value in enumerate(inputs):
        if modality == "image":
            decoded = images.decode(value, max_pixels)
            if decoded.reason:
                reasons[i], details[i] = decoded.reason, decoded.detail
            else:
                ready.append((i, decoded.image))
        elif value is None or not str(value).strip():
            reasons[i], details[i] = EMPTY_TEXT, "the title is empty"
        else:
            ready.append((i, value))
    for start in range(0, len(ready), batch_size):
        chunk = ready[start : start + batch_size]
        try:
            vectors[[i for i, _ in chunk]] = encoder.embed([v for _, v in chunk])
        except Exception:  # one bad input must not cost its batch: find it by embedding one at a time
            for i, value in chunk:
                try:
                    vectors[i] = encoder.embed([value])[0]
                except Exception as e:
                    reasons[i], details[i] = ENCODER_ERROR, f"{type(e).__name__}: {e}"[:200]
    vector = _list_array(vectors, missing=np.array([r is not None for r in reasons], bool))
    return pa.StructArray.from_arrays(
        [vector, pa.array(reasons, pa.string()), pa.array(details, pa.string())], names=_RESULT.fieldNames()
    )


def _fused_rows(embeddings: DataFrame, plan_list: list[Plan], cfg: EmbeddingConfig) -> DataFrame:
    """Fused vectors for every item with at least one current modality vector."""
    parts = []
    for plan in plan_list:
        rows = embeddings.where((F.col("modality") == plan.modality) & (F.col("encoder_version") == plan.version))
        parts.append(
            rows.select("item_id", F.col("vector").alias(f"v_{plan.modality}"), F.col("input_hash").alias(f"h_{plan.modality}"))
        )
    joined = parts[0]
    for p in parts[1:]:
        joined = joined.join(p, "item_id", "full_outer")
    hashed = F.sha2(F.concat_ws("|", *[F.coalesce(F.col(f"h_{p.modality}"), F.lit("-")) for p in plan_list]), 256)
    vector = _fuse_udf([p.dim for p in plan_list], cfg.fusion)(*[F.col(f"v_{p.modality}") for p in plan_list])
    return joined.select(
        "item_id",
        F.lit(FUSED).alias("modality"),
        F.lit(cfg.fusion).alias("encoder"),
        F.lit(fused_version(cfg, plan_list)).alias("encoder_version"),
        hashed.alias("input_hash"),
        F.lit(sum(p.dim for p in plan_list) if cfg.fusion == "concat" else plan_list[0].dim).alias("dim"),
        vector.alias("vector"),
        F.lit(dt.datetime.now(dt.UTC)).alias("embedded_at"),
    )


def fuse(parts: list[np.ndarray], fusion: str) -> np.ndarray:
    """[n, d_i] unit (or all-zero: missing) vectors per modality -> [n, D] unit fused vectors."""
    raw = np.concatenate(parts, axis=1) if fusion == "concat" else np.sum(parts, axis=0)
    norms = np.linalg.norm(raw, axis=1, keepdims=True)
    return (raw / np.where(norms > 0, norms, 1.0)).astype(np.float32)


def _fuse_udf(dims: list[int], fusion: str):

    @F.arrow_udf(ArrayType(FloatType()))
    def fused(*columns: pa.Array) -> pa.Array:
        return _list_array(fuse([_matrix(column, d) for column, d in zip(columns, dims)], fusion))

    return fused


def _list_array(matrix: np.ndarray, missing: np.ndarray | None = None) -> pa.ListArray:
    """The rows of a float32 matrix as an Arrow list column (null where `missing`), built from its buffer."""
    offsets = np.arange(0, matrix.size + 1, matrix.shape[1], dtype=np.int32)
    return pa.ListArray.from_arrays(offsets, matrix.ravel(), mask=None if missing is None else pa.array(missing))


def _matrix(column: pa.ListArray, dim: int) -> np.ndarray:
    """Vectors as an [n, dim] float32 matrix, zeros where there is none (null: the item lacks the modality)."""
    matrix = np.zeros((len(column), dim), np.float32)
    matrix[column.is_valid().to_numpy(zero_copy_only=False)] = column.flatten().to_numpy().reshape(-1, dim)
    return matrix
