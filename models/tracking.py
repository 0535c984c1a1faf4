"""MLflow for training runs: resolved settings as params, lineage as tags, per-epoch and final
metrics, system metrics, ROC and calibration plots, a results table, and the model (a pyfunc over
`samples` rows, with signature and input example) registered under the spec's name.

A logged model is data, not pickled code: its weights (a state dict) and the JSON of its kind and
`ModelConfig`, so that moving or renaming a module cannot break a registered model and loading
unpickles nothing but tensors (a weights file holding anything else is refused). The pyfunc wrapper,
`SamplesModel`, holds no state; MLflow builds it from code (`pyfunc_entry.py`), never from a pickle,
so a server imports it (and the model classes) from the installed project."""

from __future__ import annotations

import json
import pickle
import re
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import matplotlib
import mlflow
import numpy as np
import pandas as pd
import pyarrow as pa
import torch

from dmf_features.infra.errors import PipelineError
from dmf_features.schemas import Lineage
from models.config import MODEL_CLASSES, ModelSpec
from models.data import ItemVectorTable, Vocabulary, sample_columns, to_batch
from models.layers import ModelConfig
from models.prior_stats import PriorStats
from models.train import Predictions

matplotlib.use("Agg")
import matplotlib.pyplot as plt

TRAINED_THROUGH_TAG = "lineage.trained_through"


class UnsafeModelError(PipelineError):
    """A model's weights file holds more than tensors: loading it could run code, so it is refused."""


class Tracker:
    def __init__(self, tracking_uri: str, experiment: str):
        mlflow.set_tracking_uri(tracking_uri)
        mlflow.set_experiment(experiment)
        self.tracking_uri, self.experiment = tracking_uri, experiment

    @contextmanager
    def run(self, name: str, parent_run_id: str | None = None) -> Iterator[RunLogger]:
        with mlflow.start_run(
            run_name=name, nested=parent_run_id is not None, parent_run_id=parent_run_id, log_system_metrics=True
        ) as run:
            yield RunLogger(run.info.run_id)

    @contextmanager
    def parent(self, name: str, params: dict) -> Iterator[str]:
        with mlflow.start_run(run_name=name) as run:
            mlflow.log_params(params)
            yield run.info.run_id

    def log_comparison(self, result: dict, path: Path) -> None:
        """On the active parent run: the JSON, table and figure, and each model's metrics with bounds."""
        for suffix in (".json", ".md", ".png"):
            mlflow.log_artifact(str(path.with_suffix(suffix)), artifact_path="comparison")
        metrics = {}
        for subset, table in result["subsets"].items():
            for model, values in table["models"].items():
                for metric, interval in values.items():
                    for part in ("estimate", "low", "high"):
                        metrics[f"{_metric_name(model)}.{subset}_{metric}_{part}"] = interval[part]
        for subset, table in result.get("vector_differences", {}).items():
            for model, values in table.items():
                for metric, interval in values.items():
                    for part in ("estimate", "low", "high"):
                        metrics[f"vectors.{_metric_name(model)}.{subset}_{metric}_diff_{part}"] = interval[part]
        mlflow.log_metrics({k: float(v) for k, v in metrics.items() if v is not None and np.isfinite(v)})


def _metric_name(model: str) -> str:
    """`dmf@aligned` as `dmf.aligned`: MLflow metric names allow no @."""
    return model.replace("@", ".")


