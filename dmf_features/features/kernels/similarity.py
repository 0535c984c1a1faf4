"""DMF's target-aware similarity features for one batch of samples, in numpy and FAISS (no Spark).

For each sample the similarities of its target with its whole long history are computed once, as
one matrix product per user (a chunk of one user's samples against the span of that user's
behaviours their windows cover), and every feature is read from that matrix: `sim` and `bucket` are
its first L columns, `hist` counts its buckets, and FAISS's k-selection picks `topk` from it.
Positions where the history item or the target has no vector of the modality are masked (NaN
similarity, bucket -1) and never counted.
"""

from __future__ import annotations

from dataclasses import dataclass

import faiss
import numpy as np

from dmf_features.features.kernels.histories import Windows, newest_first
from dmf_features.features.kernels.vectors import ModalityVectors

_CHUNK_SAMPLES = 512  # one user's samples per matrix product: bounds memory for a very heavy user


@dataclass(frozen=True)
class FeatureShape:
    history_length: int  # L
    long_history_length: int  # L_long
    buckets: int  # B
    top_k: int  # K


BUCKET_EDGE_METHODS = ("observed_range", "quantile", "equal_width")
_EDGE_PAIRS = 100_000  # random item pairs whose similarities place the edges
_EDGE_CHUNK = 10_000
_RANGE_QUANTILES = (0.001, 0.999)  # observed_range: where all but the outermost 0.2% of pairs lie


def bucket_edges(matrix: np.ndarray, buckets: int, method: str = "observed_range", seed: int = 0) -> np.ndarray:
    """The B - 1 inner boundaries (float32, ascending) of one modality's similarity buckets.

    Real encoders use a narrow band of [-1, 1] (MiniLM titles mostly 0.05-0.45, EfficientNet posters
    0.25-0.6), so `equal_width` over [-1, 1] puts nearly every position in two or three buckets.
    `observed_range` (the default) splits evenly the range that 99.8% of the similarities of random
    pairs of distinct items fall in, which keeps the resolution of equal widths in the rare, most
    similar tail (a sequel, a remake), where most of the click signal is; `quantile` gives each bucket
    an equal share of those pairs instead, which spends the buckets on the crowded middle. The pairs
    are seeded, so a rebuild over the same vectors gets the same edges. Fewer than two items fall
    back to equal widths over [-1, 1].
    """
    if method not in BUCKET_EDGE_METHODS:
        raise ValueError(f"bucket edge method must be one of {BUCKET_EDGE_METHODS}, got {method!r}")
    if method == "equal_width" or len(matrix) < 2:
        return (-1.0 + 2.0 * np.arange(1, buckets) / buckets).astype(np.float32)
    rng = np.random.default_rng(seed)
    first = rng.integers(0, len(matrix), _EDGE_PAIRS)
    second = (first + rng.integers(1, len(matrix), _EDGE_PAIRS)) % len(matrix)  # never the item itself
    sims = np.concatenate(
        [
            np.einsum("ij,ij->i", matrix[first[i : i + _EDGE_CHUNK]], matrix[second[i : i + _EDGE_CHUNK]])
            for i in range(0, _EDGE_PAIRS, _EDGE_CHUNK)
        ]
    )
    if method == "quantile":
        edges = np.quantile(sims, np.arange(1, buckets) / buckets)
    else:
        low, high = np.quantile(sims, _RANGE_QUANTILES)
        edges = low + (high - low) * np.arange(1, buckets) / buckets
    # rounded: a quantile is often the very similarity of some pair, which another summation order
    # (BLAS in the job, a server's matrix product) could put one rounding step to either side of it
    return np.round(edges, 4).astype(np.float32)


