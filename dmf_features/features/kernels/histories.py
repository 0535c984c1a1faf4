"""Point-in-time histories over a time-ordered event stream, in numpy (no Spark).

The feature job sorts each user's rows by (time, kind, item, type), where a *sample* row (kind 0)
sorts before a *behaviour* row (kind 1) of the same time. Walking that order, the behaviours seen
before a sample row are exactly those strictly earlier than the sample: an event at the sample's own
time is never in its history. Nothing here loops over users or rows: a cumulative count of behaviour
rows gives every sample's window at once.

Spark hands the rows over in Arrow batches, and one user's rows may continue in the next batch, so
`HistoryStream` carries the last user's newest `long_length` behaviours over (bounded memory, however
many events a user has).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

KIND_SAMPLE, KIND_BEHAVIOUR = 0, 1


@dataclass(frozen=True)
class Windows:
    """One batch's behaviours (stream order, oldest first) and each sample's window into them.

    Sample i's history is `behaviour_items[lo[i]:hi[i]]`, its newest behaviour at `hi[i] - 1`;
    `lo` already limits it to the newest `long_length`.
    """

    sample_rows: np.ndarray  # row numbers of the batch's sample rows
    behaviour_items: np.ndarray
    behaviour_micros: np.ndarray
    hi: np.ndarray
    lo: np.ndarray


class HistoryStream:
    """Feed the Arrow batches of one Spark partition in order; get each batch's sample windows."""

    def __init__(self, long_length: int):
        self.long_length = long_length
        self._carry_user: int | None = None
        self._carry_items = np.empty(0, np.int64)
        self._carry_micros = np.empty(0, np.int64)

    def windows(self, users: np.ndarray, micros: np.ndarray, kinds: np.ndarray, items: np.ndarray) -> Windows:
        n_carry = len(self._carry_items)
        if n_carry:  # the previous batch's last user, as behaviour rows in front of this batch
            users = np.concatenate([np.full(n_carry, self._carry_user, np.int64), users])
            micros = np.concatenate([self._carry_micros, micros])
            kinds = np.concatenate([np.full(n_carry, KIND_BEHAVIOUR, kinds.dtype), kinds])
            items = np.concatenate([self._carry_items, items])
        is_behaviour = kinds == KIND_BEHAVIOUR
        before = np.cumsum(is_behaviour) - is_behaviour  # behaviour rows ahead of each row
        n = len(users)
        run_start = np.ones(n, bool)
        run_start[1:] = users[1:] != users[:-1]
        first_row_of_user = np.maximum.accumulate(np.where(run_start, np.arange(n), 0))
        user_first = before[first_row_of_user]

        sample_rows = np.flatnonzero(~is_behaviour)
        hi = before[sample_rows]
        lo = np.maximum(user_first[sample_rows], hi - self.long_length)
        behaviour_items, behaviour_micros = items[is_behaviour], micros[is_behaviour]

        if n:  # carry the last user's newest behaviours into the next batch
            start = max(int(user_first[-1]), len(behaviour_items) - self.long_length)
            self._carry_user = int(users[-1])
            self._carry_items = behaviour_items[start:].copy()
            self._carry_micros = behaviour_micros[start:].copy()
        return Windows(sample_rows - n_carry, behaviour_items, behaviour_micros, hi, lo)


def newest_first(windows: Windows, length: int) -> tuple[np.ndarray, np.ndarray]:
    """Positions into the batch's behaviours, newest first, `length` per sample, and which exist."""
    positions = windows.hi[:, None] - 1 - np.arange(length)[None, :]
    exists = positions >= windows.lo[:, None]
    return np.where(exists, positions, 0), exists