@dataclass
class RunLogger:
    run_id: str

    def log_setup(
        self, spec: ModelSpec, seed: int, lineage: Lineage, samples_version: int, embeddings_version: int, folds: list[str]
    ) -> None:
        params = {
            **_flatten(spec.model_dump(mode="json")),
            "seed": seed,
            **{f"protocol.fold{i}": f for i, f in enumerate(folds, 1)},
            **_flatten({"features": lineage.features}),
        }
        mlflow.log_params({k: str(v)[:500] for k, v in params.items()})
        mlflow.set_tags(
            {
                "lineage.samples_version": samples_version,
                "lineage.item_embeddings_version": embeddings_version,
                "lineage.events_version": lineage.events_version,
                **{f"lineage.item_vectors.{m}": v for m, v in lineage.item_vectors.items()},
            }
        )

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        mlflow.log_metrics({k: float(v) for k, v in metrics.items() if np.isfinite(v)}, step=step)

    def log_trained_through(self, seconds: int) -> None:
        """The newest row the logged model trained or validated on (tag TRAINED_THROUGH_TAG, epoch seconds)."""
        mlflow.set_tag(TRAINED_THROUGH_TAG, str(seconds))

    def log_search(self, search: list[dict]) -> None:
        """A hyper-parameter search: every setting tried (per fold, for a baseline) with its validation AUC."""
        if search:
            mlflow.log_table(pd.DataFrame(search), artifact_file="search.json")

    def log_evaluation(self, predictions: Predictions, cold: np.ndarray) -> None:
        rows = [{"subset": "test", **predictions.metrics()}, {"subset": "test cold-start", **predictions.metrics(cold)}]
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            pd.DataFrame(rows).to_csv(folder / "results.csv", index=False)
            _roc_plot(predictions, cold, folder / "roc.png")
            _calibration_plot(predictions, folder / "calibration.png")
            mlflow.log_artifacts(tmp, artifact_path="evaluation")

    def log_model(
        self,
        model: torch.nn.Module,
        spec: ModelSpec,
        vocabulary: Vocabulary,
        vectors: ItemVectorTable | None,
        example: pa.RecordBatch,
        lineage: Lineage,
        prior_stats: PriorStats | None = None,
    ) -> str:
        """Log and register the model (`save_model`); return its registered version. With it: its
        vocabulary and item vectors, what a server needs to bucket similarities
        as the training samples were (meta.json: bucket edges, history length, item-vector versions),
        and for a model with context features the users' and items' statistics (prior_stats.npz).
        The signature asks for `request_columns` only: what a server has for a request."""
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            save_model(model, folder)
            np.save(folder / "vocabulary.npy", vocabulary.ids)
            if prior_stats is not None:
                prior_stats.save(folder / "prior_stats.npz")
            if vectors is not None:
                np.savez(folder / "vectors.npz", ids=vectors.ids, matrix=vectors.matrix)
            (folder / "meta.json").write_text(
                json.dumps(
                    {
                        "modalities": list(spec.architecture.modalities),
                        "buckets": lineage.buckets,
                        "bucket_edges": lineage.bucket_edges,
                        "history_length": lineage.history_length,
                        "item_embeddings_version": lineage.item_embeddings_version,
                        "item_vectors": lineage.item_vectors,
                        "hist_vectors": bool(getattr(model, "needs_hist_vectors", False)),
                    }
                )
            )
            frame = request_frame(example.select(request_columns(spec.architecture.modalities, prior_stats is not None)))
            wrapper = SamplesModel()
            wrapper.load_context_from(folder)
            signature = mlflow.models.infer_signature(frame, wrapper.predict(None, frame))
            # no code_paths: a copy of models/ would shadow the installed package in a server while the
            # dmf_features it imports stays the installed one; the model's files need no particular code
            info = mlflow.pyfunc.log_model(
                name="model",
                python_model=str(Path(__file__).with_name("pyfunc_entry.py")),
                artifacts={"folder": str(folder)},
                signature=signature,
                input_example=frame,
                registered_model_name=spec.name,
            )
        return str(info.registered_model_version)


def save_model(model: torch.nn.Module, folder: Path) -> None:
    """weights.pt (the state dict) and model.json (the model's kind and config): what `load_model` builds it from."""
    kind = {cls: kind for kind, cls in MODEL_CLASSES.items()}[type(model)]
    torch.save(model.state_dict(), folder / "weights.pt")
    (folder / "model.json").write_text(json.dumps({"kind": kind, "config": model.cfg.model_dump(mode="json")}))


def load_model(folder: Path) -> torch.nn.Module:
    """The model `save_model` wrote, in eval mode: its class built from the config, then the weights
    loaded with `weights_only`, so no pickled code runs."""
    if not (folder / "model.json").exists():
        raise LookupError(
            f"{folder} holds no model.json: a model logged by an earlier version (a pickled module); train it again"
        )
    saved = json.loads((folder / "model.json").read_text())
    model = MODEL_CLASSES[saved["kind"]](ModelConfig.model_validate(saved["config"]))
    weights = folder / "weights.pt"
    try:
        state = torch.load(weights, weights_only=True)
    except pickle.UnpicklingError as e:  # torch's message suggests weights_only=False: exactly what must not be done
        called = re.search(r"Unsupported global: GLOBAL (\S+)", str(e))
        found = f"it calls {called[1]}" if called else "not a state dict"
        raise UnsafeModelError(
            f"{weights} was refused: it holds more than tensors ({found}), so loading it could run code. "
            "`save_model` never writes such a file: it was replaced or altered. "
            "Do not load it otherwise; train the model again (`dmf train`)."
        ) from None
    model.load_state_dict(state)
    return model.eval()


def request_columns(modalities: Sequence[str], context: bool) -> list[str]:
    """The columns of `samples` that scoring a row reads, all of which a server has for a request: the
    user, their history, the candidate and its similarity features; the request's time only for a model
    with point-in-time statistics (looked up as of it). Never the label or the split."""
    return [c for c in sample_columns(modalities) if c != "label" and (context or c != "event_time")]


