"""Benchmark: the Spark feature job against the single-process reference, and how the job scales.

The feature stage (`dmf_features.features.build_features`) turns `events` and `item_embeddings` into
`samples` (point-in-time histories and DMF's target-aware similarity features) and `user_sequences`.
This measures it on the project's synthetic data, ingested by the real ingest into a fresh lake per
size (users = events / 100, a fixed catalogue of items):

(a) job vs reference, at 1M and 10M events by default:
    - job: the whole `build_features` call (full build, local[2]): loading and broadcasting the item
      vectors, reading and caching `events`, the split counts, computing the features and writing
      `samples` to Delta, and merging `user_sequences`; both tables are removed before each call,
      so every call writes everything. Throughput = samples written / seconds of the call.
    - reference: `dmf_features.testing.reference.reference_features`, the single-process pandas/numpy
      implementation of the same spec, on the same events (read from the `events` table's Parquet
      files, the Delta add-action list, with pyarrow) and the same vectors, with the same L, L_long,
      B and K. Only its feature computation is timed: not reading the events, not selecting users.
      It is called on chunks of whole users (about REF_CHUNK_EVENTS events each, every user's events
      in one chunk, which changes nothing in its output) so that its memory stays bounded; its
      output is discarded. Where a size has more events than `--reference-max-samples`, the
      reference runs on a fixed random subset of users (all their events), and its measured
      samples/s on that subset is what the ratio uses; the output says "reference measured on N
      samples of M".
    ratio = job samples/s / reference samples/s, at the largest size (goal: >= 1 at 10M).
(b) scaling: the job at 1x, 4x and 16x a base size (250k events by default), one run each: samples/s,
    MB/s of `samples` Parquet written (the sizes of the files the commit added, from the Delta log),
    and the cost growth (time_16x / time_1x) / 16 (goal: <= 1.2).

Item vectors are random unit vectors written straight into `item_embeddings` (text 384-d; image
1,280-d for 70% of items, as on the real data where about 30% have no poster; fused 1,664-d = the
normalised concatenation, zeros for a missing image), selected with `features.encoder_versions`:
the benchmark measures the feature stage, not the encoders. Before the first timed call, one
untimed `build_features` call on the smallest lake warms the JVM and Spark's Python workers.
Each size is run once (a 10M call takes many minutes): on this shared 2-core machine, run-to-run
noise is about +-10-15%. The load average before each call is recorded. The job's phases (setup,
samples, user_sequences) are the `phases` of its `FeaturesReport`.

usage: python -m bench.features [--quick | --tiny] [--sizes N ...] [--scale-base N] [--reference-max-samples N]
"""

from __future__ import annotations

import argparse
import gc
import os
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from bench.common import final_line, parser, write_results
from dmf_features.features.kernels.similarity import bucket_edges
from dmf_features.features.stage import build_features
from dmf_features.infra.config import Config, load_config
from dmf_features.infra.lake import Lake, spark_schema
from dmf_features.infra.spark import get_spark
from dmf_features.ingest import ingest
from dmf_features.schemas import EVENTS, ITEM_EMBEDDINGS, SAMPLES, USER_SEQUENCES
from dmf_features.testing.reference import reference_features

NAME = "features"
PROJECT = Path(__file__).resolve().parent.parent
BASE_CONFIG = PROJECT / "conf" / "synthetic.yaml"
WORK = Path("/tmp/benchfeat")  # every lake, generated data set and Spark spill lives here, removed at the end
MASTER = "local[2]"
DRIVER_MEMORY = "8g"
PACKAGES = ("pyspark", "pandas", "numpy", "pyarrow", "deltalake", "faiss-cpu")
DIMS = {"text": 384, "image": 1280}  # fused: their concatenation, 1,664
IMAGE_MISSING = 0.3  # share of items without an image vector
VERSIONS = {"text": "bench-random-text@384", "image": "bench-random-image@1280", "fused": "bench-random-fused@1664"}
USERS_PER_EVENT = 1 / 100
REF_CHUNK_EVENTS = 100_000
REF_SEED = 2024
CHECK_USERS = 40  # users whose job rows are compared with the reference's


