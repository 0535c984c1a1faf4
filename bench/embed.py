"""Benchmark: what running the encoders as a Spark job costs against a bare loop over the same model.

The embedding stage runs its encoders inside an iterator pandas UDF on Spark (see
`dmf_features/embedding/stage.py`). This embeds the same real MovieLens posters and titles two ways:

- spark: the whole `embed_items` call on local[2], over an `items` table in a temporary lake, with
  only the image encoder (EfficientNet-Lite0) configured for the image measurement and only the
  text encoder (MiniLM) for the text one. Every run starts without `item_embeddings`, `quarantine`
  or an index, so every item is embedded. The call's report splits it into phases: setup
  (encoder load on the driver, counts), embed (the UDF stage: read, shuffle, Arrow, decode, model),
  write (fused vectors, the one merge into item_embeddings) and index (FAISS build).
- bare: one process, `torch.set_num_threads(2)`, the same encoder: decode each poster with
  `images.decode` and embed `embedding.batch_size` at a time; titles likewise.

After one untimed run of each (model loads, JIT; Spark's reused Python workers keep their models,
though Spark ends any worker idle for over a minute, as during a bare run that long), each is
repeated, alternating order round by round, and medians compared. ratio = spark throughput / bare
throughput for images, over the whole `embed_items` call (what a user waits for); `text_ratio` is
the same for titles. The project's goal is >= 0.85 for both. The `*_embed_ratio` figures compare the
embedding phase alone. By default every poster (2,947) and title (9,742) of the data set: about 15
minutes on 2 cores.

usage: python -m bench.embed [--quick | --tiny] [--repeats R] [--results-dir DIR]
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import torch
from pyspark.sql import SparkSession

from bench.common import final_line, parser, time_interleaved, write_results
from dmf_features.embedding import images
from dmf_features.embedding.encoders import Encoder, EncoderSpec, load_encoder
from dmf_features.embedding.stage import embed_items
from dmf_features.infra.config import Config, load_config
from dmf_features.infra.lake import Lake, spark_schema
from dmf_features.infra.spark import get_spark
from dmf_features.schemas import ITEM_EMBEDDINGS, ITEMS, QUARANTINE

NAME = "embed"
PROJECT = Path(__file__).resolve().parent.parent
DATASET = PROJECT.parent / "shared" / "datasets" / "movielens-posters"
THREADS = 2
PACKAGES = ("pyspark", "torch", "deltalake", "pyarrow")
ENCODERS = {"image": "efficientnet-lite0", "text": "minilm"}
OTHER = {"image": "text", "text": "image"}


class Size(NamedTuple):
    posters: int  # items with a poster (and a title)
    titles: int  # items in all, every one with a title
    repeats: int


SIZES = {
    "full": Size(posters=2_947, titles=9_742, repeats=2),
    "quick": Size(posters=128, titles=512, repeats=2),
    "tiny": Size(posters=8, titles=64, repeats=1),
}


class Item(NamedTuple):
    item_id: int
    title: str
    image: bytes | None


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    quick, tiny = SIZES["quick"], SIZES["tiny"]
    options = parser(
        NAME,
        __doc__,
        quick=f"{quick.posters:,} posters and {quick.titles:,} titles, a few minutes",
        tiny=f"{tiny.posters} posters and {tiny.titles} titles, one timed run",
    )
    options.add_argument("--repeats", type=int, help=f"timed runs of each way (default {SIZES['full'].repeats})")
    return options.parse_args(argv)


def load_items(size: Size) -> list[Item]:
    """The first `size.posters` movies with a poster, then movies without one up to `size.titles`."""
    with open(DATASET / "movies.csv", newline="", encoding="utf-8") as handle:
        titles = {int(row["movieId"]): row["title"] for row in csv.DictReader(handle)}
    posters = {int(path.stem): path for path in (DATASET / "posters").glob("*.jpg")}
    with_poster = sorted(posters)[: size.posters]
    without = [i for i in sorted(titles) if i not in posters][: size.titles - len(with_poster)]
    return [Item(i, titles[i], posters[i].read_bytes()) for i in with_poster] + [Item(i, titles[i], None) for i in without]


def write_items(spark: SparkSession, lake: Lake, items: list[Item]) -> None:
    rows = [
        (
            it.item_id,
            it.title,
            None,
            [],
            [],
            it.image,
            None,
            "ok" if it.image else "missing",
            hashlib.sha256(it.image).hexdigest() if it.image else None,
            None,
            "movielens",
        )
        for it in items
    ]
    lake.write(spark.createDataFrame(rows, spark_schema(ITEMS)), ITEMS.name)


def job_config(lake_uri: str, modality: str) -> Config:
    """conf/local.yaml on local[2] and CPU, with only `modality`'s encoder configured."""
    return load_config(
        PROJECT / "conf" / "local.yaml",
        [
            f"spark.master=local[{THREADS}]",
            f"lake.uri={lake_uri}",
            "embedding.device=cpu",
            f"embedding.{modality}.kind={ENCODERS[modality]}",
            f"embedding.{OTHER[modality]}=",
        ],
    )


