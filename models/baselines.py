"""The baselines a practitioner tries first, fitted on the same `samples` rows and folds as the
neural models: popularity, the smoothed item mean label, logistic regression on one-hot user and
item ids, and LightGBM on the precomputed target-aware features plus the user's and item's
point-in-time statistics. Hyper-parameters are chosen on the fold's validation rows only.

Each baseline returns a probability for every row of the fold's valid and test splits (in the
samples' row order), so that its predictions pair row by row with every other model's.
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from dmf_features.features.kernels.lookup import find_sorted
from dmf_features.schemas import feature_column
from models.data import PinnedTable, epoch_seconds, list_matrix
from models.metrics import auc
from models.prior_stats import PriorStats
from models.protocol import TEST, TRAIN, VALID
from models.splits import SampleIndex

ITEM_MEAN_SMOOTHING = 10.0  # pseudo-rows at the global mean: an item seen twice is not 0% or 100%


@dataclass
class BaselineFit:
    valid: np.ndarray  # probabilities of the fold's valid rows
    test: np.ndarray  # and of its test rows
    search: list[dict] = field(default_factory=list)  # each setting tried, with its validation AUC


@dataclass(frozen=True)
class FoldRows:
    """A fold's rows of one samples table: split codes, and what the baselines read."""

    index: SampleIndex
    codes: np.ndarray
    prior_stats: PriorStats

    def mask(self, code: int) -> np.ndarray:
        return self.codes == code


def item_mean_scores(rows: FoldRows, item_ids: np.ndarray) -> np.ndarray:
    """The fold's training rows' `smoothed_item_means` for `item_ids`."""
    train = rows.mask(TRAIN)
    return smoothed_item_means(rows.index.item_ids[train], rows.index.labels[train], item_ids)


def smoothed_item_means(train_items: np.ndarray, train_labels: np.ndarray, item_ids: np.ndarray) -> np.ndarray:
    """Each item's mean training label, smoothed toward the global mean; the global mean for an
    item never seen in training (the honest fallback for a cold item)."""
    labels = train_labels.astype(float)
    known, inverse = np.unique(train_items, return_inverse=True)
    sums, counts = np.bincount(inverse, labels), np.bincount(inverse)
    means = (sums + ITEM_MEAN_SMOOTHING * labels.mean()) / (counts + ITEM_MEAN_SMOOTHING)
    position, found = find_sorted(known, item_ids)
    return np.where(found, means[position], labels.mean())


def popularity(rows: FoldRows) -> BaselineFit:
    """The item's training rows (log count): more rated, more liked. Turned into a probability by a
    one-feature logistic fit on the validation rows, so that its log loss means something."""
    from sklearn.linear_model import LogisticRegression

    train_items = rows.index.item_ids[rows.mask(TRAIN)]
    known, counts = np.unique(train_items, return_counts=True)

    def score(mask):
        position, found = find_sorted(known, rows.index.item_ids[mask])
        return np.where(found, np.log1p(counts[position]), 0.0)[:, None]

    valid, test = score(rows.mask(VALID)), score(rows.mask(TEST))
    scale = LogisticRegression().fit(valid, rows.index.labels[rows.mask(VALID)])
    return BaselineFit(scale.predict_proba(valid)[:, 1], scale.predict_proba(test)[:, 1])


def item_mean(rows: FoldRows) -> BaselineFit:
    return BaselineFit(*(item_mean_scores(rows, rows.index.item_ids[rows.mask(code)]) for code in (VALID, TEST)))


def logistic_ids(rows: FoldRows) -> BaselineFit:
    """Logistic regression on one-hot user and item ids (an id unseen in training is all zeros);
    the L2 strength C chosen on validation AUC."""
    from scipy import sparse
    from sklearn.linear_model import LogisticRegression

    train = rows.mask(TRAIN)
    users, items = np.unique(rows.index.user_ids[train]), np.unique(rows.index.item_ids[train])

    def one_hot(mask):
        columns = []
        for known, ids, offset in ((users, rows.index.user_ids[mask], 0), (items, rows.index.item_ids[mask], len(users))):
            position, found = find_sorted(known, ids)
            columns.append(np.where(found, position + offset, -1))
        n = int(mask.sum())
        hits = np.concatenate(columns)
        row = np.tile(np.arange(n), 2)
        keep = hits >= 0
        return sparse.csr_matrix((np.ones(keep.sum()), (row[keep], hits[keep])), shape=(n, len(users) + len(items)))

    x_train, x_valid, x_test = one_hot(train), one_hot(rows.mask(VALID)), one_hot(rows.mask(TEST))
    y_train, y_valid = rows.index.labels[train], rows.index.labels[rows.mask(VALID)]
    best, search = None, []
    for c in (0.03, 0.1, 0.3, 1.0):
        model = LogisticRegression(C=c, max_iter=1000).fit(x_train, y_train)
        valid = model.predict_proba(x_valid)[:, 1]
        search.append({"C": c, "valid_auc": auc(y_valid, valid)})
        if best is None or search[-1]["valid_auc"] > best[0]:
            best = (search[-1]["valid_auc"], valid, model.predict_proba(x_test)[:, 1])
    return BaselineFit(best[1], best[2], search)