class Shape(NamedTuple):
    history_length: int = 50
    long_history_length: int = 500
    buckets: int = 10
    top_k: int = 10


class Plan(NamedTuple):
    sizes: tuple[int, ...]  # (a): job vs reference
    scale_base: int  # (b): the job at base * factors
    scale_factors: tuple[int, ...]
    items: int
    reference_max_samples: int
    warm_up: bool = True  # one untimed build_features call first (the tiny run, which measures nothing, skips it)


PLANS = {
    "full": Plan(
        sizes=(1_000_000, 10_000_000), scale_base=250_000, scale_factors=(1, 4, 16), items=5_000, reference_max_samples=2_000_000
    ),
    "quick": Plan(sizes=(20_000,), scale_base=1_250, scale_factors=(1, 4, 16), items=500, reference_max_samples=2_000_000),
    "tiny": Plan(
        sizes=(1_000,), scale_base=1_000, scale_factors=(1,), items=100, reference_max_samples=2_000_000, warm_up=False
    ),  # one lake, every step once
}


def parse_size(text: str) -> int:
    """1000000, 1M, 250k, 2.5k."""
    text = text.strip().lower().replace("_", "").replace(",", "")
    factor = {"k": 1_000, "m": 1_000_000}.get(text[-1:], 1)
    return int(float(text[:-1] if factor > 1 else text) * factor)


def label(n: int) -> str:
    if n >= 1_000_000 and n % 100_000 == 0:
        return f"{n / 1_000_000:g}m"
    if n >= 1_000 and n % 100 == 0:
        return f"{n / 1_000:g}k"
    return str(n)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    quick, tiny, full = PLANS["quick"], PLANS["tiny"], PLANS["full"]
    options = parser(
        NAME,
        __doc__,
        quick=f"small sizes ({', '.join(map(label, quick.sizes))} events; scaling from {label(quick.scale_base)}), a few minutes",
        tiny=f"{', '.join(map(label, tiny.sizes))} events, one lake, no warm-up",
    )
    options.add_argument(
        "--sizes", nargs="+", type=parse_size, help="event counts for job vs reference (default 1M 10M; accepts 250k, 1M, ...)"
    )
    options.add_argument(
        "--scale-base", type=parse_size, help=f"base size of the scaling run (default {label(full.scale_base)}); 0 skips it"
    )
    options.add_argument(
        "--reference-max-samples",
        type=parse_size,
        help=f"above this many events the reference runs on a random subset of users "
        f"(default {label(full.reference_max_samples)})",
    )
    options.add_argument("--keep", action="store_true", help=f"keep {WORK} at the end (default: delete it)")
    return options.parse_args(argv)


# ------------------------------------------------------------------------------------------- inputs


def job_config(n: int, items: int, shape: Shape) -> Config:
    """conf/synthetic.yaml on local[2]; a lake and a data folder of its own for `n` events."""
    folder = WORK / label(n)
    return load_config(
        BASE_CONFIG,
        [
            f"spark.master={MASTER}",
            f"spark.driver_memory={DRIVER_MEMORY}",
            f"lake.uri={folder / 'lake'}",
            f"source.synthetic.output={folder / 'data'}",
            f"source.synthetic.events={n}",
            f"source.synthetic.users={max(1, round(n * USERS_PER_EVENT))}",
            f"source.synthetic.items={items}",
            f"features.history_length={shape.history_length}",
            f"features.long_history_length={shape.long_history_length}",
            f"features.buckets={shape.buckets}",
            f"features.top_k={shape.top_k}",
            *(f"features.encoder_versions.{m}={v}" for m, v in VERSIONS.items()),
        ],
    )


