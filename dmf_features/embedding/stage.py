"""The embedding stage: `items` -> `item_embeddings` (one row per item, modality and encoder version)
and a nearest-item index over the fused vectors.

Encoders run inside an iterator pandas UDF, so each Python worker loads a model once and keeps it
for every batch of every task (`spark.python.worker.reuse`); images are decoded and resized there
too. A run embeds only what is new: an (item, modality) whose input hash already has a vector
for the current encoder version is skipped, a changed title or image is embedded again, and a new
encoder version adds rows beside the old ones, so two versions can be compared.

Every item with an input gets a vector or a quarantine row with the reason (see `images.py`,
`empty_text`, `encoder_error`); a bad input never fails its batch or the job.

The fused vector is the L2-normalised concatenation (or mean, for encoders sharing one space such
as CLIP) of the item's modality vectors; a missing modality contributes zeros, so an item without
a poster is still found by its title.
"""

from __future__ import annotations

import datetime as dt
import math
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import ArrayType, FloatType, StringType, StructField, StructType

from dmf_features.embedding import images
from dmf_features.embedding.encoders import Encoder, EncoderSpec, load_encoder
from dmf_features.embedding.item_index import build_index
from dmf_features.infra.config import Config, EmbeddingConfig, EncoderConfig
from dmf_features.infra.lake import CommitResult, Lake
from dmf_features.infra.progress import SparkProgress
from dmf_features.schemas import ITEM_EMBEDDINGS, ITEMS, QUARANTINE

EMPTY_TEXT = "empty_text"
ENCODER_ERROR = "encoder_error"
FUSED = "fused"
_RESULT = StructType([
    StructField("vector", ArrayType(FloatType())), StructField("reason", StringType()),
    StructField("detail", StringType()),
])


@dataclass(frozen=True)
class Plan:
    """One modality's encoder as the job uses it: what it is called, its version and width."""

    modality: str
    spec: EncoderSpec
    encoder: str
    version: str
    dim: int


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

    def render(self) -> str:
        lines = ["embed:", "", f"  {'modality':<9}{'with input':>11}{'unchanged':>11}{'embedded':>10}"
                 f"{'quarantined':>13}{'no input':>10}   version"]
        for c in self.counts:
            lines.append(f"  {c.modality:<9}{c.with_input:>11,}{c.unchanged:>11,}{c.embedded:>10,}"
                         f"{sum(c.quarantined.values()):>13,}{c.without_input:>10,}   {c.version}")
        reasons = {f"{c.modality}: {r}": n for c in self.counts for r, n in c.quarantined.items()}
        lines += ["", "quarantined by reason:"] + ([f"  {r:<28}{n:>7,}" for r, n in reasons.items()] or ["  (none)"])
        if all(c.embedded == 0 for c in self.counts):
            lines += ["", "nothing new to embed: every item already has vectors for these encoder versions"]
        if self.index_path:
            lines += ["", f"nearest-item index: {self.index_path}"]
        return "\n".join(lines)


def plans(cfg: EmbeddingConfig) -> list[Plan]:
    """Load the configured encoders once on the driver for their versions and widths."""
    result = []
    for modality in ("text", "image"):
        encoder_cfg: EncoderConfig | None = getattr(cfg, modality)
        if encoder_cfg is None:
            continue
        spec = EncoderSpec(kind=encoder_cfg.kind, path=encoder_cfg.path, max_tokens=encoder_cfg.max_tokens,
                           batch_size=cfg.batch_size)
        encoder = load_encoder(spec, device="cpu")
        result.append(Plan(modality, spec, encoder.name, encoder.version, encoder.dim))
    if cfg.fusion == "mean" and len({p.dim for p in result}) > 1:
        raise ValueError(f"embedding.fusion 'mean' needs encoders of one width, got {[p.dim for p in result]}")
    return result


def fused_version(cfg: EmbeddingConfig, plan_list: list[Plan]) -> str:
    parts = "+".join(p.version for p in plan_list)
    return f"{cfg.fusion}({parts})"


