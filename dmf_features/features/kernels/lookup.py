"""Looking ids up in a sorted array of known ids: the one way every table here (vocabulary, item
vectors, training counts, per-user thresholds, entity histories) finds its rows."""

from __future__ import annotations

import numpy as np


def find_sorted(keys: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(row in `keys` of each value, whether it is there); `keys` sorted and distinct. The row of a
    missing value is a valid index (clipped), so callers can gather first and mask after."""
    if not len(keys):
        return np.zeros(np.shape(values), np.int64), np.zeros(np.shape(values), bool)
    rows = np.minimum(np.searchsorted(keys, values), len(keys) - 1)
    return rows, keys[rows] == values