def random_vectors(item_ids: np.ndarray, seed: int = 0) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{modality: (sorted ids, float32 unit rows)}; ~30% of items have no image vector; fused is the
    normalised [text, image] (zeros for a missing image), as the embedding stage builds it."""
    rng = np.random.default_rng(seed)
    ids = np.sort(np.asarray(item_ids, np.int64))

    def unit(rows: int, dim: int) -> np.ndarray:
        m = rng.normal(size=(rows, dim)).astype(np.float32)
        return m / np.linalg.norm(m, axis=1, keepdims=True)

    text = unit(len(ids), DIMS["text"])
    has_image = rng.random(len(ids)) >= IMAGE_MISSING
    image = unit(int(has_image.sum()), DIMS["image"])
    padded = np.zeros((len(ids), DIMS["image"]), np.float32)
    padded[has_image] = image
    fused = np.concatenate([text, padded], axis=1)
    fused /= np.linalg.norm(fused, axis=1, keepdims=True)
    return {"text": (ids, text), "image": (ids[has_image], image), "fused": (ids, fused)}


def write_vectors(spark: SparkSession, lake: Lake, vectors: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
    frames = []
    for modality, (ids, matrix) in vectors.items():
        frames.append(
            pd.DataFrame(
                {
                    "item_id": ids,
                    "modality": modality,
                    "encoder": "bench-random",
                    "encoder_version": VERSIONS[modality],
                    "input_hash": [f"r{i}" for i in ids],
                    "dim": np.int32(matrix.shape[1]),
                    "vector": list(matrix),
                    "embedded_at": pd.Timestamp("2024-01-01", tz="UTC"),
                }
            )
        )
    df = spark.createDataFrame(pd.concat(frames, ignore_index=True), spark_schema(ITEM_EMBEDDINGS))
    lake.write(df, ITEM_EMBEDDINGS.name, mode="overwrite", partition_by=ITEM_EMBEDDINGS.partition_by)


def prepare(spark: SparkSession, cfg: Config, say) -> tuple[Lake, dict, dict[str, Any]]:
    """Generate the synthetic source, ingest it (events, items, quarantine), write the vectors."""
    lake = Lake(cfg.lake)
    start = time.perf_counter()
    report = ingest(spark, cfg, lake, progress=lambda m: say(f"ingest: {m}"))
    ingest_s = time.perf_counter() - start
    vectors = random_vectors(np.arange(1, cfg.source.synthetic.items + 1))
    write_vectors(spark, lake, vectors)
    events = lake.row_count(EVENTS.name)
    say(
        f"prepared in {time.perf_counter() - start:.1f}s: {events:,} events kept of "
        f"{cfg.source.synthetic.events:,} generated, {report.table_rows.get('items', 0):,} items"
    )
    return lake, vectors, {"events": events, "prepare_s": round(time.perf_counter() - start, 1), "ingest_s": round(ingest_s, 1)}


def table_files(lake: Lake, table: str) -> list[dict[str, Any]]:
    """The table's active files (path relative to the table, size in bytes), from the Delta log."""
    actions = pa.table(lake.delta(table).get_add_actions(flatten=True)).to_pylist()
    return [{"path": a["path"], "size": a["size_bytes"]} for a in actions]


def drop_outputs(lake: Lake) -> None:
    for table in (SAMPLES.name, USER_SEQUENCES.name):
        shutil.rmtree(Path(lake.uri(table)), ignore_errors=True)


# ------------------------------------------------------------------------------------------ the job


