"""The numpy cores of the feature stage: point-in-time windows, top-K selection, negative draws."""

from __future__ import annotations

import numpy as np
import pytest

from dmf_features.features.kernels.histories import KIND_BEHAVIOUR, KIND_SAMPLE, HistoryStream, newest_first
from dmf_features.features.kernels.negatives import ItemAvailability, draw_negatives
from dmf_features.features.kernels.similarity import bucket_edges, bucket_of, top_k

S, B = KIND_SAMPLE, KIND_BEHAVIOUR


def _windows_by_sample(stream: HistoryStream, rows: list[tuple[int, int, int, int]]) -> list[list[int]]:
    """rows: (user, time, kind, item) in stream order -> each sample's history, newest first."""
    users, micros, kinds, items = (np.array(c, np.int64) for c in zip(*rows, strict=True))
    windows = stream.windows(users, micros, kinds, items)
    positions, exists = newest_first(windows, stream.long_length)
    return [windows.behaviour_items[p[e]].tolist() for p, e in zip(positions, exists, strict=True)]


def test_history_is_strictly_earlier_and_per_user():
    rows = [(1, 10, B, 100), (1, 20, S, 7), (1, 20, B, 101), (1, 30, S, 8), (2, 5, S, 9), (2, 6, B, 200), (2, 7, S, 9)]
    assert _windows_by_sample(HistoryStream(10), rows) == [[100], [101, 100], [], [200]]


def test_long_history_is_capped_newest_first():
    rows = [(1, t, B, 100 + t) for t in range(6)] + [(1, 9, S, 1)]
    assert _windows_by_sample(HistoryStream(3), rows) == [[105, 104, 103]]


def test_a_user_continues_across_batches_with_bounded_carry():
    stream = HistoryStream(3)
    first = [(1, t, B, 100 + t) for t in range(5)]
    assert _windows_by_sample(stream, first) == []
    assert len(stream._carry_items) == 3  # only what a window can still need
    assert _windows_by_sample(stream, [(1, 9, S, 1), (2, 1, S, 2)]) == [[104, 103, 102], []]


def test_top_k_is_best_first_and_equal_scores_newest_first():
    rng = np.random.default_rng(3)
    for _ in range(300):
        scores = rng.integers(0, 4, size=(12, 20)).astype(np.float32)
        scores[rng.random(scores.shape) < rng.random()] = -np.inf
        k = int(rng.integers(1, 25))
        values, columns = top_k(scores, k)
        expected = np.argsort(-scores, axis=1, kind="stable")[:, : min(k, 20)]
        expected_values = np.take_along_axis(scores, expected, axis=1)
        expected_columns = np.where(np.isfinite(expected_values), expected, -1)
        # always k columns: -1 pads where a row has fewer finite scores, or is narrower than k
        np.testing.assert_array_equal(columns, np.pad(expected_columns, ((0, 0), (0, k - expected.shape[1])), constant_values=-1))
        expected_values = np.pad(expected_values, ((0, 0), (0, k - expected.shape[1])), constant_values=-np.inf)
        np.testing.assert_array_equal(values[columns >= 0], expected_values[columns >= 0])


def test_equal_width_buckets_split_minus_one_to_one():
    edges = bucket_edges(np.eye(3, dtype=np.float32), 4, "equal_width")
    assert edges.tolist() == [-0.5, 0.0, 0.5]
    assert bucket_of(np.array([-1.0, -0.51, -0.5, 0.0, 0.49, 0.5, 0.99, 1.0]), edges).tolist() == [0, 0, 1, 2, 2, 3, 3, 3]


def narrow_band_vectors(n: int = 300) -> np.ndarray:
    """Unit vectors around a common direction: every similarity in a narrow band, as real encoders'."""
    matrix = np.random.default_rng(0).normal(size=(n, 16)).astype(np.float32) * 0.3 + 1.0
    return matrix / np.linalg.norm(matrix, axis=1, keepdims=True)


def test_observed_range_edges_split_evenly_where_random_item_pairs_lie():
    matrix = narrow_band_vectors()
    pairs = (matrix @ matrix.T)[np.triu_indices(len(matrix), 1)]
    edges = bucket_edges(matrix, 5)
    assert pairs.min() > 0.3 and len(edges) == 4
    low, high = np.quantile(pairs, [0.001, 0.999])
    np.testing.assert_allclose(edges, low + (high - low) * np.arange(1, 5) / 5, atol=2e-3)
    shares = np.bincount(bucket_of(pairs, edges), minlength=5) / len(pairs)
    assert (shares > 0.005).all() and shares.max() < 0.5  # every bucket used, none holding most pairs
    np.testing.assert_array_equal(bucket_edges(matrix, 5), edges)  # seeded: a rebuild gets the same edges
    assert bucket_of(np.array([-1.0, 1.0]), edges).tolist() == [0, 4]
    np.testing.assert_array_equal(bucket_edges(matrix[:1], 5), bucket_edges(matrix, 5, "equal_width"))
    with pytest.raises(ValueError, match="must be one of"):
        bucket_edges(matrix, 5, "log")


def test_quantile_edges_give_each_bucket_an_equal_share_of_random_item_pairs():
    matrix = narrow_band_vectors()
    edges = bucket_edges(matrix, 5, "quantile")
    pairs = (matrix @ matrix.T)[np.triu_indices(len(matrix), 1)]
    np.testing.assert_allclose(np.bincount(bucket_of(pairs, edges), minlength=5) / len(pairs), 0.2, atol=0.01)


def test_negatives_existed_before_and_are_distinct_and_repeatable():
    availability = ItemAvailability(np.arange(10, 30), np.arange(20) * 100)
    users = np.arange(500) % 7
    items = 10 + np.arange(500) % 20
    micros = np.random.default_rng(1).integers(0, 2_500, 500)
    rows, slots, negatives = draw_negatives(users, items, micros, availability, 3, seed=5)
    eligible = availability.available(micros)
    first_seen = dict(zip(availability.items.tolist(), availability.first_micros.tolist(), strict=True))
    for row, negative in zip(rows, negatives, strict=True):
        assert negative != items[row] and first_seen[negative] < micros[row]
    per_row = np.bincount(rows, minlength=500)
    assert (per_row == np.minimum(3, np.maximum(eligible - (first_seen_before(items, micros, first_seen)), 0))).all()
    assert all(len(set(negatives[rows == r])) == per_row[r] for r in range(500))
    again = draw_negatives(users, items, micros, availability, 3, seed=5)
    assert all(np.array_equal(a, b) for a, b in zip((rows, slots, negatives), again, strict=True))
    other = draw_negatives(users, items, micros, availability, 3, seed=6)[2]
    assert not np.array_equal(negatives, other)


def first_seen_before(items: np.ndarray, micros: np.ndarray, first_seen: dict[int, int]) -> np.ndarray:
    """1 where the target itself is among the eligible items (it cannot be its own negative)."""
    return np.array([first_seen[i] < t for i, t in zip(items.tolist(), micros.tolist(), strict=True)], int)


@pytest.mark.parametrize("available", [0, 1])
def test_no_negative_when_nothing_else_existed(available):
    availability = ItemAvailability(np.array([5]), np.array([0]))
    rows, _, _ = draw_negatives(np.array([1]), np.array([5]), np.array([10 if available else 0]), availability, 2, 1)
    assert len(rows) == 0
