"""The alignment stage (MIM's C-SFT): `events` before the cut-off + frozen `item_embeddings` -> a new,
behaviour-aligned encoder version per modality in `item_embeddings`.

For each modality a projection head (`models/alignment.py`) is trained on the behaviour pairs
(`pairs.py`) and applied to every item with a frozen vector, cold ones included. The version names
its parent and a digest of everything that shaped it (parent version, settings, the pairs and the
content hashes of the items in them), so the same inputs give the same version, and a valid or test
event, never read, cannot change it. Like an encoder, a version is extended incrementally: a run
embeds only items that lack it (new items, changed titles or posters) with the head saved under
`<lake>/_alignment/<digest>/`, without training again. `_alignment/latest.json` names the newest
versions and their lineage (parent, input table versions, cut-off), which `features.item_vectors:
aligned` and `dmf similar --version aligned` read.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import json
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from dmf_features.alignment.manifest import FOLDER, write_manifest
from dmf_features.alignment.pairs import behaviour_pairs, training_cutoff
from dmf_features.embedding.encoders.text import TransformersTextEncoder
from dmf_features.embedding.item_index import build_index
from dmf_features.embedding.versions import frozen_versions
from dmf_features.features.item_vectors import read_version
from dmf_features.features.kernels.lookup import find_sorted
from dmf_features.infra.config import Config, ConfigError
from dmf_features.infra.lake import CommitResult, Lake
from dmf_features.infra.lake_files import copy_folder, publish_file, read_bytes
from dmf_features.schemas import EVENTS, FUSED, ITEM_EMBEDDINGS, ITEMS
from models.alignment import AlignedHead, TunedTextEncoder, train_head, tune_text_encoder

ALIGNED = "c-sft"  # every aligned version and encoder name starts with it
HEAD_ENCODER = f"{ALIGNED}-head"


@dataclass
class AlignedModality:
    modality: str
    parent: str
    version: str
    encoder: str  # c-sft-head, or c-sft-<text encoder> when the text encoder itself was tuned
    items: int  # items with a frozen vector: each gets an aligned one
    pairs: int  # behaviour pairs between items with a vector
    written: int = 0
    unchanged: int = 0
    trained: bool = False  # False: the head (or tuned encoder) of an earlier run was reused
    heldout: dict[str, float] = field(default_factory=dict)


@dataclass
class AlignReport:
    cutoff: str
    events_version: int | None
    embeddings_version: int | None
    modalities: list[AlignedModality]
    commit: CommitResult | None = None
    index_path: str | None = None
    mlflow_run_id: str | None = None
    seconds: float = 0.0

    def render(self) -> str:
        lines = [
            f"align in {self.seconds:.1f}s: behaviour before {self.cutoff} (events v{self.events_version}, "
            f"item_embeddings v{self.embeddings_version})",
            "",
            f"  {'modality':<9}{'pairs':>10}{'items':>9}{'written':>9}{'head':>9}   held-out recall@10 frozen -> aligned",
        ]
        for m in self.modalities:
            recall = (
                f"{m.heldout['frozen_recall_at_10']:.3f} -> {m.heldout['aligned_recall_at_10']:.3f}"
                if m.heldout
                else "(none held out)"
                if m.trained
                else "(in its first run)"
            )
            lines.append(
                f"  {m.modality:<9}{m.pairs:>10,}{m.items:>9,}{m.written:>9,}{'trained' if m.trained else 'reused':>9}   {recall}"
            )
        lines += [f"  {m.modality} version: {m.version}" for m in self.modalities]
        if self.commit is not None:
            lines.append(f"  item_embeddings committed version {self.commit.version}")
        else:
            lines.append("  nothing new: every item already has its aligned vectors")
        if self.index_path:
            lines.append(f"  nearest-item index (aligned fused): {self.index_path}")
        return "\n".join(lines)


def align_embeddings(spark: SparkSession, cfg: Config, lake: Lake, progress: Callable[[str], None] = print) -> AlignReport:
    started = time.monotonic()
    for table, stage in ((EVENTS.name, "dmf ingest"), (ITEM_EMBEDDINGS.name, "dmf embed")):
        if not lake.exists(table):
            raise LookupError(f"the lake has no {table} table yet: run `{stage}` first")
    events_version, embeddings_version = lake.complete_version(EVENTS.name), lake.complete_version(ITEM_EMBEDDINGS.name)
    events = lake.read(spark, EVENTS.name, version=events_version)
    cutoff = training_cutoff(cfg, events)
    cutoff_text = dt.datetime.fromtimestamp(cutoff, dt.UTC).isoformat(timespec="seconds")
    progress(f"behaviour pairs before {cutoff_text}")
    pairs = behaviour_pairs(cfg, events, cutoff)
    progress(f"{len(pairs):,} behaviour pairs")
    if len(pairs) < 2:
        raise LookupError(
            f"{len(pairs)} behaviour pairs before {cutoff_text}: too few to align; set alignment.train_until later, "
            "or widen alignment.pair_window / max_gap_days"
        )
    parents = frozen_versions(cfg)
    if unknown := [m for m in cfg.alignment.modalities if m not in parents]:
        raise ConfigError(f"alignment.modalities has {unknown}, which no configured encoder produces: remove them")
    report = AlignReport(cutoff_text, events_version, embeddings_version, [])
    have = _aligned_keys(spark, lake)
    new_rows, trained = [], {}
    settings = cfg.alignment.model_dump(mode="json", exclude={"enabled", "modalities"})
    import mlflow

    mlflow.set_tracking_uri(cfg.mlflow.tracking_uri)
    mlflow.set_experiment(f"{cfg.mlflow.experiment}-alignment")
    with mlflow.start_run(run_name=f"align {cutoff_text[:10]}") as run:
        report.mlflow_run_id = run.info.run_id
        mlflow.log_params({**settings, "cutoff": cutoff_text, "events_version": events_version, "pairs": len(pairs)})
        mlflow.log_params(
            {"item_embeddings_version": embeddings_version, **{f"parent.{m}": parents[m] for m in cfg.alignment.modalities}}
        )
        for modality in cfg.alignment.modalities:
            ids, matrix, hashes = read_version(spark, lake, modality, parents[modality], embeddings_version)
            frozen = {"ids": ids, "matrix": matrix, "hashes": hashes}
            rows, found = find_sorted(frozen["ids"], pairs.reshape(-1))
            usable = found.reshape(-1, 2).all(axis=1)
            modality_pairs = rows.reshape(-1, 2)[usable]
            encoder = _encoder(modality, cfg)
            version = _version(encoder, parents[modality], _shaping(settings, encoder), frozen, modality_pairs)
            aligned = AlignedModality(modality, parents[modality], version, encoder, len(frozen["ids"]), len(modality_pairs))
            report.modalities.append(aligned)
            todo = _missing(frozen, have.get(version, set()))
            aligned.unchanged = len(frozen["ids"]) - len(todo)
            if not len(todo):
                progress(f"{modality}: every item has {version}")
                continue
            tune_text = modality == "text" and cfg.alignment.text_encoder_layers > 0
            titles = _titles(spark, lake, frozen["ids"]) if tune_text else None
            model = _saved_model(lake, aligned, cfg)
            if model is None:
                what = f"the text encoder's last {cfg.alignment.text_encoder_layers} layer(s)" if tune_text else "a head"
                progress(f"{modality}: training {what} on {len(modality_pairs):,} pairs over {len(frozen['ids']):,} items")
                on_epoch = functools.partial(_log_epoch, modality, progress=progress)
                if tune_text:
                    model = tune_text_encoder(cfg.embedding.text.path, titles, modality_pairs, cfg.alignment, on_epoch, progress)
                else:
                    model = train_head(frozen["matrix"], modality_pairs, cfg.alignment, on_epoch)
                aligned.trained, aligned.heldout = True, model.heldout
                mlflow.log_metrics({f"{modality}.{k}": v for k, v in model.heldout.items()})
                trained[(version, modality)] = model
            vectors = model.embed([titles[i] for i in todo]) if tune_text else model.apply(frozen["matrix"][todo])
            new_rows.append(_rows(frozen, todo, vectors, modality, version, aligned.encoder))
            aligned.written = len(todo)
        curves = [m for m in report.modalities if m.trained]
        if curves:
            _log_loss_curves({m.modality: trained[(m.version, m.modality)].history for m in curves})

    with lake.stage_run("align", cutoff_text[:10], [ITEM_EMBEDDINGS.name]) as read:
        read.update({EVENTS.name: events_version, ITEM_EMBEDDINGS.name: embeddings_version})
        for (version, modality), model in trained.items():
            _save_model(lake, version, modality, model)
        if new_rows:
            table = pa.concat_tables(new_rows)
            progress(f"writing {table.num_rows:,} aligned vectors")
            report.commit = lake.merge(
                spark.createDataFrame(table).coalesce(1),
                ITEM_EMBEDDINGS.name,
                ITEM_EMBEDDINGS.keys,
                partition_by=ITEM_EMBEDDINGS.partition_by,
                description="aligned item vectors",
            )
        _write_manifest(lake, report)
    fused = next((m for m in report.modalities if m.modality == FUSED), None)
    if fused is not None:
        progress("building the nearest-item index over the aligned fused vectors")
        report.index_path = build_index(spark, lake, fused.version, latest=False)
    report.seconds = time.monotonic() - started
    return report


def _encoder(modality: str, cfg: Config) -> str:
    if modality == "text" and cfg.alignment.text_encoder_layers > 0:
        if cfg.embedding.text is None or cfg.embedding.text.kind != "minilm":
            raise ConfigError("alignment.text_encoder_layers tunes a transformers text encoder: set embedding.text.kind: minilm")
        return f"{ALIGNED}-{cfg.embedding.text.kind}"
    return HEAD_ENCODER


def _shaping(settings: dict, encoder: str) -> dict:
    """The settings that shape this model: a head's never include the text encoder's tuning settings."""
    return {k: v for k, v in settings.items() if encoder != HEAD_ENCODER or not k.startswith("text_encoder_")}


def _version(encoder: str, parent: str, settings: dict, frozen: dict, pair_rows: np.ndarray) -> str:
    """c-sft:<digest>(<parent>) for a head, c-sft-<text encoder>:<digest>(<parent>) for a tuned encoder; the
    digest covers the settings, the pairs and the content of their items."""
    digest = hashlib.sha256(json.dumps({"parent": parent, "settings": settings}, sort_keys=True).encode())
    digest.update(frozen["ids"][pair_rows].astype(np.int64).tobytes())
    for h in frozen["hashes"][np.unique(pair_rows)]:
        digest.update(str(h).encode())
    prefix = ALIGNED if encoder == HEAD_ENCODER else encoder
    return f"{prefix}:{digest.hexdigest()[:12]}({parent})"


def _aligned_keys(spark: SparkSession, lake: Lake) -> dict[str, set[tuple[int, str]]]:
    """{aligned version: (item, input hash) pairs it has}, read once for every modality."""
    rows = (
        lake.read(spark, ITEM_EMBEDDINGS.name)
        .where(F.col("encoder").startswith(ALIGNED))
        .select("encoder_version", "item_id", "input_hash")
        .toArrow()
        .to_pylist()
    )
    keys: dict[str, set[tuple[int, str]]] = {}
    for r in rows:
        keys.setdefault(r["encoder_version"], set()).add((r["item_id"], r["input_hash"]))
    return keys


def _missing(frozen: dict, done: set[tuple[int, str]]) -> np.ndarray:
    """Rows of `frozen` whose item (at its current content) has no vector of the version yet (`done`)."""
    return np.array([i for i, key in enumerate(zip(frozen["ids"].tolist(), frozen["hashes"])) if key not in done], np.int64)


def _rows(frozen: dict, todo: np.ndarray, vectors: np.ndarray, modality: str, version: str, encoder: str) -> pa.Table:
    n = len(todo)
    return pa.table(
        {
            "item_id": pa.array(frozen["ids"][todo], pa.int64()),
            "modality": pa.array([modality] * n, pa.string()),
            "encoder": pa.array([encoder] * n, pa.string()),
            "encoder_version": pa.array([version] * n, pa.string()),
            "input_hash": pa.array(frozen["hashes"][todo].tolist(), pa.string()),
            "dim": pa.array([vectors.shape[1]] * n, pa.int32()),
            "vector": pa.array(list(vectors.astype(np.float32)), pa.list_(pa.float32())),
            "embedded_at": pa.array([dt.datetime.now(dt.UTC)] * n, pa.timestamp("us", tz="UTC")),
        }
    )


def _titles(spark: SparkSession, lake: Lake, ids: np.ndarray) -> list[str]:
    """The titles of `ids` (sorted) from `items` at its last complete version."""
    rows = lake.read(spark, ITEMS.name, version=lake.complete_version(ITEMS.name)).select("item_id", "title").toArrow()
    known = dict(zip(rows.column("item_id").to_pylist(), rows.column("title").to_pylist()))
    return [known.get(i) or "" for i in ids.tolist()]


def _model_uri(lake: Lake, version: str, modality: str) -> str:
    """Where a version's head (`<modality>.npz`) or tuned text encoder (`<modality>-encoder/`) is kept."""
    return f"{lake.root}/{FOLDER}/{hashlib.sha256(version.encode()).hexdigest()[:16]}/{modality}"