def run_job(spark: SparkSession, cfg: Config, lake: Lake, say) -> dict[str, Any]:
    """One timed full `build_features` call from a lake without `samples` and `user_sequences`."""
    drop_outputs(lake)
    spark.catalog.clearCache()
    gc.collect()
    load = os.getloadavg()[0]
    start = time.perf_counter()
    report = build_features(spark, cfg, lake, progress=lambda msg: say(f"job [{time.perf_counter() - start:7.1f}s] {msg}"))
    seconds = time.perf_counter() - start
    if not report.balanced:
        raise RuntimeError(f"job did not reconcile: {report}")
    samples_s = report.phases["samples"]
    samples_bytes = sum(f["size"] for f in table_files(lake, SAMPLES.name))
    sequences_bytes = sum(f["size"] for f in table_files(lake, USER_SEQUENCES.name))
    n = report.samples_written
    return {
        "samples": n,
        "s": round(seconds, 2),
        "per_s": round(n / seconds, 1),
        "setup_s": round(report.phases["setup"], 2),  # vectors, events read + cached, split counts
        "samples_phase_s": round(samples_s, 2),  # features computed and `samples` written + committed
        "user_sequences_s": round(report.phases["user_sequences"], 2),  # user_sequences built and merged
        "samples_phase_per_s": round(n / samples_s, 1),
        "samples_mb": round(samples_bytes / 1e6, 1),
        "samples_mb_per_s": round(samples_bytes / 1e6 / seconds, 2),
        "samples_files": len(table_files(lake, SAMPLES.name)),
        "user_sequences_rows": report.users_updated,
        "user_sequences_mb": round(sequences_bytes / 1e6, 1),
        "load_avg_before": round(load, 2),
    }


# ------------------------------------------------------------------------------------ the reference


def read_events(lake: Lake) -> pa.Table:
    """The `events` table's rows (the columns the reference reads), from its Parquet files."""
    root = Path(lake.uri(EVENTS.name))
    columns = ["user_id", "item_id", "event_time", "event_type", "label"]
    return pa.concat_tables(pq.read_table(root / f["path"], columns=columns) for f in table_files(lake, EVENTS.name))


def reference_subset(events: pa.Table, max_samples: int) -> tuple[pa.Table, float]:
    """All events, or those of a fixed random share of users so that about max_samples remain."""
    if events.num_rows <= max_samples:
        return events, 1.0
    fraction = max_samples / events.num_rows
    users = np.unique(events.column("user_id").to_numpy())
    chosen = np.random.default_rng(REF_SEED).random(len(users)) < fraction
    return events.filter(pc.is_in(events.column("user_id"), pa.array(users[chosen]))), fraction


def run_reference(
    lake: Lake, vectors: dict, shape: Shape, max_samples: int, check_users: np.ndarray | None, say
) -> tuple[dict[str, Any], pd.DataFrame]:
    """Time `reference_features` over the (subset of) events, in chunks of whole users."""
    all_events = read_events(lake)
    total = all_events.num_rows
    table, fraction = reference_subset(all_events, max_samples)
    del all_events
    frame = table.to_pandas()
    del table
    frame = frame.sort_values("user_id", kind="stable").reset_index(drop=True)
    users = frame["user_id"].to_numpy()
    starts = np.flatnonzero(np.r_[True, users[1:] != users[:-1]])
    bounds, last = [0], 0
    for s in starts[1:]:
        if s - last >= REF_CHUNK_EVENTS:
            bounds.append(int(s))
            last = s
    bounds.append(len(frame))
    chunks = [frame.iloc[a:b] for a, b in zip(bounds[:-1], bounds[1:])]
    check = set(check_users.tolist()) if check_users is not None else set()
    kept: list[pd.DataFrame] = []
    gc.collect()
    load = os.getloadavg()[0]
    seconds = 0.0
    done = 0
    # the job's bucket boundaries, from the same vectors (a stage output, not part of the per-sample work)
    edges = {m: bucket_edges(matrix, shape.buckets) for m, (_, matrix) in vectors.items()}
    for i, chunk in enumerate(chunks):
        start = time.perf_counter()
        out = reference_features(
            chunk,
            vectors,
            history_length=shape.history_length,
            long_history_length=shape.long_history_length,
            buckets=shape.buckets,
            top_k=shape.top_k,
            bucket_edges=edges,
        )
        seconds += time.perf_counter() - start
        done += len(out)
        if check:
            kept.append(out[out["user_id"].isin(check)])
        del out
        if i % 5 == 4 or i == len(chunks) - 1:
            say(f"reference: {done:,} / {len(frame):,} samples in {seconds:.1f}s ({done / seconds:,.1f}/s)")
    figures = {
        "samples": done,
        "of_samples": total,
        "user_fraction": round(fraction, 4),
        "s": round(seconds, 2),
        "per_s": round(done / seconds, 1),
        "chunks": len(chunks),
        "load_avg_before": round(load, 2),
    }
    return figures, (pd.concat(kept, ignore_index=True) if kept else pd.DataFrame())