def feature_matrix(samples: PinnedTable, index: SampleIndex, prior_stats: PriorStats, modalities: Sequence[str]) -> np.ndarray:
    """[rows, features] in the samples' row order (the order `SampleIndex.read` saw): summaries of
    the precomputed similarity features of each modality, the history length, and the point-in-time
    user and item statistics. NaN where a modality has no similarity (LightGBM handles missing)."""
    columns = [
        "user_id",
        "item_id",
        "event_time",
        "hist_len",
        *[feature_column(m, f) for m in modalities for f in ("sim", "hist", "hist_count", "topk_sims")],
    ]
    parts = []
    for records in samples.batches(columns, 65_536):
        parts.append(_features(records, prior_stats, modalities))
    matrix = np.concatenate(parts) if parts else np.empty((0, 0), np.float32)
    if len(matrix) != len(index.labels):
        raise RuntimeError("samples changed while it was read: the feature pass and the index disagree")
    return matrix


def _features(records: pa.RecordBatch, prior_stats: PriorStats, modalities: Sequence[str]) -> np.ndarray:
    n = records.num_rows
    out = [
        np.log1p(records.column("hist_len").to_numpy().astype(np.float32))[:, None],
        prior_stats.features(
            records.column("user_id").to_numpy(),
            records.column("item_id").to_numpy(),
            epoch_seconds(records.column("event_time")),
        ),
    ]
    with warnings.catch_warnings():  # a row without any similarity of a modality gives NaN, as intended
        warnings.simplefilter("ignore", RuntimeWarning)
        for m in modalities:
            sims = list_matrix(records.column(feature_column(m, "sim")), n).astype(np.float32)
            topk = list_matrix(records.column(feature_column(m, "topk_sims")), n).astype(np.float32)
            covered = np.isfinite(sims).sum(axis=1)
            out += [
                np.nanmean(sims, axis=1)[:, None],
                np.nanmax(sims, axis=1)[:, None],
                sims[:, :1],
                covered[:, None].astype(np.float32),
                list_matrix(records.column(feature_column(m, "hist")), n),
                np.log1p(records.column(feature_column(m, "hist_count")).to_numpy().astype(np.float32))[:, None],
                np.nanmean(topk, axis=1)[:, None],
                np.nanmax(topk, axis=1)[:, None],
            ]
    return np.concatenate([np.asarray(o, np.float32).reshape(n, -1) for o in out], axis=1)


def lightgbm_features(rows: FoldRows, features: np.ndarray, seed: int = 0) -> BaselineFit:
    """LightGBM on `features`, early-stopped on the fold's validation rows; leaves and learning rate
    from a small grid, chosen on validation AUC."""
    import lightgbm as lgb

    train, valid, test = rows.mask(TRAIN), rows.mask(VALID), rows.mask(TEST)
    y_train, y_valid = rows.index.labels[train], rows.index.labels[valid]
    best, search = None, []
    for leaves, rate, min_child in itertools.product((15, 63), (0.05,), (20, 100)):
        params = {
            "objective": "binary",
            "num_leaves": leaves,
            "learning_rate": rate,
            "min_child_samples": min_child,
            "feature_fraction": 0.8,
            "bagging_fraction": 0.8,
            "bagging_freq": 1,
            "lambda_l2": 1.0,
            "seed": seed,
            "deterministic": True,
            "num_threads": 2,
            "verbosity": -1,
        }
        booster = lgb.train(
            params,
            lgb.Dataset(features[train], y_train),
            num_boost_round=1000,
            valid_sets=[lgb.Dataset(features[valid], y_valid)],
            callbacks=[lgb.early_stopping(50, verbose=False)],
        )
        predicted = booster.predict(features[valid], num_iteration=booster.best_iteration)
        search.append(
            {
                "num_leaves": leaves,
                "learning_rate": rate,
                "min_child_samples": min_child,
                "rounds": booster.best_iteration,
                "valid_auc": auc(y_valid, predicted),
            }
        )
        if best is None or search[-1]["valid_auc"] > best[0]:
            best = (search[-1]["valid_auc"], predicted, booster.predict(features[test], num_iteration=booster.best_iteration))
    return BaselineFit(best[1], best[2], search)


BASELINES: dict[str, Callable[..., BaselineFit]] = {
    "popularity": popularity,
    "item_mean": item_mean,
    "logistic_ids": logistic_ids,
    "lightgbm": lightgbm_features,
}
