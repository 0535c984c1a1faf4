"""Training and evaluation loops: seeded, deterministic on CPU, early stopping on validation AUC.

Data arrives as callables that return a fresh iterable of `CTRBatch`es per pass, so the loops do
not care whether batches stream from Delta or come from memory.
"""

from __future__ import annotations

import copy
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm import tqdm

from models.batch import CTRBatch
from models.config import TrainingSpec
from models.metrics import auc, gauc, logloss

Batches = Callable[[], Iterable[CTRBatch]]


@dataclass
class Predictions:
    users: np.ndarray
    items: np.ndarray
    labels: np.ndarray
    probabilities: np.ndarray

    def metrics(self, mask: np.ndarray | None = None) -> dict[str, float]:
        keep = slice(None) if mask is None else mask
        users, labels, p = self.users[keep], self.labels[keep], self.probabilities[keep]
        if not len(labels):
            return {"auc": float("nan"), "gauc": float("nan"), "logloss": float("nan"), "samples": 0}
        return {"auc": auc(labels, p), "gauc": gauc(users, labels, p), "logloss": logloss(labels, p), "samples": len(labels)}


@dataclass
class FitResult:
    best_epoch: int
    history: list[dict[str, float]] = field(default_factory=list)  # one entry per epoch


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)


def predict(model: torch.nn.Module, batches: Iterable[CTRBatch]) -> Predictions:
    model.eval()
    parts: dict[str, list[np.ndarray]] = {"users": [], "items": [], "labels": [], "probabilities": []}
    with torch.inference_mode():
        for batch in batches:
            parts["probabilities"].append(torch.sigmoid(model(batch)).numpy())
            parts["users"].append(batch.user_ids.numpy())
            parts["items"].append(batch.item_ids.numpy() if batch.item_ids is not None else batch.target_ids.numpy())
            parts["labels"].append(batch.labels.numpy())
    return Predictions(**{k: np.concatenate(v) if v else np.empty(0) for k, v in parts.items()})


def fit(
    model: torch.nn.Module,
    train: Batches,
    valid: Batches,
    settings: TrainingSpec,
    on_epoch: Callable[[int, dict[str, float]], None] = lambda epoch, metrics: None,
    train_batches: int | None = None,
    monitor: Batches | None = None,
) -> FitResult:
    """Train until validation AUC stops improving for `patience` epochs; keep the best weights.
    `monitor` (the test rows) is only scored and reported each epoch, to show over- or under-fitting:
    it never chooses anything."""
    optimizer = torch.optim.Adam(model.parameters(), lr=settings.learning_rate, weight_decay=settings.weight_decay)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    result, best_auc, best_state, stale = FitResult(best_epoch=0), -1.0, None, 0
    for epoch in range(1, settings.epochs + 1):
        model.train()
        started, samples, total_loss, seen = time.perf_counter(), 0, 0.0, ([], [])
        for batch in tqdm(
            train(), total=train_batches, desc=f"epoch {epoch}", unit="batch", leave=False, disable=None
        ):  # a bar on a terminal; in a log, the per-epoch lines only
            optimizer.zero_grad()
            logits = model(batch)
            loss = loss_fn(logits, batch.labels)
            loss.backward()
            optimizer.step()
            samples += len(batch)
            total_loss += loss.item() * len(batch)
            seen[0].append(batch.labels.numpy())
            seen[1].append(logits.detach().numpy())
        seconds = time.perf_counter() - started
        valid_metrics = predict(model, valid()).metrics()
        metrics = {
            "train_loss": total_loss / max(samples, 1),
            "train_samples_per_s": samples / max(seconds, 1e-9),
            "train_auc": auc(np.concatenate(seen[0]), np.concatenate(seen[1])) if samples else float("nan"),
            **{f"valid_{k}": v for k, v in valid_metrics.items() if k != "samples"},
        }
        if monitor is not None:
            metrics.update({f"test_{k}": v for k, v in predict(model, monitor()).metrics().items() if k != "samples"})
        result.history.append(metrics)
        on_epoch(epoch, metrics)
        if metrics["valid_auc"] > best_auc:
            best_auc, best_state, stale, result.best_epoch = metrics["valid_auc"], copy.deepcopy(model.state_dict()), 0, epoch
        else:
            stale += 1
            if stale >= settings.patience:
                break
    if best_state is not None:
        model.load_state_dict(best_state)
    return result