def pick_check_users(lake: Lake, max_samples: int) -> np.ndarray:
    """A few users the reference will cover (from its subset), to compare its rows with the job's."""
    events = read_events(lake)
    subset, _ = reference_subset(events, max_samples)
    users = np.unique(subset.column("user_id").to_numpy())
    return np.random.default_rng(REF_SEED + 1).choice(users, min(CHECK_USERS, len(users)), replace=False)


def compare(spark: SparkSession, lake: Lake, expected: pd.DataFrame, users: np.ndarray) -> dict[str, Any]:
    """Job rows vs reference rows of the check users: the same samples and, column by column, the same
    histories and features (similarities and histograms within 1e-5, everything else exactly)."""
    columns = [c for c in expected.columns if c not in ("user_id", "item_id", "event_time", "event_type", "label")]
    got = (
        lake.read(spark, SAMPLES.name)
        .where(F.col("user_id").isin([int(u) for u in users]))
        .select(*columns)
        .toPandas()
        .set_index("sample_id")
    )
    ref = expected.set_index("sample_id")
    both = ref.index.intersection(got.index)
    mismatches: dict[str, int] = {}
    example: dict[str, Any] = {}
    for column in columns[1:]:
        for sid in both:
            a, b = np.asarray(got.at[sid, column]), np.asarray(ref.at[sid, column])
            if a.dtype.kind == "f" or b.dtype.kind == "f":
                ok = a.shape == b.shape and np.allclose(a.astype(np.float64), b.astype(np.float64), atol=1e-5, equal_nan=True)
            else:
                ok = a.shape == b.shape and np.array_equal(a, b)
            if ok:
                continue
            kind = column
            if column.endswith("_topk_ids") and _tie_order(
                got.at[sid, column.replace("ids", "sims")], ref.at[sid, column.replace("ids", "sims")], a, b
            ):
                kind = f"{column} (order of near-equal similarities)"
            mismatches[kind] = mismatches.get(kind, 0) + 1
            example.setdefault(kind, {"sample_id": sid, "job": a.tolist(), "reference": b.tolist()})
    return {
        "check_users": len(users),
        "check_samples": len(both),
        "check_same_sample_ids": set(got.index) == set(ref.index),
        "check_mismatched_cells": mismatches,
        "check_examples": example,
    }


def _tie_order(job_sims, ref_sims, job_ids: np.ndarray, ref_ids: np.ndarray) -> bool:
    """Top-k lists that differ only in the order of items whose similarities agree to 1e-6: the job's
    float32 product and the reference's float64 product rounded to float32 can differ by one ulp, which
    decides the order of two near-equal similarities (the README fixes ties only for equal values)."""
    return sorted(job_ids.tolist()) == sorted(ref_ids.tolist()) and np.allclose(
        np.asarray(job_sims, np.float64), np.asarray(ref_sims, np.float64), atol=1e-6, equal_nan=True
    )


# ---------------------------------------------------------------------------------------------- run


