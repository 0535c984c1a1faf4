"""Training loop and metrics: a model learns a planted signal; shuffled labels stay near chance."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import log_loss, roc_auc_score

from models.batch import CTRBatch
from models.config import TrainingSpec
from models.dmf import DMF
from models.layers import ModelConfig
from models.metrics import auc, gauc, logloss
from models.train import fit, predict, seed_everything

MODALITIES = ("text", "fused")
BUCKETS, LENGTH = 8, 10
CFG = ModelConfig(
    vocab_size=200, vector_dim=4, modalities=MODALITIES, buckets=BUCKETS, embedding_dim=8, attention_dim=8, mlp=(32,)
)


def planted(n: int, seed: int, shuffle: bool = False) -> list[CTRBatch]:
    """Each user has an affinity a for the target's content: history similarities fall in high
    buckets with probability a, and the click probability is a. IDs carry no signal."""
    rng = np.random.default_rng(seed)
    affinity = rng.random(n)
    lengths = rng.integers(1, LENGTH + 1, n)
    mask = np.arange(LENGTH)[None, :] < lengths[:, None]
    high = rng.random((n, LENGTH)) < affinity[:, None]
    bucket = np.where(high, rng.integers(BUCKETS // 2, BUCKETS, (n, LENGTH)), rng.integers(0, BUCKETS // 2, (n, LENGTH)))
    bucket = np.where(mask, bucket, -1)
    sims = np.where(mask, (bucket + 0.5) / BUCKETS * 2 - 1, 0.0).astype(np.float32)
    hist = np.stack([np.bincount(b[b >= 0], minlength=BUCKETS) / max((b >= 0).sum(), 1) for b in bucket]).astype(np.float32)
    labels = (rng.random(n) < affinity).astype(np.float32)
    if shuffle:
        labels = rng.permutation(labels)
    batches = []
    for start in range(0, n, 256):
        s = slice(start, start + 256)
        batches.append(
            CTRBatch(
                user_ids=torch.from_numpy(np.arange(n)[s] % 50),
                target_ids=torch.from_numpy(rng.integers(1, 200, len(labels[s]))),
                hist_ids=torch.from_numpy(rng.integers(1, 200, (len(labels[s]), LENGTH)) * mask[s]),
                hist_mask=torch.from_numpy(mask[s]),
                buckets={m: torch.from_numpy(bucket[s]) for m in MODALITIES},
                sims={m: torch.from_numpy(sims[s]) for m in MODALITIES},
                sim_hist={m: torch.from_numpy(hist[s]) for m in MODALITIES},
                target_vectors=torch.zeros(len(labels[s]), 4),
                labels=torch.from_numpy(labels[s]),
            )
        )
    return batches


def train_and_test(shuffle: bool, seed: int = 0) -> tuple[float, list]:
    seed_everything(seed)
    model = DMF(CFG)
    train, valid, test = planted(4000, 1, shuffle), planted(1000, 2, shuffle), planted(2000, 3, shuffle)
    result = fit(model, lambda: train, lambda: valid, TrainingSpec(epochs=4, learning_rate=3e-3, patience=2))
    return predict(model, test).metrics()["auc"], result.history


def test_dmf_learns_a_planted_signal_and_a_shuffled_control_stays_at_chance():
    learned, history = train_and_test(shuffle=False)
    control, _ = train_and_test(shuffle=True)
    assert learned > 0.75, learned
    assert abs(control - 0.5) < 0.05, control
    assert all(h["train_samples_per_s"] > 0 for h in history)


def test_training_is_deterministic_on_cpu():
    first, history_a = train_and_test(shuffle=False, seed=5)
    second, history_b = train_and_test(shuffle=False, seed=5)
    assert first == second and [h["train_loss"] for h in history_a] == [h["train_loss"] for h in history_b]


def test_metrics_match_scikit_learn_and_gauc_weights_users_by_samples():
    rng = np.random.default_rng(0)
    labels, scores = rng.integers(0, 2, 500), np.round(rng.random(500), 1)  # rounded: many ties
    assert auc(labels, scores) == pytest.approx(roc_auc_score(labels, scores))
    assert logloss(labels, scores) == pytest.approx(log_loss(labels, np.clip(scores, 1e-7, 1 - 1e-7)))
    users = np.array([1, 1, 1, 1, 2, 2, 3])
    y = np.array([0, 1, 0, 1, 1, 0, 1])
    p = np.array([0.1, 0.9, 0.2, 0.8, 0.3, 0.7, 0.5])
    assert gauc(users, y, p) == pytest.approx((1.0 * 4 + 0.0 * 2) / 6)  # user 3 has one class: left out
    assert np.isnan(auc(np.ones(3), np.arange(3)))
