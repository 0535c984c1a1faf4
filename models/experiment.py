"""One training run: pinned tables -> vocabulary and item vectors -> fit -> evaluate (overall and
cold-start) -> MLflow. `compare` repeats it for every model spec and seed under one parent run."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from models.batch import TARGET_VECTOR_MODALITY
from models.config import ModelSpec
from models.data import ItemVectorTable, PinnedTable, sample_columns
from models.splits import SplitReader, training_items
from models.tracking import Tracker
from models.train import Predictions, TrainSettings, fit, predict, seed_everything



@dataclass(frozen=True)
class DataSource:
    samples_uri: str
    item_embeddings_uri: str
    samples_version: int | None = None  # None: the latest
    storage_options: dict | None = None


@dataclass
class RunResult:
    spec: str
    seed: int
    run_id: str
    metrics: dict[str, float] = field(default_factory=dict)


def train_run(spec: ModelSpec, seed: int, source: DataSource, tracker: Tracker,
              progress: Callable[[str], None] = print, parent_run_id: str | None = None) -> RunResult:
    seed_everything(seed)
    try:
        samples = PinnedTable.open(source.samples_uri, source.samples_version, source.storage_options)
    except LookupError as e:
        hint = "" if source.samples_version is not None else \
            ": build samples with `dmf features` (after `dmf ingest` and `dmf embed`)"
        raise LookupError(f"{e}{hint}") from None
    lineage = samples.lineage()
    if not lineage:
        raise LookupError(f"samples version {samples.version} has no lineage: rebuild it with `dmf features`")
    embeddings = PinnedTable.open(source.item_embeddings_uri, lineage["item_embeddings_version"], source.storage_options)
    buckets = lineage["features"]["buckets"]
    progress(f"{spec.name} (seed {seed}): samples v{samples.version}, item_embeddings v{embeddings.version}")
    items = training_items(samples, spec.min_item_count)
    vocabulary = items.vocabulary
    needs_vectors = spec.kind != "din"
    vectors = ItemVectorTable.load(embeddings, TARGET_VECTOR_MODALITY, lineage["item_vectors"][TARGET_VECTOR_MODALITY]) \
        if needs_vectors else None
    modalities = spec.architecture.modalities
    model = spec.build(len(vocabulary), vectors.dim if vectors else 0, buckets)

    def reader(split: str, shuffle: bool) -> SplitReader:
        return SplitReader(samples, split, spec.training.batch_size, vocabulary, modalities, vectors,
                           hist_vectors=getattr(model, "needs_hist_vectors", False),
                           shuffle_seed=seed if shuffle else None)

    train, valid, test = reader("train", True), reader("valid", False), reader("test", False)
    train_rows = items.rows
    settings = TrainSettings(spec.training.epochs, spec.training.learning_rate, spec.training.weight_decay,
                             spec.training.patience, seed)
    with tracker.run(f"{spec.name}-seed{seed}", parent_run_id) as run:
        run.log_setup(spec, seed, lineage, samples.version, embeddings.version, len(vocabulary), train_rows)

        def on_epoch(epoch: int, metrics: dict[str, float]) -> None:
            run.log_metrics(metrics, step=epoch)
            progress(f"  epoch {epoch}: " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()))

        started = time.perf_counter()
        fitted = fit(model, lambda: train, lambda: valid, settings, on_epoch,
                     train_batches=-(-train_rows // spec.training.batch_size))
        seconds = time.perf_counter() - started
        valid_predictions, test_predictions = predict(model, valid), predict(model, test)
        cold = _cold_start(test_predictions, items.target_counts, spec.cold_start_max_interactions)
        metrics = {
            **{f"best_valid_{k}": v for k, v in valid_predictions.metrics().items()},
            **{f"test_{k}": v for k, v in test_predictions.metrics().items()},
            **{f"test_cold_{k}": v for k, v in test_predictions.metrics(cold).items()},
            "best_epoch": fitted.best_epoch, "train_seconds": seconds,
            "train_samples_per_s": float(np.mean([h["train_samples_per_s"] for h in fitted.history])),
        }
        run.log_metrics(metrics)
        run.log_evaluation(test_predictions, cold)
        example = next(samples.batches(sample_columns(modalities), 5))
        run.log_model(model, spec, vocabulary, vectors, example, lineage)
        return RunResult(spec.name, seed, run.run_id, metrics)


def _cold_start(predictions: Predictions, train_counts: dict[int, int], max_interactions: int) -> np.ndarray:
    counts = np.array([train_counts.get(int(i), 0) for i in predictions.items])
    return counts <= max_interactions



COMPARED = ("test_auc", "test_gauc", "test_logloss", "test_cold_auc", "test_cold_gauc", "test_cold_logloss")


def compare(specs: list[ModelSpec], source: DataSource, tracker: Tracker, results_dir: Path,
            seeds: tuple[int, ...] | None = None, progress: Callable[[str], None] = print) -> pd.DataFrame:
    """Train every spec once per seed as child runs of one parent run; the table of mean and spread
    (standard deviation over seeds) goes to the console's caller, a file and the parent run."""
    runs: list[RunResult] = []
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    with tracker.parent(f"compare-{stamp}", {"models": ",".join(s.name for s in specs),
                                             "seeds": ",".join(map(str, seeds or ()))}) as parent:
        for spec in specs:
            for seed in seeds or spec.training.seeds:
                runs.append(train_run(spec, seed, source, tracker, progress, parent_run_id=parent))
        table = comparison_table(runs)
        results_dir.mkdir(parents=True, exist_ok=True)
        path = results_dir / f"compare-{stamp}.md"
        path.write_text(markdown(table))
        table.to_csv(path.with_suffix(".csv"), index=False)
        tracker.log_comparison(table, path)
    progress(f"comparison table: {path}")
    return table


def comparison_table(runs: list[RunResult]) -> pd.DataFrame:
    rows = []
    for name in dict.fromkeys(r.spec for r in runs):
        mine = [r for r in runs if r.spec == name]
        row = {"model": name, "seeds": len(mine)}
        for metric in COMPARED:
            values = np.array([r.metrics.get(metric, np.nan) for r in mine], float)
            row[metric] = f"{np.nanmean(values):.4f} ± {np.nanstd(values):.4f}" if np.isfinite(values).any() else "n/a"
        rows.append(row)
    return pd.DataFrame(rows)


def markdown(table: pd.DataFrame) -> str:
    lines = ["| " + " | ".join(table.columns) + " |", "|" + " --- |" * len(table.columns)]
    lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join(lines) + "\n"