def blas_threads() -> int | None:
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return None
    return next((i["num_threads"] for i in threadpool_info() if i.get("user_api") == "blas"), None)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    plan = PLANS[args.size]
    plan = plan._replace(
        sizes=tuple(args.sizes or plan.sizes),
        scale_base=plan.scale_base if args.scale_base is None else args.scale_base,
        reference_max_samples=args.reference_max_samples or plan.reference_max_samples,
    )
    shape = Shape()
    scale_sizes = {plan.scale_base * f: f for f in plan.scale_factors} if plan.scale_base else {}
    all_sizes = sorted(set(plan.sizes) | set(scale_sizes))
    began = time.perf_counter()

    def say(msg: str) -> None:
        print(f"[{time.perf_counter() - began:8.1f}s] {msg}", flush=True)

    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    first = job_config(all_sizes[0], plan.items, shape)
    spark = get_spark(
        first.spark.model_copy(update={"conf": {"spark.ui.enabled": "false", "spark.local.dir": str(WORK / "spark-local")}})
    )
    jobs: dict[int, dict[str, Any]] = {}
    refs: dict[int, dict[str, Any]] = {}
    prep: dict[int, dict[str, Any]] = {}
    try:
        for index, n in enumerate(all_sizes):
            say(f"=== {label(n)} events: preparing the lake")
            cfg = job_config(n, plan.items, shape)
            lake, vectors, prep[n] = prepare(spark, cfg, say)
            if index == 0 and plan.warm_up:
                say("warm-up build_features call (untimed)")
                build_features(spark, cfg, lake, progress=lambda m: None)
            if n not in plan.sizes:
                jobs[n] = run_job(spark, cfg, lake, say)
                say(f"job {label(n)}: {jobs[n]}")
            else:
                check_users = pick_check_users(lake, plan.reference_max_samples)
                order = ("job", "reference") if plan.sizes.index(n) % 2 == 0 else ("reference", "job")
                expected = None
                for side in order:
                    if side == "job":
                        jobs[n] = run_job(spark, cfg, lake, say)
                        say(f"job {label(n)}: {jobs[n]}")
                    else:
                        refs[n], expected = run_reference(lake, vectors, shape, plan.reference_max_samples, check_users, say)
                        say(f"reference {label(n)}: {refs[n]}")
                refs[n] |= compare(spark, lake, expected, check_users)
                del expected
                say(f"check {label(n)}: {refs[n]}")
            drop_outputs(lake)
            shutil.rmtree(WORK / label(n), ignore_errors=True)
            gc.collect()
    finally:
        spark.stop()
        if not args.keep:
            shutil.rmtree(WORK, ignore_errors=True)

    figures: dict[str, Any] = {}
    for n in plan.sizes:
        key, job, ref = label(n), jobs[n], refs[n]
        figures[f"ratio_{key}"] = round(job["per_s"] / ref["per_s"], 4)
        figures |= {f"job_{key}_{k}": v for k, v in job.items()}
        figures |= {f"ref_{key}_{k}": v for k, v in ref.items()}
        figures[f"prep_{key}"] = prep[n]
    if scale_sizes:
        base = plan.scale_base
        for n, factor in scale_sizes.items():
            job = jobs[n]
            figures |= {
                f"scale_{factor}x_{k}": job[k]
                for k in (
                    "samples",
                    "s",
                    "per_s",
                    "samples_mb",
                    "samples_mb_per_s",
                    "setup_s",
                    "samples_phase_s",
                    "user_sequences_s",
                )
            }
            figures[f"scale_{factor}x_events"] = n
        top = max(scale_sizes)
        figures["growth"] = round(jobs[top]["s"] / jobs[base]["s"] / scale_sizes[top], 4)
        figures["growth_per_sample"] = round(
            (jobs[top]["s"] / jobs[top]["samples"]) / (jobs[base]["s"] / jobs[base]["samples"]), 4
        )
    largest = max(plan.sizes)
    ratio = figures[f"ratio_{label(largest)}"]
    figures = {"ratio": ratio, **figures, "total_wall_s": round(time.perf_counter() - began, 1)}
    settings = {
        "sizes": list(plan.sizes),
        "scale_base": plan.scale_base,
        "scale_factors": list(plan.scale_factors),
        "items": plan.items,
        "users": "events / 100",
        "days": first.source.synthetic.days,
        "source": "synthetic generator (conf/synthetic.yaml) + dmf_features.ingest.ingest",
        **shape._asdict(),
        "behaviour": "label = 1",
        "negatives_ratio": first.features.negatives.ratio,
        "sequence_vectors": list(first.features.sequence_vectors),
        "batch_rows": first.features.batch_rows,
        "spark_master": MASTER,
        "driver_memory": DRIVER_MEMORY,
        "shuffle_partitions": first.spark.shuffle_partitions,
        "vectors": (
            f"random unit vectors written into item_embeddings (text {DIMS['text']}, image {DIMS['image']} "
            f"for {1 - IMAGE_MISSING:.0%} of items, fused {sum(DIMS.values())} = normalised [text, image]); "
            "the benchmark measures the feature stage, not the encoders"
        ),
        "job_time_covers": (
            "the whole build_features call (full build): item vectors loaded and broadcast, events "
            "read and cached, split counts, features computed and `samples` written to Delta, "
            "`user_sequences` merged; both tables removed before each call; one run per size"
        ),
        "reference_time_covers": (
            "reference_features calls only (bench/features_reference.py, one process, "
            f"chunks of whole users of ~{REF_CHUNK_EVENTS:,} events), not reading the events "
            "from the events table's Parquet files; output discarded"
        ),
        "reference_subset": (
            f"sizes above {plan.reference_max_samples:,} events: a fixed random share of users "
            f"(seed {REF_SEED}), all their events; ref_<size>_samples of ref_<size>_of_samples"
        ),
        "reference_blas_threads": blas_threads(),
        "ratio": f"job samples/s / reference samples/s at {label(largest)} events (goal >= 1)",
        "growth": "(time_16x / time_1x) / 16 of the whole build_features call (goal <= 1.2)",
        "warm_up": "one untimed build_features call on the smallest lake first" if plan.warm_up else "none",
    }
    path = write_results(NAME, figures, settings, PACKAGES, args)
    print(f"results: {path}")
    for n in plan.sizes:
        key, job, ref = label(n), jobs[n], refs[n]
        subset = (
            ""
            if ref["samples"] == ref["of_samples"]
            else f" (reference measured on {ref['samples']:,} samples of {ref['of_samples']:,})"
        )
        print(
            f"{key} events: job {job['per_s']:,.0f} samples/s ({job['samples']:,} in {job['s']:.1f}s: setup "
            f"{job['setup_s']:.1f}s, samples {job['samples_phase_s']:.1f}s, user_sequences "
            f"{job['user_sequences_s']:.1f}s), "
            f"reference {ref['per_s']:,.0f} samples/s ({ref['samples']:,} in {ref['s']:.1f}s){subset}, "
            f"ratio {job['per_s'] / ref['per_s']:.3f}"
        )
    for n, factor in scale_sizes.items():
        job = jobs[n]
        print(
            f"scaling {factor:>2}x ({label(n)} events): {job['per_s']:,.0f} samples/s, {job['s']:.1f}s, "
            f"samples {job['samples_mb']:,.1f} MB at {job['samples_mb_per_s']:.2f} MB/s"
        )
    ref_top = refs[largest]
    shown = {
        "events": label(largest),
        "job_per_s": jobs[largest]["per_s"],
        "ref_per_s": ref_top["per_s"],
        "ref_samples": f"{ref_top['samples']}/{ref_top['of_samples']}",
        **{f"ratio_{label(n)}": figures[f"ratio_{label(n)}"] for n in plan.sizes if n != largest},
    }
    if scale_sizes:
        shown |= {
            "growth": figures["growth"],
            **{f"scale_{f}x_per_s": jobs[n]["per_s"] for n, f in scale_sizes.items()},
            f"mb_per_s_{max(scale_sizes.values())}x": jobs[max(scale_sizes)]["samples_mb_per_s"],
        }
    shown["vectors"] = "random"
    print(final_line(NAME, ratio, shown))


if __name__ == "__main__":
    main()