def _saved_model(lake: Lake, aligned: AlignedModality, cfg: Config) -> AlignedHead | TunedTextEncoder | None:
    base = _model_uri(lake, aligned.version, aligned.modality)
    if aligned.encoder == HEAD_ENCODER:
        data = read_bytes(f"{base}.npz")
        return AlignedHead.from_bytes(data) if data else None
    with tempfile.TemporaryDirectory() as tmp:
        if not copy_folder(f"{base}-encoder", Path(tmp)):
            return None
        return TunedTextEncoder(
            TransformersTextEncoder(tmp, device=torch.device("cpu"), max_tokens=cfg.alignment.text_encoder_max_tokens)
        )


def _save_model(lake: Lake, version: str, modality: str, model: AlignedHead | TunedTextEncoder) -> None:
    base = _model_uri(lake, version, modality)
    with tempfile.TemporaryDirectory() as tmp:
        if isinstance(model, AlignedHead):
            path = Path(tmp) / "head.npz"
            path.write_bytes(model.to_bytes())
            publish_file(path, f"{base}.npz")
        else:
            model.save(Path(tmp))
            for path in sorted(Path(tmp).iterdir()):
                publish_file(path, f"{base}-encoder/{path.name}")


def _write_manifest(lake: Lake, report: AlignReport) -> None:
    write_manifest(
        lake.root,
        {
            "cutoff": report.cutoff,
            "events_version": report.events_version,
            "item_embeddings_version_read": report.embeddings_version,
            "item_embeddings_version_written": report.commit.version if report.commit else None,
            "mlflow_run_id": report.mlflow_run_id,
            "written_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "modalities": {
                m.modality: {k: v for k, v in asdict(m).items() if k in ("parent", "version", "pairs", "items", "heldout")}
                for m in report.modalities
            },
        },
    )


def _log_epoch(modality: str, epoch: int, metrics: dict[str, float], *, progress: Callable[[str], None]) -> None:
    import mlflow

    mlflow.log_metrics({f"{modality}.{k}": v for k, v in metrics.items()}, step=epoch)
    progress(f"  {modality} epoch {epoch}: " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()))


def _log_loss_curves(histories: dict[str, list[dict[str, float]]]) -> None:
    """One panel per modality: training and held-out InfoNCE loss by epoch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import mlflow

    fig, axes = plt.subplots(1, len(histories), figsize=(4 * len(histories), 3), squeeze=False)
    for ax, (modality, history) in zip(axes[0], histories.items(), strict=True):
        epochs = range(1, len(history) + 1)
        for key in history[0]:
            ax.plot(epochs, [h[key] for h in history], marker="o", label=key)
        ax.set(title=modality, xlabel="epoch", ylabel="InfoNCE loss")
        ax.legend()
    fig.tight_layout()
    mlflow.log_figure(fig, "alignment_loss.png")
    plt.close(fig)
