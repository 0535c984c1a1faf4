"""User-level paired bootstrap intervals: the weighted metrics against models.metrics on repeated rows,
the estimates, the paired differences, determinism and the degenerate inputs."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from models import intervals, metrics
from models.intervals import Interval, bootstrap_metrics, to_json_ready


def _exact(value: float) -> object:
    """Equal up to float rounding: the same sums in another order."""
    return pytest.approx(value, abs=1e-12)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-x))


def _data(n_users: int, rate: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Users with 1-20 rows each, labels with click rate `rate`, and a score with a planted signal."""
    rng = np.random.default_rng(seed)
    users = np.repeat(np.arange(n_users) * 7 + 3, rng.integers(1, 21, n_users))  # ids need not be 0..n-1
    labels = (rng.random(len(users)) < rate).astype(np.float64)
    return users, labels, _sigmoid(1.5 * labels - 1 + rng.normal(size=len(users)))


@pytest.mark.parametrize("rate", [0.2, 0.7])  # both classes as the smaller one (the AUC plan swaps them)
@pytest.mark.parametrize("decimals", [None, 1])  # distinct scores, and heavy ties within and across classes
def test_weighted_metrics_equal_metrics_on_repeated_rows(rate: float, decimals: int | None) -> None:
    users, labels, scores = _data(60, rate)
    if decimals is not None:
        scores = np.round(scores, decimals)
    ones = np.ones(len(labels))
    assert intervals.weighted_auc(labels, scores, ones) == _exact(metrics.auc(labels, scores))
    assert intervals.weighted_gauc(users, labels, scores, ones) == _exact(metrics.gauc(users, labels, scores))
    assert intervals.weighted_logloss(labels, scores, ones) == _exact(metrics.logloss(labels, scores))

    # Row weights: the same as repeating each row that many times (0 drops it).
    weights = np.random.default_rng(1).integers(0, 4, len(labels))
    repeated = np.repeat(labels, weights), np.repeat(scores, weights)
    assert intervals.weighted_auc(labels, scores, weights) == _exact(metrics.auc(*repeated))
    assert intervals.weighted_logloss(labels, scores, weights) == _exact(metrics.logloss(*repeated))
    # GAUC with one weight per user, as a bootstrap draw gives (a user drawn k times).
    weights = np.random.default_rng(2).integers(0, 4, users.max() + 1)[users]
    repeated = np.repeat(users, weights), np.repeat(labels, weights), np.repeat(scores, weights)
    assert intervals.weighted_gauc(users, labels, scores, weights) == _exact(metrics.gauc(*repeated))


def test_each_resample_equals_metrics_on_the_drawn_users(monkeypatch: pytest.MonkeyPatch) -> None:
    """The vectorised per-resample values against models.metrics on the rows of the drawn users, repeated."""
    monkeypatch.setattr(intervals, "_CHUNK_ELEMENTS", 2000)  # several resample chunks on this small data
    users, labels, scores = _data(40, 0.3)
    scores = np.round(scores, 2)
    _, user_index = np.unique(users, return_inverse=True)
    counts = intervals._resample_counts(40, 12, seed=5)
    assert (counts.sum(axis=0) == 40).all() and (counts == 0).any() and (counts > 1).any()
    repeat = counts[user_index].astype(int)  # [rows, resamples]: how often each row is in each resample
    for metric in intervals.METRICS:
        resampled = intervals._resampled(metric, user_index, labels, scores, counts)
        for r in range(counts.shape[1]):
            rows = np.repeat(np.arange(len(labels)), repeat[:, r])
            full = (
                metrics.gauc(users[rows], labels[rows], scores[rows])
                if metric == "gauc"
                else getattr(metrics, metric)(labels[rows], scores[rows])
            )
            assert resampled[r] == _exact(full), (metric, r)


def test_estimate_is_the_mean_over_seeds_of_the_full_data_metric() -> None:
    users, labels, _ = _data(80, 0.3)
    rng = np.random.default_rng(3)
    scores = {"three_seeds": [rng.random(len(labels)) for _ in range(3)], "one_seed": [rng.random(len(labels))]}
    result = bootstrap_metrics(users, labels, scores, reference="one_seed", resamples=20)
    assert (result["resamples"], result["users"], result["rows"]) == (20, 80, len(labels))
    for model, seeds in scores.items():
        expected = {
            "auc": np.mean([metrics.auc(labels, s) for s in seeds]),
            "gauc": np.mean([metrics.gauc(users, labels, s) for s in seeds]),
            "logloss": np.mean([metrics.logloss(labels, s) for s in seeds]),
        }
        for metric, value in expected.items():
            interval = result["models"][model][metric]
            assert interval.estimate == _exact(value)
            assert interval.low < interval.high
    difference = result["differences"]["three_seeds"]["auc"]
    assert difference.estimate == pytest.approx(
        result["models"]["one_seed"]["auc"].estimate - result["models"]["three_seeds"]["auc"].estimate
    )
    assert set(result["differences"]) == {"three_seeds"}