def embed_items(
    spark: SparkSession, cfg: Config, lake: Lake, progress: Callable[[str], None] = print,
) -> EmbedReport:
    progress("loading encoders")
    plan_list = plans(cfg.embedding)
    items = lake.read(spark, ITEMS.name)
    existing = lake.read(spark, ITEM_EMBEDDINGS.name) if lake.exists(ITEM_EMBEDDINGS.name) else None
    total_items = items.count()
    counts, vectors, rejected, cached = [], [], [], []
    for plan in plan_list:
        count, result = _embed_modality(spark, items, existing, plan, cfg.embedding, total_items, progress)
        counts.append(count)
        if result is not None:
            cached.append(result)
            vectors.append(_vector_rows(result, plan))
            rejected.append(_quarantine_rows(result, plan))

    commits = []
    if vectors:
        progress("writing item_embeddings")
        commits.append(lake.merge(_union(vectors), ITEM_EMBEDDINGS.name, ITEM_EMBEDDINGS.keys,
                                  partition_by=ITEM_EMBEDDINGS.partition_by, description="item vectors"))
        if any(c.quarantined for c in counts):
            commits.append(lake.merge(_union(rejected), QUARANTINE.name, QUARANTINE.keys,
                                      partition_by=QUARANTINE.partition_by))
    fused = _fused_rows(lake.read(spark, ITEM_EMBEDDINGS.name), plan_list, cfg.embedding)
    fused = fused.persist(StorageLevel.MEMORY_AND_DISK)  # counted, compared and written: computed once
    cached.append(fused)
    fused_count = ModalityCount(FUSED, fused_version(cfg.embedding, plan_list), fused.count())
    fresh = _not_yet_embedded(fused, lake.read(spark, ITEM_EMBEDDINGS.name), fused_count.version)
    fused_count.embedded = fresh.count()
    fused_count.unchanged = fused_count.with_input - fused_count.embedded
    fused_count.without_input = total_items - fused_count.with_input
    counts.append(fused_count)
    if fused_count.embedded:
        progress("writing fused vectors")
        commits.append(lake.merge(fresh, ITEM_EMBEDDINGS.name, ITEM_EMBEDDINGS.keys, description="fused vectors"))
    for result in cached:
        result.unpersist()
    unbalanced = [c for c in counts if not c.balanced]
    if unbalanced:
        raise RuntimeError(f"embedding counts do not reconcile: {unbalanced}")

    progress("building the nearest-item index")
    index_path = build_index(spark, lake, fused_count.version)
    return EmbedReport(counts, commits, index_path)


def _embed_modality(
    spark: SparkSession, items: DataFrame, existing: DataFrame | None, plan: Plan, cfg: EmbeddingConfig,
    total_items: int, progress: Callable[[str], None],
) -> tuple[ModalityCount, DataFrame | None]:
    """Embed what is new for `plan`; the result (cached) has item_id, input_hash, vector, reason, detail."""
    inputs = _inputs(items, plan.modality)
    with_input = inputs.count()
    todo = inputs if existing is None else _not_yet_embedded(inputs, existing, plan.version)
    pending = todo.count()
    count = ModalityCount(plan.modality, plan.version, with_input, unchanged=with_input - pending,
                          without_input=total_items - with_input)
    if pending == 0:
        progress(f"{plan.modality}: nothing to embed ({with_input:,} items unchanged for {plan.version})")
        return count, None
    tasks = max(1, math.ceil(pending / cfg.items_per_task))
    result = (
        todo.repartition(tasks)
        .select("item_id", "input_hash", _embedding_udf(plan, cfg)(F.col("input")).alias("r"))
        .select("item_id", "input_hash", "r.*")
        .persist(StorageLevel.MEMORY_AND_DISK)
    )
    with SparkProgress(spark, pending, f"embedding {plan.modality} with {plan.encoder}", progress):
        outcomes = {r["reason"]: r["count"] for r in result.groupBy("reason").count().collect()}
    count.embedded = outcomes.pop(None, 0)
    count.quarantined = dict(sorted(outcomes.items()))
    return count, result


def _vector_rows(result: DataFrame, plan: Plan) -> DataFrame:
    return result.where("reason is null").select(
        "item_id", F.lit(plan.modality).alias("modality"), F.lit(plan.encoder).alias("encoder"),
        F.lit(plan.version).alias("encoder_version"), "input_hash", F.lit(plan.dim).alias("dim"), "vector",
        F.lit(dt.datetime.now(dt.UTC)).alias("embedded_at"),
    )


def _quarantine_rows(result: DataFrame, plan: Plan) -> DataFrame:
    return result.where("reason is not null").select(
        F.concat_ws(":", F.lit("item"), "item_id", F.lit(plan.modality), F.lit(plan.version)).alias("record_id"),
        F.lit(f"embed:{plan.encoder}").alias("source"), "reason", "detail",
        F.concat(F.lit("item_id="), "item_id").alias("raw"), F.lit(ITEM_EMBEDDINGS.name).alias("target"),
    )


