"""Evaluation metrics: AUC, GAUC (per-user AUC weighted by the user's samples) and log loss."""

from __future__ import annotations

import numpy as np


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney, ties counted half); NaN without both classes."""
    labels = np.asarray(labels) > 0.5
    positives, negatives = int(labels.sum()), int((~labels).sum())
    if not positives or not negatives:
        return float("nan")
    ranks = _average_ranks(np.asarray(scores, np.float64))
    return float((ranks[labels].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def gauc(users: np.ndarray, labels: np.ndarray, scores: np.ndarray) -> float:
    """Per-user AUC, averaged with each user's sample count as weight, over the users with both
    a click and a non-click (a user with one class has no AUC)."""
    order = np.argsort(users, kind="stable")
    users, labels, scores = np.asarray(users)[order], np.asarray(labels)[order], np.asarray(scores)[order]
    starts = np.flatnonzero(np.r_[True, users[1:] != users[:-1]])
    stops = np.r_[starts[1:], len(users)]
    total = weight = 0.0
    for start, stop in zip(starts, stops, strict=True):
        value = auc(labels[start:stop], scores[start:stop])
        if not np.isnan(value):
            total += value * (stop - start)
            weight += stop - start
    return total / weight if weight else float("nan")


def logloss(labels: np.ndarray, probabilities: np.ndarray, eps: float = 1e-7) -> float:
    p = np.clip(np.asarray(probabilities, np.float64), eps, 1 - eps)
    y = np.asarray(labels, np.float64)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def _average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks, equal values sharing the average of their ranks."""
    order = np.argsort(values, kind="stable")
    sorted_values = values[order]
    starts = np.flatnonzero(np.r_[True, sorted_values[1:] != sorted_values[:-1]])
    stops = np.r_[starts[1:], len(values)]
    average = (starts + stops + 1) / 2.0  # mean of ranks start+1 .. stop
    ranks = np.empty(len(values))
    ranks[order] = np.repeat(average, stops - starts)
    return ranks