def spark_run(spark: SparkSession, cfg: Config, n: int, phases: list[dict[str, float]]) -> Callable[[], int]:
    """One `embed_items` call from an empty `item_embeddings`; appends its seconds (the call's, and those
    of each phase from its report) to `phases`."""
    lake = Lake(cfg.lake)
    derived = [Path(cfg.lake.uri) / t for t in (ITEM_EMBEDDINGS.name, QUARANTINE.name, "_indexes")]

    def run() -> int:
        for folder in derived:
            shutil.rmtree(folder, ignore_errors=True)
        start = time.perf_counter()
        report = embed_items(spark, cfg, lake, progress=lambda _: None)
        phases.append({"total": time.perf_counter() - start, **report.phases})
        embedded = report.counts[0].embedded
        if embedded != n or report.counts[0].quarantined:
            raise RuntimeError(f"spark embedded {embedded} of {n}: {report.counts[0]}")
        return embedded

    return run


def bare_run(encoder: Encoder, inputs: list[Any], modality: str, batch_size: int, max_pixels: int) -> Callable[[], int]:
    """Embed `inputs` in one process, `batch_size` at a time (posters decoded first); returns the count."""

    def run() -> int:
        count = 0
        for start in range(0, len(inputs), batch_size):
            chunk = inputs[start : start + batch_size]
            if modality == "image":
                chunk = [images.decode(data, max_pixels).image for data in chunk]
            count += len(encoder.embed(chunk))
        if count != len(inputs):
            raise RuntimeError(f"bare embedded {count} of {len(inputs)}")
        return count

    return run


def measure(spark: SparkSession, lake_uri: str, items: list[Item], modality: str, repeats: int) -> dict[str, Any]:
    """Spark and bare throughput for `modality`, their ratios, and the median Spark phases."""
    cfg = job_config(lake_uri, modality)
    inputs = [it.image if modality == "image" else it.title for it in items]
    inputs = [x for x in inputs if x is not None]
    spec = EncoderSpec(kind=ENCODERS[modality], batch_size=cfg.embedding.batch_size)  # as `plans` builds it
    encoder = load_encoder(spec, device="cpu")
    phases: list[dict[str, float]] = []
    timings = time_interleaved(
        {
            "spark": spark_run(spark, cfg, len(inputs), phases),
            "bare": bare_run(encoder, inputs, modality, cfg.embedding.batch_size, cfg.embedding.max_image_pixels),
        },
        repeats,
    )
    timed = phases[1:]  # the first is the warm-up run
    median = {phase: statistics.median(p[phase] for p in timed) for phase in timed[0]}
    bare_s = timings["bare"].median
    return {
        f"{modality}_ratio": round(bare_s / median["total"], 4),
        f"{modality}_embed_ratio": round(bare_s / median["embed"], 4),
        f"{modality}_n": len(inputs),
        f"{modality}_spark_per_s": round(len(inputs) / median["total"], 2),
        f"{modality}_spark_embed_per_s": round(len(inputs) / median["embed"], 2),
        f"{modality}_bare_per_s": round(len(inputs) / bare_s, 2),
        **{f"{modality}_spark_{phase}_s": round(s, 3) for phase, s in median.items()},
        f"{modality}_bare_s": round(bare_s, 3),
        f"{modality}_spark_runs_s": [round(p["total"], 3) for p in timed],
        f"{modality}_bare_runs_s": [round(s, 3) for s in timings["bare"].seconds],
    }


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    size = SIZES[args.size]
    size = size._replace(repeats=args.repeats or size.repeats)
    torch.set_num_threads(THREADS)
    items = load_items(size)
    with tempfile.TemporaryDirectory(prefix="dmf-bench-embed-") as tmp:
        lake_uri = str(Path(tmp) / "lake")
        base = job_config(lake_uri, "image")
        spark = get_spark(base.spark.model_copy(update={"conf": {"spark.ui.enabled": "false", "spark.local.dir": tmp}}))
        try:
            write_items(spark, Lake(base.lake), items)
            figures = measure(spark, lake_uri, items, "image", size.repeats)
            figures |= measure(spark, lake_uri, items, "text", size.repeats)
        finally:
            spark.stop()
    ratio = figures.pop("image_ratio")
    figures = {"ratio": ratio, **figures}
    settings = {
        **size._asdict(),
        "spark_master": base.spark.master,
        "torch_threads": THREADS,
        "batch_size": base.embedding.batch_size,
        "items_per_task": base.embedding.items_per_task,
        "encoders": ENCODERS,
        "ratio_uses": "whole embed_items call",
    }
    path = write_results(NAME, figures, settings, PACKAGES, args)
    shown = {k: v for k, v in figures.items() if k != "ratio" and not k.endswith("_runs_s")}
    print(f"results: {path}")
    print(final_line(NAME, ratio, shown))


if __name__ == "__main__":
    main()
