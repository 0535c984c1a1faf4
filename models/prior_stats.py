"""What was known about a user and an item at a sample's time: how many events each had strictly
before it and what share of them were clicks. Histories in `samples` hold clicks only, so without
these no model can see a user's rate of liking what they rate; point-in-time counting keeps them
free of the sample's own label and of anything later.

Built from the observed events of a `samples` table (sampled negatives left out), one pass over a
few narrow columns; a lookup is a binary search per row.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from dmf_features.features.kernels.lookup import find_sorted

SMOOTHING = 5.0  # pseudo-events at the global rate: a user with 2 events is not "100% clicker"
CONTEXT_FEATURES = ("user_log_events", "user_click_rate", "item_log_events", "item_click_rate")


@dataclass(frozen=True)
class EntityHistory:
    """Events of one kind of entity (users or items), sorted by (entity, time), as one sorted key per
    event (entity rank * span + seconds since the first event), with running click counts."""

    entities: np.ndarray  # sorted distinct ids
    starts: np.ndarray  # first event of each entity
    keys: np.ndarray  # sorted event keys
    clicks_before: np.ndarray  # [events + 1] clicks among all events before each position
    first_second: int
    span: int

    @classmethod
    def build(cls, ids: np.ndarray, seconds: np.ndarray, labels: np.ndarray) -> EntityHistory:
        first = int(seconds.min()) if len(seconds) else 0
        span = (int(seconds.max()) - first + 2) if len(seconds) else 1
        entities, rank = np.unique(ids, return_inverse=True)
        keys = rank.astype(np.int64) * span + (seconds - first)
        order = np.argsort(keys, kind="stable")
        starts = np.searchsorted(keys[order], np.arange(len(entities), dtype=np.int64) * span)
        return cls(entities, starts, keys[order], np.r_[0, np.cumsum(labels[order])], first, span)

    def before(self, ids: np.ndarray, seconds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(events, clicks) of each id strictly before its time; zeros for an unknown id."""
        if not len(self.entities):
            return np.zeros(len(ids)), np.zeros(len(ids))
        block, known = find_sorted(self.entities, ids)
        offset = np.clip(seconds - self.first_second, 0, self.span - 1)
        position = np.searchsorted(self.keys, block * self.span + offset, side="left")  # same second: not before
        start = self.starts[block]
        events = np.where(known, position - start, 0)
        clicks = np.where(known, self.clicks_before[position] - self.clicks_before[start], 0)
        return events.astype(np.float64), clicks.astype(np.float64)


@dataclass(frozen=True)
class PriorStats:
    users: EntityHistory
    items: EntityHistory
    global_rate: float

    @classmethod
    def build(
        cls, user_ids: np.ndarray, item_ids: np.ndarray, seconds: np.ndarray, labels: np.ndarray, global_rate: float
    ) -> PriorStats:
        labels = labels.astype(np.int64)
        return cls(
            EntityHistory.build(user_ids, seconds, labels), EntityHistory.build(item_ids, seconds, labels), float(global_rate)
        )

    def features(self, user_ids: np.ndarray, item_ids: np.ndarray, seconds: np.ndarray) -> np.ndarray:
        """[n, 4] float32 in the order of CONTEXT_FEATURES."""
        columns = []
        for history, ids in ((self.users, user_ids), (self.items, item_ids)):
            events, clicks = history.before(ids, seconds)
            columns += [np.log1p(events), (clicks + SMOOTHING * self.global_rate) / (events + SMOOTHING)]
        return np.stack(columns, axis=1).astype(np.float32)

    def save(self, path: Path) -> None:
        """One .npz a server loads with the model (`load`)."""
        arrays = {f"{kind}.{k}": np.asarray(v) for kind in ("users", "items") for k, v in asdict(getattr(self, kind)).items()}
        np.savez(path, global_rate=self.global_rate, **arrays)

    @classmethod
    def load(cls, path: Path) -> PriorStats:
        stored = np.load(path)
        part = {
            kind: EntityHistory(
                **{
                    k: (stored[f"{kind}.{k}"] if stored[f"{kind}.{k}"].ndim else int(stored[f"{kind}.{k}"]))
                    for k in EntityHistory.__dataclass_fields__
                }
            )
            for kind in ("users", "items")
        }
        return cls(part["users"], part["items"], float(stored["global_rate"]))
