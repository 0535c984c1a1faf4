"""Negative sampling for implicit feedback, in numpy (no Spark).

For each positive sample, `ratio` distinct items other than the target, drawn uniformly from the
items that had already appeared in `events` strictly before the sample's time (a negative must be
an item the user could have been shown then). Draws come from a counter-based hash of (seed, user,
item, time, slot, attempt), not from a stateful generator, so a sample gets the same negatives
however Spark partitions or orders the rows, and on every re-run.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

_MAX_ATTEMPTS = 64  # redraws of a slot that hit the target or an item already drawn for the sample


@dataclass(frozen=True)
class ItemAvailability:
    """Items ordered by the time they first appeared (`first_micros`, ascending)."""

    items: np.ndarray
    first_micros: np.ndarray

    def available(self, micros: np.ndarray) -> np.ndarray:
        """How many items had appeared strictly before each time: the first that many are eligible."""
        return np.searchsorted(self.first_micros, micros, side="left")


def draw_negatives(
    users: np.ndarray,
    items: np.ndarray,
    micros: np.ndarray,
    availability: ItemAvailability,
    ratio: int,
    seed: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(row of the positive, slot j, negative item) for every negative drawn.

    A positive gets fewer than `ratio` negatives only when fewer eligible items exist.
    """
    n = len(items)
    eligible = availability.available(micros)
    base = _mix(_mix(_mix(np.uint64(seed) ^ users.astype(np.uint64)) ^ items.astype(np.uint64)) ^ micros.astype(np.uint64))
    drawn = np.full((n, ratio), -1, np.int64)
    for slot in range(ratio):
        for attempt in range(_MAX_ATTEMPTS):
            open_rows = np.flatnonzero((drawn[:, slot] < 0) & (eligible > 0))
            if not len(open_rows):
                break
            key = _mix(base[open_rows] ^ np.uint64(slot * _MAX_ATTEMPTS + attempt + 1))
            candidate = availability.items[(key % eligible[open_rows].astype(np.uint64)).astype(np.int64)]
            clash = candidate == items[open_rows]
            for earlier in range(slot):
                clash |= candidate == drawn[open_rows, earlier]
            drawn[open_rows[~clash], slot] = candidate[~clash]
    rows, slots = np.nonzero(drawn >= 0)
    return rows, slots, drawn[rows, slots]


def _mix(x: np.ndarray | np.uint64) -> np.ndarray:
    """SplitMix64's finaliser: a well-mixed 64-bit hash (uint64 arithmetic wraps, as intended)."""
    x = np.asarray(x, np.uint64)
    with np.errstate(over="ignore"):
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))