def bucket_of(sims: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Bucket 0 .. len(edges) of each similarity: how many edges are at or below it."""
    return np.searchsorted(edges, sims, side="right").astype(np.int32)


def modality_features(
    vectors: ModalityVectors,
    windows: Windows,
    targets: np.ndarray,
    users: np.ndarray,
    shape: FeatureShape,
    edges: np.ndarray,
) -> dict[str, np.ndarray]:
    """The seven feature columns of one modality for a batch's samples (arrays with a row per sample);
    `edges`: the modality's bucket boundaries (`bucket_edges`)."""
    sims, valid, positions = long_similarities(vectors, windows, targets, users, shape.long_history_length)
    features, top_columns = similarity_features(sims, valid, edges, shape)
    found = top_columns >= 0
    top_positions = np.take_along_axis(positions, np.where(found, top_columns, 0), axis=1)
    features["topk_ids"] = np.where(found, windows.behaviour_items[top_positions], 0).astype(np.int64)
    return features


def similarity_features(
    sims: np.ndarray,
    valid: np.ndarray,
    edges: np.ndarray,
    shape: FeatureShape,
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Every feature of a target and its long history from their similarities, the one definition the
    feature job and a serving request share: `sims` [n, width] newest first, `valid` where both have
    a vector (the rest is masked: NaN similarity, bucket -1, never counted). `sim`, `mask` and
    `bucket` cover the first `history_length` positions, `hist` and `hist_count` all of them, and
    `topk_sims` the K largest (NaN pads). Also returns the top-K's columns in `sims` (-1 pads), which
    the caller maps to item ids."""
    n, short = len(sims), shape.history_length
    short_valid = valid[:, :short]
    short_sims = np.where(short_valid, sims[:, :short], np.nan).astype(np.float32)
    short_buckets = np.where(short_valid, bucket_of(np.nan_to_num(short_sims), edges), -1).astype(np.int32)

    long_buckets = bucket_of(np.where(valid, sims, 0.0), edges)
    rows = np.broadcast_to(np.arange(n)[:, None], valid.shape)
    counts = np.bincount((rows * shape.buckets + long_buckets)[valid], minlength=n * shape.buckets)
    counts = counts.reshape(n, shape.buckets)
    hist_count = counts.sum(axis=1)
    hist = (counts / np.maximum(hist_count, 1)[:, None]).astype(np.float32)

    top_sims, top_columns = top_k(np.where(valid, sims, -np.inf), shape.top_k)
    found = top_columns >= 0
    features = {
        "sim": short_sims,
        "mask": short_valid,
        "bucket": short_buckets,
        "hist": hist,
        "hist_count": hist_count.astype(np.int32),
        "topk_sims": np.where(found, top_sims, np.nan).astype(np.float32),
    }
    return features, top_columns


def long_similarities(
    vectors: ModalityVectors,
    windows: Windows,
    targets: np.ndarray,
    users: np.ndarray,
    long_length: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Similarity of each sample's target with its long history, newest first: (sims, valid, positions)."""
    positions, exists = newest_first(windows, long_length)
    target_rows, target_ok = vectors.lookup(targets)
    item_rows, item_ok = vectors.lookup(windows.behaviour_items)
    valid = exists & target_ok[:, None] & item_ok[positions]
    sims = np.zeros(valid.shape, np.float32)
    for start, stop in _user_chunks(users):
        first, last = int(windows.lo[start]), int(windows.hi[stop - 1])
        if last <= first or not valid[start:stop].any():
            continue
        # targets x the span of behaviours the chunk's windows cover (lo and hi never decrease)
        block = vectors.matrix[target_rows[start:stop]] @ vectors.matrix[item_rows[first:last]].T
        local = np.clip(positions[start:stop] - first, 0, last - first - 1)
        sims[start:stop] = np.take_along_axis(block, local, axis=1)
    return np.where(valid, sims, 0.0).astype(np.float32), valid, positions


def top_k(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k best columns per row, best first, equal scores newest (leftmost) first; -1 pads, also
    where a row is shorter than k.

    FAISS's heap k-selection finds each row's k-th best score; FAISS does not say which of several
    equal scores it keeps, so the columns are then taken as: every column above the k-th score, and
    of those equal to it, the leftmost ones up to k.
    """
    n, width = scores.shape
    if min(k, width) == 0:
        return np.full((n, k), -np.inf, np.float32), np.full((n, k), -1, np.int64)
    values, _ = faiss.kmax(np.ascontiguousarray(scores, np.float32), min(k, width))
    kth = values[:, -1:]
    finite = scores > -np.inf
    above = finite & (scores > kth)
    tied = finite & (scores == kth)
    room = k - above.sum(axis=1, keepdims=True)
    chosen = above | (tied & (np.cumsum(tied, axis=1) <= room))
    rows, cols = np.nonzero(chosen)  # row-major: each row's chosen columns, leftmost first
    slot = np.arange(len(rows)) - np.searchsorted(rows, rows)
    columns = np.full((n, k), -1, np.int64)
    columns[rows, slot] = cols
    picked = np.where(columns >= 0, np.take_along_axis(scores, np.maximum(columns, 0), axis=1), -np.inf)
    order = np.lexsort((np.where(columns < 0, width, columns), -picked), axis=-1)
    return np.take_along_axis(picked, order, axis=1), np.take_along_axis(columns, order, axis=1)


def _user_chunks(users: np.ndarray):
    """(start, stop) ranges of consecutive samples of one user, at most _CHUNK_SAMPLES long."""
    n = len(users)
    if n == 0:
        return
    starts = np.flatnonzero(np.r_[True, users[1:] != users[:-1]])
    stops = np.r_[starts[1:], n]
    for start, stop in zip(starts.tolist(), stops.tolist(), strict=True):
        for chunk in range(start, stop, _CHUNK_SAMPLES):
            yield chunk, min(chunk + _CHUNK_SAMPLES, stop)
