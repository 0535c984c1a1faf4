"""User-level, paired bootstrap confidence intervals for AUC, GAUC and log loss, averaged over seeds.

Why resample users and not rows: the rows of one user share that user's taste, history and position in
the traffic, so they are not independent; resampling rows would treat them as if they were and give
intervals that are too narrow. A resample draws users with replacement and keeps all rows of a drawn
user (a user drawn k times counts with weight k).

Why paired: every model is scored on the same user draws in each resample, so the per-resample
difference reference - model cancels the variation that comes from which users were drawn (which moves
all models together). Its interval is therefore much narrower than the two models' own intervals, and
it is the one to read when asking whether one model beats another.

Speed: a resample only changes per-row weights (the count of the row's user), so each model and seed
is sorted once and the weighted AUC of a batch of resamples is a few cumulative sums; per-user AUCs and
per-user loss sums are computed once and a resample is a weighted sum over users (a matrix product).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

METRICS = ("auc", "gauc", "logloss")
_EPS = 1e-7
_CHUNK_ELEMENTS = 4_000_000  # resamples x rows per AUC batch: bounds the memory of the gathered weights


@dataclass(frozen=True)
class Interval:
    estimate: float  # the metric on the full data (mean over seeds)
    low: float  # 2.5th percentile of the bootstrap distribution
    high: float  # 97.5th percentile


@dataclass(frozen=True)
class _RankPlan:
    """One score order, reusable for any row weights. AUC is the weighted share of (upper, lower) pairs
    that the scores put in that order, ties counting half; for each upper row, `below` and `upto` count
    the lower rows scored strictly below it and below or equal. Rows in score order."""

    upper: np.ndarray
    lower: np.ndarray
    below: np.ndarray
    upto: np.ndarray


def _rank_plan(labels: np.ndarray, scores: np.ndarray) -> _RankPlan:
    upper = labels > 0.5
    # The weights of the lower rows get a cumulative sum, the slowest step (numpy cannot vectorise it),
    # so they are made the smaller class: P(positive > negative) = P(-negative > -positive).
    if upper.sum() < len(upper) / 2:
        upper, scores = ~upper, -scores
    order = np.argsort(scores, kind="stable")
    ordered, upper = scores[order], upper[order]
    new_group = np.ones(len(ordered), bool)  # not np.r_[True, ...]: that has one entry too many for no rows
    new_group[1:] = ordered[1:] != ordered[:-1]
    starts = np.flatnonzero(new_group)
    stops = np.r_[starts[1:], len(ordered)]
    group = np.cumsum(new_group) - 1
    lower_before = np.r_[0, np.cumsum(~upper)]  # lower rows among the first k rows in score order
    return _RankPlan(order[upper], order[~upper], lower_before[starts[group[upper]]], lower_before[stops[group[upper]]])


def _auc_from_weights(plan: _RankPlan, upper_weights: np.ndarray, lower_weights: np.ndarray) -> np.ndarray:
    """Weighted Mann-Whitney AUC; the weights are [rows, resamples] so that the cumulative sum and the
    gathers below move whole contiguous rows."""
    cumulative = np.zeros((len(lower_weights) + 1, lower_weights.shape[1]))
    np.cumsum(lower_weights, axis=0, out=cumulative[1:])
    # An upper row beats the lower rows below it and ties with those in its group: (below + upto) / 2.
    beaten = cumulative.take(plan.below, axis=0) + cumulative.take(plan.upto, axis=0)
    pairs = upper_weights.sum(axis=0) * cumulative[-1]
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(pairs > 0, np.einsum("ij,ij->j", upper_weights, beaten) / 2 / pairs, np.nan)


def _user_aucs(user_index: np.ndarray, labels: np.ndarray, scores: np.ndarray, n_users: int) -> np.ndarray:
    """Unweighted AUC of each user's rows (NaN for a user with one class), all users in one sort."""
    order = np.lexsort((scores, user_index))
    users, ordered, positive = user_index[order], scores[order], labels[order] > 0.5
    new_group = np.ones(len(users), bool)
    new_group[1:] = (users[1:] != users[:-1]) | (ordered[1:] != ordered[:-1])
    starts = np.flatnonzero(new_group)
    stops = np.r_[starts[1:], len(users)]
    sizes = np.bincount(users, minlength=n_users)
    # Tie groups never span two users, so a global average rank minus the rows of earlier users is the
    # rank within the user.
    ranks = np.repeat((starts + stops + 1) / 2.0, stops - starts) - (np.cumsum(sizes) - sizes)[users]
    n_positive = np.bincount(users, positive, minlength=n_users)
    rank_sum = np.bincount(users, ranks * positive, minlength=n_users)
    pairs = n_positive * (sizes - n_positive)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(pairs > 0, (rank_sum - n_positive * (n_positive + 1) / 2) / pairs, np.nan)


