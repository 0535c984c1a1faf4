"""One split of `samples` (under one fold of the evaluation protocol) as a stream of CTRBatches,
with bounded memory.

Files (one per day) are read in record batches and pooled into a buffer of a few batches' rows; a
training pass shuffles the file order and each buffer (seeded per epoch), so batches mix days
without ever holding the split in memory. A split smaller than `cache_bytes` is kept in memory
after its first pass (and shuffled whole each epoch): re-reading thousands of small daily files
every epoch would cost more than the model.
"""

from __future__ import annotations

from collections.abc import Generator, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from models.batch import CTRBatch
from models.data import (
    ItemVectorTable,
    PinnedTable,
    Vocabulary,
    epoch_seconds,
    sample_columns,
    to_batch,
)
from models.prior_stats import PriorStats
from models.protocol import SPLIT_CODES, TRAIN, Fold

_BUFFER_BATCHES = 16


@dataclass
class SplitReader:
    samples: PinnedTable
    fold: Fold
    split: str
    batch_size: int
    vocabulary: Vocabulary
    modalities: Sequence[str]
    vectors: ItemVectorTable | None
    hist_vectors: bool = False
    prior_stats: PriorStats | None = None
    preloaded: pa.Table | None = None  # the whole table in memory (shared by every reader of a run): no file reads
    shuffle_seed: int | None = None  # None: file order, no shuffling (evaluation)
    cache_bytes: int = 2 << 30
    epoch: int = 0
    _cached: pa.Table | None = None

    def __iter__(self) -> Iterator[CTRBatch]:
        rng = np.random.default_rng(None if self.shuffle_seed is None else (self.shuffle_seed, self.epoch))
        self.epoch += 1
        if self._cached is None and self.preloaded is not None:
            self._cached = self.preloaded.filter(self._in_split(self.preloaded))
        if self._cached is not None:
            yield from self._batches(self._cached, rng)
            return
        files = list(self.samples.files)
        if self.shuffle_seed is not None:
            files = [files[i] for i in rng.permutation(len(files))]
        kept: list[pa.Table] | None = []
        leftover = None  # rows short of a full batch, carried into the next buffer
        for table in self._buffers(files):
            if kept is not None:
                kept.append(table)
                if sum(k.nbytes for k in kept) > self.cache_bytes:
                    kept = None  # too large to keep: stream every pass
            if leftover is not None:
                table = pa.concat_tables([leftover, table])
            leftover = yield from self._batches(table, rng, full_only=True)
        if leftover is not None and leftover.num_rows:
            yield self._batch(leftover)
        if kept is not None:
            self._cached = pa.concat_tables(kept) if kept else None

    def _batches(
        self,
        table: pa.Table,
        rng: np.random.Generator,
        full_only: bool = False,
    ) -> Generator[CTRBatch, None, pa.Table | None]:
        """Batches of `batch_size` rows (shuffled if training); with `full_only`, the rows short of a
        full batch are returned instead, so that every batch of a pass but the last is full."""
        if self.shuffle_seed is not None:
            table = table.take(pa.array(rng.permutation(table.num_rows)))
        whole = table.num_rows - table.num_rows % self.batch_size if full_only else table.num_rows
        for start in range(0, whole, self.batch_size):
            yield self._batch(table.slice(start, self.batch_size))
        return table.slice(whole) if full_only else None

    def _batch(self, table: pa.Table) -> CTRBatch:
        records = table.combine_chunks().to_batches()[0]
        return to_batch(records, self.vocabulary, self.modalities, self.vectors, self.hist_vectors, self.prior_stats)

    def _in_split(self, records: pa.RecordBatch | pa.Table) -> pa.Array:
        codes = self.fold.assign(records.column("user_id").to_numpy(), epoch_seconds(records.column("event_time")))
        return pa.array(codes == SPLIT_CODES[self.split])

    def _buffers(self, files: list[str]) -> Iterator[pa.Table]:
        pending, rows = [], 0
        for records in self.samples.batches(sample_columns(self.modalities), self.batch_size, files):
            records = records.filter(self._in_split(records))
            if records.num_rows:
                pending.append(records)
                rows += records.num_rows
            if rows >= _BUFFER_BATCHES * self.batch_size:
                yield pa.Table.from_batches(pending)
                pending, rows = [], 0
        if pending:
            yield pa.Table.from_batches(pending)


@dataclass(frozen=True)
class SampleIndex:
    """The narrow columns of every row of a samples table, read in one pass: enough to resolve the
    protocol's folds, count training targets, build point-in-time statistics and fit the baselines
    that need no features."""

    user_ids: np.ndarray
    item_ids: np.ndarray
    seconds: np.ndarray
    labels: np.ndarray
    is_negative: np.ndarray

    @classmethod
    def read(cls, samples: PinnedTable) -> SampleIndex:
        parts: dict[str, list[np.ndarray]] = {f: [] for f in ("user_ids", "item_ids", "seconds", "labels", "is_negative")}
        for records in samples.batches(["user_id", "item_id", "event_time", "label", "is_negative"], 65_536):
            parts["user_ids"].append(records.column("user_id").to_numpy())
            parts["item_ids"].append(records.column("item_id").to_numpy())
            parts["seconds"].append(epoch_seconds(records.column("event_time")))
            parts["labels"].append(records.column("label").to_numpy())
            parts["is_negative"].append(records.column("is_negative").to_numpy(zero_copy_only=False))
        empty = {"user_ids": np.int64, "item_ids": np.int64, "seconds": np.int64, "labels": np.int32, "is_negative": bool}
        return cls(**{k: np.concatenate(v) if v else np.empty(0, empty[k]) for k, v in parts.items()})

    def prior_stats(self, fold: Fold) -> PriorStats:
        """Point-in-time statistics over the observed events, smoothed toward the fold's training rate."""
        observed = ~self.is_negative
        train = fold.assign(self.user_ids, self.seconds) == TRAIN
        rate = float(self.labels[train].mean()) if train.any() else 0.5
        return PriorStats.build(
            self.user_ids[observed], self.item_ids[observed], self.seconds[observed], self.labels[observed], rate
        )


@dataclass(frozen=True)
class TrainingItems:
    """What the training rows of a fold tell a run before it trains."""

    vocabulary: Vocabulary
    target_counts: dict[int, int]  # item id -> training samples with it as target (cold-start evaluation)
    rows: int  # training samples


def training_items(index: SampleIndex, fold: Fold, min_count: int = 1) -> TrainingItems:
    """Items with at least `min_count` training samples as target get their own embedding; rarer
    ones (and items never a training target) share the unknown item's, which training thereby
    learns as the embedding of a rare item."""
    target_ids = index.item_ids[fold.assign(index.user_ids, index.seconds) == TRAIN]
    unique, counts = np.unique(target_ids, return_counts=True)
    return TrainingItems(
        Vocabulary(unique[counts >= min_count]), dict(zip(unique.tolist(), counts.tolist(), strict=True)), len(target_ids)
    )