def test_reference_plus_tiny_noise_differs_by_an_interval_around_zero() -> None:
    """The difference covers 0 on nearly every data set (a 95% interval may miss now and then)."""
    covered = dict.fromkeys(intervals.METRICS, 0)
    for seed in range(20):
        users, labels, reference = _data(200, 0.3, seed)
        noise = np.random.default_rng(seed).normal(scale=0.01, size=len(labels))
        noisy = _sigmoid(np.log(reference / (1 - reference)) + noise)
        result = bootstrap_metrics(
            users, labels, {"reference": [reference], "noisy": [noisy]}, reference="reference", resamples=200, seed=seed
        )
        for metric, interval in result["differences"]["noisy"].items():
            covered[metric] += interval.low < 0 < interval.high
    assert min(covered.values()) >= 16, covered


def test_paired_differences() -> None:
    users, labels, reference = _data(500, 0.3)
    rng = np.random.default_rng(4)
    scores = {
        "reference": [reference],
        "random": [rng.random(len(labels)) for _ in range(2)],
        "correlated": [_sigmoid(np.log(reference / (1 - reference)) + rng.normal(scale=0.3, size=len(labels)))],
    }
    result = bootstrap_metrics(users, labels, scores, reference="reference", resamples=200)
    differences = result["differences"]
    assert differences["random"]["auc"].low > 0 and differences["random"]["gauc"].low > 0
    assert differences["random"]["logloss"].high < 0  # lower loss is better
    # Both models move together with the drawn users, so their difference varies far less than either
    # (unpaired draws would make it about sqrt(2) times wider instead).
    for metric in intervals.METRICS:
        paired = differences["correlated"][metric].high - differences["correlated"][metric].low
        own = [
            result["models"][model][metric].high - result["models"][model][metric].low for model in ("reference", "correlated")
        ]
        assert paired < 0.75 * min(own), (metric, paired, own)


def test_same_seed_same_result_other_seed_other_bounds() -> None:
    users, labels, scores = _data(100, 0.3)
    inputs = users, labels, {"a": [scores], "b": [np.random.default_rng(5).random(len(labels))]}
    first = bootstrap_metrics(*inputs, reference="a", resamples=50, seed=7)
    assert bootstrap_metrics(*inputs, reference="a", resamples=50, seed=7) == first
    other = bootstrap_metrics(*inputs, reference="a", resamples=50, seed=8)
    for section in ("models", "differences"):
        for model, by_metric in first[section].items():
            for metric, interval in by_metric.items():
                assert other[section][model][metric].estimate == interval.estimate
                assert (other[section][model][metric].low, other[section][model][metric].high) != (interval.low, interval.high)


@pytest.mark.filterwarnings("error")
def test_one_class_and_empty_input_give_nan() -> None:
    users = np.array([1, 1, 2, 3, 3])
    scores = {"a": [np.array([0.1, 0.4, 0.3, 0.9, 0.2])], "b": [np.full(5, 0.5)]}
    result = bootstrap_metrics(users, np.zeros(5), scores, reference="a", resamples=30)
    for section in ("models", "differences"):
        for by_metric in result[section].values():
            for metric in ("auc", "gauc"):
                assert all(math.isnan(v) for v in (by_metric[metric].estimate, by_metric[metric].low, by_metric[metric].high))
            assert not math.isnan(by_metric["logloss"].low)  # log loss needs no second class
    empty = bootstrap_metrics(np.array([]), np.array([]), {"a": [np.array([])]}, reference="a", resamples=5)
    assert (empty["users"], empty["rows"]) == (0, 0)
    assert all(math.isnan(v) for i in empty["models"]["a"].values() for v in (i.estimate, i.low, i.high))


def test_some_resamples_without_a_second_class_are_skipped() -> None:
    """One click among many users: most resamples miss it, and the percentiles use the others."""
    users = np.arange(30)
    labels = np.zeros(30)
    labels[0] = 1
    result = bootstrap_metrics(users, labels, {"a": [np.linspace(0.9, 0.1, 30)]}, reference="a", resamples=100)
    auc = result["models"]["a"]["auc"]
    assert auc.estimate == 1.0 and auc.low == auc.high == 1.0


def test_json_ready() -> None:
    users, labels, scores = _data(30, 0.3)
    result = bootstrap_metrics(users, labels, {"a": [scores], "b": [1 - scores]}, reference="a", resamples=10, metrics=("auc",))
    assert isinstance(result["models"]["a"]["auc"], Interval)
    ready = json.loads(json.dumps(to_json_ready(result), allow_nan=False))
    assert set(ready["models"]["a"]) == {"auc"}
    assert set(ready["differences"]["b"]["auc"]) == {"estimate", "low", "high"}
    assert ready["models"]["a"]["auc"]["estimate"] == result["models"]["a"]["auc"].estimate
    assert to_json_ready(bootstrap_metrics(users, np.zeros(len(users)), {"a": [scores]}, reference="a", resamples=3))["models"][
        "a"
    ]["auc"] == {"estimate": None, "low": None, "high": None}


def test_rejects_bad_input() -> None:
    users, labels, scores = _data(10, 0.3)
    with pytest.raises(ValueError, match="reference"):
        bootstrap_metrics(users, labels, {"a": [scores]}, reference="b")
    with pytest.raises(ValueError, match="unknown metrics"):
        bootstrap_metrics(users, labels, {"a": [scores]}, reference="a", metrics=("ndcg",))
    with pytest.raises(ValueError, match="aligned"):
        bootstrap_metrics(users, labels, {"a": [scores[:-1]]}, reference="a")