def _inputs(items: DataFrame, modality: str) -> DataFrame:
    """item_id, the encoder's input, and a hash of it (what decides whether to embed again)."""
    if modality == "text":
        return items.where(F.col("title").isNotNull()).select(
            "item_id", F.col("title").alias("input"), F.sha2(F.col("title"), 256).alias("input_hash"))
    return items.where(F.col("image").isNotNull()).select(
        "item_id", F.col("image").alias("input"), F.col("image_sha256").alias("input_hash"))


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

    @F.pandas_udf(_RESULT)
    def embed(batches: Iterator[pd.Series]) -> Iterator[pd.DataFrame]:
        import torch
        from pyspark import TaskContext

        context = TaskContext.get()
        torch.set_num_threads(max(1, int(context.cpus() if context else os.cpu_count() or 1)))
        encoder = load_encoder(spec, device)  # cached per worker: loaded once, reused by every task
        for inputs in batches:
            yield embed_batch(encoder, list(inputs), modality, batch_size, max_pixels)

    return embed


def embed_batch(encoder: Encoder, inputs: list, modality: str, batch_size: int, max_pixels: int) -> pd.DataFrame:
    """Vectors for the good inputs, a reason and detail for each bad one; never raises for input."""
    n = len(inputs)
    vectors: list[np.ndarray | None] = [None] * n
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
        chunk = ready[start:start + batch_size]
        try:
            out = encoder.embed([v for _, v in chunk])
            for (i, _), vec in zip(chunk, out):
                vectors[i] = vec
        except Exception:  # one bad input must not cost its batch: find it by embedding one at a time
            for i, value in chunk:
                try:
                    vectors[i] = encoder.embed([value])[0]
                except Exception as e:
                    reasons[i], details[i] = ENCODER_ERROR, f"{type(e).__name__}: {e}"[:200]
    return pd.DataFrame({"vector": vectors, "reason": reasons, "detail": details})


def _fused_rows(embeddings: DataFrame, plan_list: list[Plan], cfg: EmbeddingConfig) -> DataFrame:
    """Fused vectors for every item with at least one current modality vector."""
    parts = []
    for plan in plan_list:
        rows = embeddings.where((F.col("modality") == plan.modality) & (F.col("encoder_version") == plan.version))
        parts.append(rows.select("item_id", F.col("vector").alias(f"v_{plan.modality}"),
                                 F.col("input_hash").alias(f"h_{plan.modality}")))
    joined = parts[0]
    for p in parts[1:]:
        joined = joined.join(p, "item_id", "full_outer")
    hashed = F.sha2(F.concat_ws("|", *[F.coalesce(F.col(f"h_{p.modality}"), F.lit("-")) for p in plan_list]), 256)
    vector = _fuse_udf([p.dim for p in plan_list], cfg.fusion)(*[F.col(f"v_{p.modality}") for p in plan_list])
    return joined.select(
        "item_id", F.lit(FUSED).alias("modality"), F.lit(cfg.fusion).alias("encoder"),
        F.lit(fused_version(cfg, plan_list)).alias("encoder_version"), hashed.alias("input_hash"),
        F.lit(sum(p.dim for p in plan_list) if cfg.fusion == "concat" else plan_list[0].dim).alias("dim"),
        vector.alias("vector"), F.lit(dt.datetime.now(dt.UTC)).alias("embedded_at"),
    )


def fuse(parts: list[np.ndarray], fusion: str) -> np.ndarray:
    """[n, d_i] unit (or all-zero: missing) vectors per modality -> [n, D] unit fused vectors."""
    raw = np.concatenate(parts, axis=1) if fusion == "concat" else np.sum(parts, axis=0)
    norms = np.linalg.norm(raw, axis=1, keepdims=True)
    return (raw / np.where(norms > 0, norms, 1.0)).astype(np.float32)


def _fuse_udf(dims: list[int], fusion: str):
    @F.pandas_udf(ArrayType(FloatType()))
    def fused(*columns: pd.Series) -> pd.Series:
        parts = [
            np.stack([np.zeros(d, np.float32) if v is None else np.asarray(v, np.float32) for v in column])
            for column, d in zip(columns, dims)
        ]
        return pd.Series(list(fuse(parts, fusion)))

    return fused
