"""Training runs and comparisons under the evaluation protocol (`models/protocol.py`).

`Evaluation` pins the tables and resolves the folds once; a run trains one model per fold (early
stopping on the fold's validation rows) and scores the fold's test rows; the test rows of all folds
are pooled, each scored by its own fold's model. Every model and baseline therefore predicts the
same rows in the same order, which the paired user bootstrap of `compare` needs.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
from deltalake import DeltaTable

from dmf_features.features.kernels.lookup import find_sorted
from dmf_features.infra.faults import crash_point
from dmf_features.infra.runs import complete_version
from dmf_features.schemas import FULL_SCOPE, LINEAGE_KEY, SAMPLES, Lineage
from models.baselines import BASELINES, FoldRows, feature_matrix, item_mean_scores
from models.batch import TARGET_VECTOR_MODALITY
from models.config import ModelSpec
from models.data import ItemVectorTable, PinnedTable, sample_columns
from models.intervals import bootstrap_metrics, format_interval, to_json_ready
from models.protocol import TEST, TRAIN, VALID, EvaluationConfig, Fold, describe, resolve_folds
from models.splits import SampleIndex, SplitReader, training_items
from models.tracking import RunLogger, Tracker, comparison_figure
from models.train import Predictions, fit, predict, seed_everything

if TYPE_CHECKING:
    from dmf_features.infra.config import Config

PRELOAD_BYTES = 2 << 30


@dataclass(frozen=True)
class DataSource:
    samples_uri: str
    item_embeddings_uri: str
    samples_version: int | None = None  # None: the latest (open_training pins the last complete run's)
    storage_options: dict | None = None
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)


def open_training(
    cfg: Config,
    samples_version: int | None = None,
    progress: Callable[[str], None] = print,
    item_vectors: str | None = None,
):
    """The `Evaluation` of the lake's samples and the MLflow tracker of `cfg`. The samples are those of
    the last complete feature run (never a half-written one, see `dmf_features.infra.runs`), or `samples_version`,
    or with `item_vectors` (frozen, aligned) the newest complete full build on those item vectors."""
    lake_root = cfg.lake.uri.rstrip("/")
    storage_options = dict(cfg.lake.storage_options) or None
    if samples_version is None:
        samples_version = complete_version(lake_root, SAMPLES.name, storage_options)
    if item_vectors is not None:
        from dmf_features.embedding.versions import item_vector_versions

        wanted = item_vector_versions(cfg, lake_root, item_vectors)
        samples_version = built_on(f"{lake_root}/{SAMPLES.name}", wanted, samples_version, storage_options)
    source = DataSource(
        f"{lake_root}/samples",
        f"{lake_root}/item_embeddings",
        samples_version,
        storage_options,
        cfg.evaluation,
    )
    return Evaluation(source, progress), Tracker(cfg.mlflow.tracking_uri, cfg.mlflow.experiment)


def built_on(samples_uri: str, item_vectors: dict[str, str], newest: int | None, storage_options: dict | None = None) -> int:
    """The newest version of `samples`, up to `newest`, written by a full feature build on `item_vectors`."""
    for entry in DeltaTable(samples_uri, storage_options=storage_options).history():
        version = entry.get("version")
        if LINEAGE_KEY not in entry or (newest is not None and version > newest):
            continue
        lineage = Lineage.from_json(entry[LINEAGE_KEY])
        if lineage.item_vectors == item_vectors and lineage.scope == FULL_SCOPE:
            return version
    raise LookupError(
        f"no full `dmf features` build of samples on {item_vectors}: run `dmf features` with features.item_vectors "
        "set accordingly first"
    )


class Evaluation:
    """The pinned samples (with the item vectors it was built from) and the protocol's folds."""

    def __init__(self, source: DataSource, progress: Callable[[str], None] = print):
        try:
            self.samples = PinnedTable.open(source.samples_uri, source.samples_version, source.storage_options)
        except LookupError as e:
            hint = (
                ""
                if source.samples_version is not None
                else ": build samples with `dmf features` (after `dmf ingest` and `dmf embed`)"
            )
            raise LookupError(f"{e}{hint}") from None
        self.lineage = self.samples.lineage()
        if not self.lineage:
            raise LookupError(f"samples version {self.samples.version} has no lineage: rebuild it with `dmf features`")
        self.embeddings = PinnedTable.open(
            source.item_embeddings_uri, self.lineage.item_embeddings_version, source.storage_options
        )
        self.config = source.evaluation
        self.index = SampleIndex.read(self.samples)
        self.folds = resolve_folds(self.config, self.index.user_ids, self.index.seconds)
        self._rows: dict[str, FoldRows] = {}
        progress(f"evaluation protocol {self.config.protocol}: " + "; ".join(describe(self.folds)))

    @cached_property
    def preloaded(self) -> pa.Table | None:
        """Every row's model inputs in memory when they fit in `PRELOAD_BYTES`: each fold's readers
        then filter it instead of re-reading thousands of small daily files per fold and split."""
        columns = sample_columns(list(self.lineage.item_vectors))
        first = next(self.samples.batches(columns, 1_024), None)
        if first is None or first.nbytes / max(first.num_rows, 1) * len(self.index.labels) > PRELOAD_BYTES:
            return None
        return pa.Table.from_batches(list(self.samples.batches(columns, 65_536))).combine_chunks()

    @property
    def buckets(self) -> int:
        return self.lineage.buckets

    @cached_property
    def vectors(self) -> ItemVectorTable:
        return ItemVectorTable.load(self.embeddings, TARGET_VECTOR_MODALITY, self.lineage.item_vectors[TARGET_VECTOR_MODALITY])

    def rows(self, fold: Fold) -> FoldRows:
        if fold.name not in self._rows:
            codes = fold.assign(self.index.user_ids, self.index.seconds)
            self._rows[fold.name] = FoldRows(self.index, codes, self.index.prior_stats(fold))
        return self._rows[fold.name]

    def pooled_test(self, values: Sequence[np.ndarray]) -> np.ndarray:
        """Per-fold arrays over each fold's test rows, concatenated in fold order."""
        return np.concatenate(list(values)) if values else np.empty(0)

    @cached_property
    def test_rows(self) -> np.ndarray:
        """Row numbers (in samples order) of the pooled test rows."""
        return self.pooled_test([np.flatnonzero(self.rows(f).mask(TEST)) for f in self.folds])

    @cached_property
    def test_train_counts(self) -> np.ndarray:
        """For each pooled test row, how many training rows of its fold had its item as target."""
        counts = []
        for fold in self.folds:
            rows = self.rows(fold)
            known, n = np.unique(self.index.item_ids[rows.mask(TRAIN)], return_counts=True)
            position, found = find_sorted(known, self.index.item_ids[rows.mask(TEST)])
            counts.append(np.where(found, n[position] if len(n) else 0, 0))
        return self.pooled_test(counts).astype(np.int64)

    def subsets(self, max_interactions: int) -> dict[str, np.ndarray]:
        """all; cold: the target never was a training row of its fold; rare: 1..max_interactions times."""
        counts = self.test_train_counts
        return {"all": np.ones(len(counts), bool), "cold": counts == 0, "rare": (counts >= 1) & (counts <= max_interactions)}

    def pooled_predictions(self, probabilities: np.ndarray) -> Predictions:
        rows = self.test_rows
        return Predictions(
            self.index.user_ids[rows], self.index.item_ids[rows], self.index.labels[rows].astype(float), probabilities
        )

    def trained_through(self, fold: Fold) -> int:
        """Epoch seconds of the newest row the fold's model trained or validated on: a later row is
        unseen by that model (what the promotion gate compares models on)."""
        rows = self.rows(fold)
        seen = self.index.seconds[rows.mask(TRAIN) | rows.mask(VALID)]
        return int(seen.max()) if len(seen) else 0

    def check_no_leakage(self, fold: Fold) -> None:
        """Under a global-timeline protocol no test row may be older than a training row of its fold."""
        if not fold.global_timeline:
            return
        rows = self.rows(fold)
        train_times, test_times = self.index.seconds[rows.mask(TRAIN)], self.index.seconds[rows.mask(TEST)]
        if len(train_times) and len(test_times) and test_times.min() <= train_times.max():
            raise AssertionError(
                f"{fold.name}: a test row at {test_times.min()} is not later than a training row "
                f"at {train_times.max()}: the protocol leaks the future"
            )