def _row_losses(labels: np.ndarray, probabilities: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(probabilities, np.float64), _EPS, 1 - _EPS)
    y = np.asarray(labels, np.float64)
    return -(y * np.log(p) + (1 - y) * np.log(1 - p))


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(denominator > 0, numerator / denominator, np.nan)


def weighted_auc(labels: np.ndarray, scores: np.ndarray, weights: np.ndarray) -> float:
    """AUC with row weights (a row of weight k counts as k copies); equals `metrics.auc` for unit weights."""
    labels, scores, weights = np.asarray(labels), np.asarray(scores, np.float64), np.asarray(weights, np.float64)
    plan = _rank_plan(labels, scores)
    return float(_auc_from_weights(plan, weights[plan.upper, None], weights[plan.lower, None])[0])


def weighted_gauc(users: np.ndarray, labels: np.ndarray, scores: np.ndarray, weights: np.ndarray) -> float:
    """GAUC where a user's weight is the sum of its row weights (k * n_u for a user drawn k times); the
    per-user AUC itself is unweighted, as repeating all of a user's rows does not change it."""
    _, user_index = np.unique(np.asarray(users), return_inverse=True)
    n_users = int(user_index.max()) + 1 if len(user_index) else 0
    aucs = _user_aucs(user_index, np.asarray(labels), np.asarray(scores, np.float64), n_users)
    user_weights = np.bincount(user_index, np.asarray(weights, np.float64), minlength=n_users)
    valid = ~np.isnan(aucs)
    return float(_ratio(np.sum(user_weights[valid] * aucs[valid]), np.sum(user_weights[valid])))


def weighted_logloss(labels: np.ndarray, probabilities: np.ndarray, weights: np.ndarray) -> float:
    """Weighted mean of the per-row log loss (probabilities clipped to [1e-7, 1 - 1e-7])."""
    weights = np.asarray(weights, np.float64)
    return float(_ratio(np.sum(weights * _row_losses(labels, probabilities)), np.sum(weights)))


def _resample_counts(n_users: int, resamples: int, seed: int) -> np.ndarray:
    """[n_users, resamples]: how often each user is drawn in each resample (n_users draws each)."""
    draws = np.random.default_rng(seed).integers(0, n_users, size=(resamples, n_users))
    offsets = np.arange(resamples)[:, None] * n_users
    counts = np.bincount((draws + offsets).ravel(), minlength=resamples * n_users).reshape(resamples, n_users)
    return np.ascontiguousarray(counts.T, np.float64)