class SamplesModel(mlflow.pyfunc.PythonModel):
    """Click probabilities for rows of `samples`: their `request_columns`, other columns ignored."""

    def load_context(self, context) -> None:
        self.load_context_from(Path(context.artifacts["folder"]))

    def load_context_from(self, folder: Path) -> None:
        self.model = load_model(folder)
        self.vocabulary = Vocabulary(np.load(folder / "vocabulary.npy"))
        self.meta = json.loads((folder / "meta.json").read_text())
        self.modalities, self.hist_vectors = self.meta["modalities"], self.meta["hist_vectors"]
        stats_file = folder / "prior_stats.npz"
        self.prior_stats = PriorStats.load(stats_file) if stats_file.exists() else None
        self.columns = request_columns(self.modalities, self.prior_stats is not None)
        vectors_file = folder / "vectors.npz"
        self.vectors = None
        if vectors_file.exists():
            stored = np.load(vectors_file)
            self.vectors = ItemVectorTable(stored["ids"], stored["matrix"])

    def predict(self, context, model_input: pd.DataFrame, params=None) -> np.ndarray:
        frame = model_input[self.columns].assign(label=0)  # `to_batch` reads a label; scoring never looks at it
        records = pa.RecordBatch.from_pandas(frame, preserve_index=False)
        batch = to_batch(records, self.vocabulary, self.modalities, self.vectors, self.hist_vectors, self.prior_stats)
        with torch.inference_mode():
            return torch.sigmoid(self.model(batch)).numpy()


def request_frame(records: pa.RecordBatch | pa.Table) -> pd.DataFrame:
    """Rows as a pyfunc request: float64 / int64 (arrays too), as JSON requests arrive and the logged
    signature expects, and naive UTC times."""
    frame = records.to_pandas()
    for field in records.schema:
        if pa.types.is_timestamp(field.type) and field.type.tz:  # MLflow signatures take naive datetimes (UTC)
            frame[field.name] = frame[field.name].dt.tz_convert("UTC").dt.tz_localize(None)
            continue
        kind = field.type.value_type if pa.types.is_list(field.type) else field.type
        wide = np.float64 if pa.types.is_floating(kind) else np.int64 if pa.types.is_integer(kind) else None
        if wide is None:
            continue
        if pa.types.is_list(field.type):
            frame[field.name] = frame[field.name].map(lambda values, wide=wide: np.asarray(values, wide))
        else:
            frame[field.name] = frame[field.name].astype(wide)
    return frame


def _flatten(tree: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def comparison_figure(result: dict, path: Path) -> None:
    """AUC with its 95% interval per model, overall and on cold-start items, the reference marked."""
    subsets = [s for s in ("all", "cold") if s in result["subsets"]]
    fig, axes = plt.subplots(1, len(subsets), figsize=(6 * len(subsets), 0.45 * len(result["seeds"]) + 1.5), squeeze=False)
    for ax, subset in zip(axes[0], subsets, strict=True):
        table = result["subsets"][subset]
        names = list(table["models"])
        values = np.array(
            [[table["models"][n]["auc"][k] for k in ("estimate", "low", "high")] for n in names], dtype=float
        )  # JSON null (no AUC) becomes NaN
        y = np.arange(len(names))
        estimates = values[:, 0]
        errors = np.stack([estimates - values[:, 1], values[:, 2] - estimates])
        colours = ["tab:red" if n == result["reference"] else "tab:blue" for n in names]
        ax.errorbar(estimates, y, xerr=np.nan_to_num(errors), fmt="none", ecolor="grey", capsize=3)
        ax.scatter(estimates, y, c=colours, zorder=3)
        ax.axvline(0.5, linestyle=":", color="grey")
        ax.set(
            yticks=y,
            yticklabels=names,
            xlabel="test AUC (user-bootstrap 95% interval)",
            title=f"{subset} ({table['rows']:,} rows, {table['users']:,} users)",
        )
        ax.invert_yaxis()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _roc_plot(predictions: Predictions, cold: np.ndarray, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(5, 5))
    for label, mask in (("all test", np.ones(len(cold), bool)), ("cold-start items", cold)):
        fpr, tpr = _roc(predictions.labels[mask], predictions.probabilities[mask])
        if fpr is not None:
            ax.plot(fpr, tpr, label=f"{label} (n={int(mask.sum()):,})")
    ax.plot([0, 1], [0, 1], linestyle=":", color="grey")
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC")
    ax.legend(loc="lower right")
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)


def _roc(labels: np.ndarray, scores: np.ndarray):
    positives, negatives = (labels > 0.5).sum(), (labels <= 0.5).sum()
    if not positives or not negatives:
        return None, None
    order = np.argsort(-scores, kind="stable")
    hits = labels[order] > 0.5
    return np.r_[0, np.cumsum(~hits) / negatives], np.r_[0, np.cumsum(hits) / positives]


def _calibration_plot(predictions: Predictions, path: Path, bins: int = 10) -> None:
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(predictions.probabilities, edges) - 1, 0, bins - 1)
    filled = [b for b in range(bins) if (which == b).any()]
    predicted = [predictions.probabilities[which == b].mean() for b in filled]
    observed = [predictions.labels[which == b].mean() for b in filled]
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot([0, 1], [0, 1], linestyle=":", color="grey")
    ax.plot(predicted, observed, marker="o")
    ax.set(xlabel="mean predicted click probability", ylabel="observed click rate", title="Calibration")
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