@dataclass
class RunResult:
    spec: str
    seed: int
    run_id: str
    metrics: dict[str, float] = field(default_factory=dict)
    probabilities: np.ndarray | None = None  # pooled test rows
    model_version: str | None = None  # the registered model version of a trained (not baseline) run


def train_run(
    spec: ModelSpec,
    seed: int,
    evaluation: Evaluation,
    tracker: Tracker,
    progress: Callable[[str], None] = print,
    parent_run_id: str | None = None,
) -> RunResult:
    """One model per fold; pooled test predictions; the last fold's model (most data) is logged and registered."""
    seed_everything(seed)
    modalities = spec.architecture.modalities
    vectors = evaluation.vectors if spec.kind != "din" else None
    progress(
        f"{spec.name} (seed {seed}): samples v{evaluation.samples.version}, "
        f"item_embeddings v{evaluation.embeddings.version}, {len(evaluation.folds)} fold(s)"
    )
    with tracker.run(f"{spec.name}-seed{seed}", parent_run_id) as run:
        run.log_setup(
            spec, seed, evaluation.lineage, evaluation.samples.version, evaluation.embeddings.version, describe(evaluation.folds)
        )
        started, test_parts, best_epochs, best_valid = time.perf_counter(), [], [], []
        for fold in evaluation.folds:
            evaluation.check_no_leakage(fold)
            rows = evaluation.rows(fold)
            items = training_items(evaluation.index, fold, spec.min_item_count)
            model = spec.build(len(items.vocabulary), vectors.dim if vectors else 0, evaluation.buckets, evaluation.lineage.top_k)
            context = rows.prior_stats if spec.architecture.context else None

            def reader(split: str, shuffle: bool, fold=fold, items=items, model=model, context=context) -> SplitReader:
                return SplitReader(
                    evaluation.samples,
                    fold,
                    split,
                    spec.training.batch_size,
                    items.vocabulary,
                    modalities,
                    vectors,
                    hist_vectors=getattr(model, "needs_hist_vectors", False),
                    prior_stats=context,
                    preloaded=evaluation.preloaded,
                    shuffle_seed=seed if shuffle else None,
                )

            train, valid, test = reader("train", True), reader("valid", False), reader("test", False)

            def on_epoch(epoch: int, metrics: dict[str, float], fold=fold) -> None:
                run.log_metrics({f"{fold.name}.{k}": v for k, v in metrics.items()}, step=epoch)
                progress(f"  {fold.name} epoch {epoch}: " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items() if k in _SHOWN))

            fitted = fit(
                model,
                lambda train=train: train,
                lambda valid=valid: valid,
                spec.training,
                on_epoch,
                train_batches=-(-items.rows // spec.training.batch_size),
                monitor=lambda test=test: test,
            )
            best_epochs.append(fitted.best_epoch)
            best_valid.append(fitted.history[fitted.best_epoch - 1]["valid_auc"] if fitted.best_epoch else np.nan)
            predicted = predict(model, test)
            expected = evaluation.index.item_ids[rows.mask(TEST)]
            if not np.array_equal(predicted.items, expected):
                raise RuntimeError(f"{fold.name}: the test reader's rows differ from the index's")
            test_parts.append(predicted.probabilities)
        probabilities = evaluation.pooled_test(test_parts)
        metrics = {
            **_subset_metrics(evaluation, probabilities, spec.cold_start_max_interactions),
            **_item_mean_metrics(evaluation, spec.cold_start_max_interactions),
            "train_seconds": time.perf_counter() - started,
            "best_epoch_mean": float(np.mean(best_epochs)),
            "valid_auc_mean": float(np.mean(best_valid)),
        }  # what a hyper-parameter search may look at
        run.log_metrics(metrics)
        subsets = evaluation.subsets(spec.cold_start_max_interactions)
        run.log_evaluation(evaluation.pooled_predictions(probabilities), subsets["cold"])
        run.log_trained_through(evaluation.trained_through(evaluation.folds[-1]))
        example = next(evaluation.samples.batches(sample_columns(modalities), 5))
        crash_point(f"trained:{spec.name}")
        version = run.log_model(
            model, spec, items.vocabulary, vectors, example, evaluation.lineage, context if spec.architecture.context else None
        )
        return RunResult(spec.name, seed, run.run_id, metrics, probabilities, version)


_SHOWN = ("train_loss", "train_auc", "valid_auc", "test_auc", "train_samples_per_s")


def _subset_metrics(
    evaluation: Evaluation, probabilities: np.ndarray, max_interactions: int, prefix: str = "test"
) -> dict[str, float]:
    predictions = evaluation.pooled_predictions(probabilities)
    out = {}
    for subset, mask in evaluation.subsets(max_interactions).items():
        name = prefix if subset == "all" else f"{prefix}_{subset}"
        out.update({f"{name}_{k}": float(v) for k, v in predictions.metrics(mask).items()})
    return out


def _item_mean_metrics(evaluation: Evaluation, max_interactions: int) -> dict[str, float]:
    """The one-line baseline on the same pooled test rows, so every run shows what the model adds."""
    parts = [
        item_mean_scores(evaluation.rows(f), evaluation.index.item_ids[evaluation.rows(f).mask(TEST)]) for f in evaluation.folds
    ]
    return _subset_metrics(evaluation, evaluation.pooled_test(parts), max_interactions, "item_mean_test")


def baseline_run(
    name: str,
    evaluation: Evaluation,
    tracker: Tracker,
    max_interactions: int,
    progress: Callable[[str], None] = print,
    parent_run_id: str | None = None,
) -> RunResult:
    """A baseline fitted per fold (settings chosen on each fold's validation rows, the search logged)."""
    progress(f"{name}: {len(evaluation.folds)} fold(s)")
    features = None
    if name == "lightgbm":
        modalities = list(evaluation.lineage.item_vectors)
        # statistics smoothed toward the first fold's training rate: earlier than every fold's test rows
        features = feature_matrix(
            evaluation.samples, evaluation.index, evaluation.rows(evaluation.folds[0]).prior_stats, modalities
        )
    with tracker.run(f"{name}", parent_run_id) as run:
        parts, search = [], []
        for fold in evaluation.folds:
            evaluation.check_no_leakage(fold)
            rows = evaluation.rows(fold)
            fitted = BASELINES[name](rows, features) if features is not None else BASELINES[name](rows)
            parts.append(fitted.test)
            search += [{"fold": fold.name, **s} for s in fitted.search]
        probabilities = evaluation.pooled_test(parts)
        metrics = _subset_metrics(evaluation, probabilities, max_interactions)
        run.log_metrics(metrics)
        run.log_search(search)
        return RunResult(name, 0, run.run_id, metrics, probabilities)


def compare(
    specs: list[ModelSpec],
    baselines: Sequence[str],
    evaluation: Evaluation,
    tracker: Tracker,
    results_dir: Path,
    seeds: tuple[int, ...] | None = None,
    reference: str = "dmf",
    progress: Callable[[str], None] = print,
    variants: dict[str, Evaluation] | None = None,
) -> dict:
    """Every baseline once and every spec once per seed, as child runs of one parent run; metrics on
    the pooled test rows with user-bootstrap 95% intervals, overall, on cold and on rare items, and
    each model's paired difference from `reference`. Written as JSON, a markdown table and a figure.

    `variants` ({label: Evaluation}) are the same rows with features built on other item vectors (e.g.
    aligned ones): every model that reads item vectors, and LightGBM, is trained on each as
    `<name>@<label>`, and `vector_differences` holds the paired difference (variant minus `evaluation`)."""
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    max_interactions = specs[0].cold_start_max_interactions if specs else 5
    variants = variants or {}
    orders = {label: row_order(evaluation, other) for label, other in variants.items()}
    runs: dict[str, list[RunResult]] = {}
    pairs: dict[str, str] = {}  # variant run name -> the same model on `evaluation`'s vectors
    with tracker.parent(
        f"compare-{stamp}",
        {
            "models": ",".join(s.name for s in specs),
            "baselines": ",".join(baselines),
            "seeds": ",".join(map(str, seeds or ())),
            "protocol": evaluation.config.protocol,
            "item_vector_variants": ",".join(variants),
        },
    ) as parent:
        for name in baselines:
            runs[name] = [baseline_run(name, evaluation, tracker, max_interactions, progress, parent)]
            for label, other in variants.items():
                if name in VECTOR_BASELINES:
                    run = baseline_run(name, other, tracker, max_interactions, progress, parent)
                    runs[f"{name}@{label}"], pairs[f"{name}@{label}"] = [_reordered(run, orders[label])], name
        for spec in specs:
            seeds_of = seeds or spec.training.seeds
            runs[spec.name] = [train_run(spec, seed, evaluation, tracker, progress, parent) for seed in seeds_of]
            for label, other in variants.items():
                if _reads_vectors(spec):
                    # its own run and registered-model name: a model on aligned features must never be taken
                    # for a new version of the frozen-vector model that serving and the promotion gate follow
                    renamed = spec.model_copy(update={"name": f"{spec.name}-{label}"})
                    trained = [train_run(renamed, seed, other, tracker, progress, parent) for seed in seeds_of]
                    runs[f"{spec.name}@{label}"] = [_reordered(r, orders[label]) for r in trained]
                    pairs[f"{spec.name}@{label}"] = spec.name
        result = comparison(runs, evaluation, reference if reference in runs else next(iter(runs)), max_interactions)
        if pairs:
            result["vector_differences"] = _vector_differences(runs, pairs, evaluation, max_interactions)
            result["item_vectors"] = {"base": evaluation.lineage.item_vectors} | {
                label: other.lineage.item_vectors for label, other in variants.items()
            }
        results_dir.mkdir(parents=True, exist_ok=True)
        path = results_dir / f"compare-{stamp}.json"
        result["report"] = str(path)
        path.write_text(json.dumps(result, indent=1))
        path.with_suffix(".md").write_text(markdown(result))
        comparison_figure(result, path.with_suffix(".png"))
        tracker.log_comparison(result, path)
    progress(f"comparison: {path} (.md, .png)")
    return result


VECTOR_BASELINES = ("lightgbm",)  # baselines whose features come from item vectors (the similarity features)


def _reads_vectors(spec: ModelSpec) -> bool:
    return spec.kind != "din" or bool(spec.architecture.modalities)


def row_order(base: Evaluation, other: Evaluation) -> np.ndarray:
    """Positions in `other`'s pooled test rows of each of `base`'s, matched on (user, item, time): two
    builds of `samples` hold the same rows in different file orders. An error when the rows differ."""
    if describe(base.folds) != describe(other.folds):
        raise ValueError(f"the samples versions resolve to different folds: {describe(base.folds)} vs {describe(other.folds)}")

    def keys(e: Evaluation) -> np.ndarray:
        rows = e.test_rows
        return np.rec.fromarrays([e.index.user_ids[rows], e.index.item_ids[rows], e.index.seconds[rows]])

    mine, theirs = keys(base), keys(other)
    order_mine, order_theirs = np.argsort(mine, kind="stable"), np.argsort(theirs, kind="stable")
    if len(mine) != len(theirs) or not np.array_equal(mine[order_mine], theirs[order_theirs]):
        raise ValueError(
            f"samples v{base.samples.version} and v{other.samples.version} hold different test rows: build both "
            "from the same events"
        )
    if len(np.unique(mine)) != len(mine):
        raise ValueError("test rows repeat a (user, item, time): they cannot be matched across samples versions")
    position = np.empty(len(mine), np.int64)
    position[order_mine] = order_theirs
    return position


def _reordered(run: RunResult, order: np.ndarray) -> RunResult:
    run.probabilities = run.probabilities[order]
    return run


def _vector_differences(
    runs: dict[str, list[RunResult]], pairs: dict[str, str], evaluation: Evaluation, max_interactions: int
) -> dict:
    """Per subset, each variant run's paired AUC / GAUC / logloss difference from its base run."""
    predictions = evaluation.pooled_predictions(np.zeros(len(evaluation.test_rows)))
    out = {}
    for subset, mask in evaluation.subsets(max_interactions).items():
        out[subset] = {}
        for variant, base in pairs.items():
            scores = {name: [r.probabilities[mask] for r in runs[name]] for name in (variant, base)}
            intervals = bootstrap_metrics(
                predictions.users[mask],
                predictions.labels[mask],
                scores,
                variant,
                resamples=evaluation.config.bootstrap_resamples,
            )
            out[subset][variant] = to_json_ready(intervals)["differences"][base]
    return out


def comparison(runs: dict[str, list[RunResult]], evaluation: Evaluation, reference: str, max_interactions: int) -> dict:
    predictions = evaluation.pooled_predictions(np.zeros(len(evaluation.test_rows)))
    subsets = {}
    for subset, mask in evaluation.subsets(max_interactions).items():
        scores = {name: [r.probabilities[mask] for r in results] for name, results in runs.items()}
        subsets[subset] = to_json_ready(
            bootstrap_metrics(
                predictions.users[mask],
                predictions.labels[mask],
                scores,
                reference,
                resamples=evaluation.config.bootstrap_resamples,
            )
        )
    return {
        "protocol": evaluation.config.model_dump(mode="json"),
        "folds": describe(evaluation.folds),
        "samples_version": evaluation.samples.version,
        "reference": reference,
        "seeds": {name: [r.seed for r in results] for name, results in runs.items()},
        "run_ids": {name: [r.run_id for r in results] for name, results in runs.items()},
        "subsets": subsets,
    }


def markdown(result: dict) -> str:
    """One table per subset: each metric with its interval, and the reference minus the model's AUC."""
    lines, reference = [], result["reference"]
    for subset, table in result["subsets"].items():
        lines += [
            f"**{subset}** ({table['rows']:,} rows, {table['users']:,} users)",
            "",
            f"| model | AUC [95% CI] | GAUC [95% CI] | logloss [95% CI] | {reference} AUC minus model's [95% CI] |",
            "| --- | --- | --- | --- | --- |",
        ]
        for model, metrics in table["models"].items():
            diff = table["differences"].get(model, {}).get("auc")
            lines.append(
                f"| {model} | "
                + " | ".join(format_interval(metrics[m]) for m in ("auc", "gauc", "logloss"))
                + f" | {format_interval(diff, signed=True) if diff else '(reference)'} |"
            )
        lines.append("")
    for subset, table in result.get("vector_differences", {}).items():
        lines += [
            f"**{subset}: {', '.join(sorted({v.split('@')[1] for v in table}))} minus base item vectors (paired)**",
            "",
            "| model | AUC difference [95% CI] | GAUC difference [95% CI] | logloss difference [95% CI] |",
            "| --- | --- | --- | --- |",
        ]
        for variant, metrics in table.items():
            lines.append(
                f"| {variant} | "
                + " | ".join(format_interval(metrics[m], signed=True) for m in ("auc", "gauc", "logloss"))
                + " |"
            )
        lines.append("")
    return "\n".join(lines)


def tune(
    spec: ModelSpec,
    grid: dict[str, list],
    evaluation: Evaluation,
    tracker: Tracker,
    seed: int = 0,
    progress: Callable[[str], None] = print,
) -> tuple[ModelSpec, list[dict]]:
    """Train `spec` with every combination of `grid` (dotted spec keys -> values) as child runs of one
    parent run; return the spec with the best mean validation AUC over the folds and the trials, best
    first. Test metrics are logged with each run, as always, but never read here."""
    import itertools

    keys = list(grid)
    trials = []
    with tracker.parent(
        f"tune-{spec.name}-{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}",
        {"model": spec.name, "seed": seed, **{f"grid.{k}": ",".join(map(str, v)) for k, v in grid.items()}},
    ) as parent:
        for values in itertools.product(*(grid[k] for k in keys)):
            setting = dict(zip(keys, values, strict=True))
            candidate = with_settings(spec, setting)
            result = train_run(candidate, seed, evaluation, tracker, progress, parent_run_id=parent)
            trials.append({**setting, "valid_auc_mean": result.metrics["valid_auc_mean"], "run_id": result.run_id})
            progress(f"tune {spec.name} {setting}: mean validation AUC {trials[-1]['valid_auc_mean']:.4f}")
        trials.sort(key=lambda t: -t["valid_auc_mean"])
        RunLogger(parent).log_search(trials)
    return with_settings(spec, {k: trials[0][k] for k in keys}), trials


def with_settings(spec: ModelSpec, setting: dict) -> ModelSpec:
    """`spec` with dotted keys replaced, e.g. {"architecture.dropout": 0.3}; validated like a spec file."""
    tree = spec.model_dump()
    for dotted, value in setting.items():
        *parents, last = dotted.split(".")
        node = tree
        for part in parents:
            node = node[part]
        if last not in node:
            raise ValueError(f"{spec.name}: no setting {dotted!r} to tune")
        node[last] = value
    return ModelSpec.model_validate(tree)