def _resampled(metric: str, user_index: np.ndarray, labels: np.ndarray, scores: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """One model seed's metric under each column of user counts [n_users, resamples]: shape [resamples]."""
    sizes = np.bincount(user_index, minlength=len(counts)).astype(np.float64)
    if metric == "logloss":
        return _ratio(np.bincount(user_index, _row_losses(labels, scores), minlength=len(sizes)) @ counts, sizes @ counts)
    if metric == "gauc":
        aucs = _user_aucs(user_index, labels, scores, len(sizes))
        user_weights = np.where(np.isnan(aucs), 0.0, sizes)
        return _ratio((user_weights * np.nan_to_num(aucs)) @ counts, user_weights @ counts)
    plan = _rank_plan(labels, scores)
    upper_users, lower_users = user_index[plan.upper], user_index[plan.lower]
    step = max(1, _CHUNK_ELEMENTS // max(1, len(labels)))
    chunks = (np.ascontiguousarray(counts[:, start : start + step]) for start in range(0, counts.shape[1], step))
    # take() on contiguous rows is several times faster than fancy indexing of a strided view.
    return np.concatenate(
        [_auc_from_weights(plan, chunk.take(upper_users, axis=0), chunk.take(lower_users, axis=0)) for chunk in chunks]
    )


def _interval(values: np.ndarray) -> Interval:
    """values[0] is the full-data value, values[1:] the resamples."""
    if np.isnan(values[1:]).all():  # e.g. one class only: nanpercentile would warn and give NaN anyway
        return Interval(float(values[0]), math.nan, math.nan)
    low, high = np.nanpercentile(values[1:], [2.5, 97.5])
    return Interval(float(values[0]), float(low), float(high))


def bootstrap_metrics(
    users: np.ndarray,
    labels: np.ndarray,
    scores: dict[str, list[np.ndarray]],
    reference: str,
    resamples: int = 1000,
    seed: int = 0,
    metrics: tuple[str, ...] = METRICS,
) -> dict:
    """Intervals of each model's metrics and of reference - model for every other model.

    `scores[model]` holds one probability array per training seed (row-aligned with `users` and
    `labels`); a model's metric is the mean over its seeds, on the full data and in every resample.
    """
    users, labels = np.asarray(users), np.asarray(labels)
    if reference not in scores:
        raise ValueError(f"reference model {reference!r} has no scores")
    if unknown := set(metrics) - set(METRICS):
        raise ValueError(f"unknown metrics {sorted(unknown)}; known: {METRICS}")
    if resamples < 1:
        raise ValueError("resamples must be at least 1")
    for model, seeds in scores.items():
        if not seeds or any(len(s) != len(labels) for s in seeds) or len(users) != len(labels):
            raise ValueError(f"model {model!r}: need at least one score array, each aligned with users and labels")
    _, user_index = np.unique(users, return_inverse=True)
    n_users = int(user_index.max()) + 1 if len(labels) else 0
    # Column 0 counts every user once (the full data), so the estimate goes through the same code as the
    # resamples; the other columns are the resamples.
    counts = np.concatenate([np.ones((n_users, 1)), _resample_counts(n_users, resamples, seed)], axis=1)
    values = {
        model: {
            metric: np.mean([_resampled(metric, user_index, labels, np.asarray(s, np.float64), counts) for s in seeds], axis=0)
            for metric in metrics
        }
        for model, seeds in scores.items()
    }
    return {
        "models": {model: {metric: _interval(v) for metric, v in by_metric.items()} for model, by_metric in values.items()},
        "differences": {
            model: {metric: _interval(values[reference][metric] - v) for metric, v in by_metric.items()}
            for model, by_metric in values.items()
            if model != reference
        },
        "resamples": resamples,
        "users": n_users,
        "rows": len(labels),
    }


def interval_to_dict(interval: Interval) -> dict[str, float | None]:
    """{"estimate", "low", "high"}, NaN written as None so that the result is strict JSON."""
    return {
        key: None if math.isnan(value) else value
        for key, value in (("estimate", interval.estimate), ("low", interval.low), ("high", interval.high))
    }


def to_json_ready(result: dict) -> dict[str, Any]:
    """`bootstrap_metrics`' result with every Interval as a dict, ready for json.dump(allow_nan=False)."""
    return {
        **result,
        **{
            section: {
                model: {metric: interval_to_dict(interval) for metric, interval in by_metric.items()}
                for model, by_metric in result[section].items()
            }
            for section in ("models", "differences")
        },
    }


def format_interval(value: dict | None, signed: bool = False) -> str:
    """An `interval_to_dict` as "0.7123 [0.7001, 0.7245]" (signed: "+0.0123 [...]"); n/a without an estimate."""
    if not value or value["estimate"] is None:  # no AUC without both classes (JSON null)
        return "n/a"
    sign = "+" if signed else ""
    return f"{value['estimate']:{sign}.4f} [{value['low']:{sign}.4f}, {value['high']:{sign}.4f}]"
