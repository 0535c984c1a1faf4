"""Streaming `samples` and `item_embeddings` from Delta into `CTRBatch`es, without Spark.

A table is read at a pinned version (its files from the Delta log, each read with pyarrow in
record batches), so memory is bounded by the batch size, not the table. Multimodal vectors are kept
once, in an `ItemVectorTable`, and looked up per batch by item id.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch
from deltalake import DeltaTable
from deltalake.exceptions import DeltaError, TableNotFoundError

from dmf_features.features.kernels.lookup import find_sorted
from dmf_features.schemas import LINEAGE_KEY, Feature, Lineage, feature_column
from models.batch import CTRBatch
from models.prior_stats import PriorStats


@dataclass(frozen=True)
class PinnedTable:
    """A Delta table at one version: what a training run reads and records as lineage."""

    uri: str
    version: int
    files: tuple[str, ...]
    storage_options: dict | None = None

    @classmethod
    def open(cls, uri: str, version: int | None = None, storage_options: dict | None = None) -> PinnedTable:
        """The table at `version` (default: the latest); LookupError when there is no such table or version."""
        try:
            table = DeltaTable(uri, version=version, storage_options=storage_options)
        except TableNotFoundError:
            raise LookupError(f"there is no Delta table at {uri}") from None
        except DeltaError:
            if version is None:
                raise
            latest = DeltaTable(uri, storage_options=storage_options).version()
            raise LookupError(f"{uri} has no version {version} (the latest is {latest})") from None
        return cls(uri, table.version(), tuple(table.file_uris()), storage_options)

    def lineage(self) -> Lineage | None:
        """What the feature job recorded building this version (in its commit); None if nothing."""
        # the history of the table as it is now: delta-rs numbers the history of a table opened at an older
        # version wrongly (the newest commit gets that older version's number)
        for entry in DeltaTable(self.uri, storage_options=self.storage_options).history():
            if entry.get("version") == self.version and LINEAGE_KEY in entry:
                return Lineage.from_json(entry[LINEAGE_KEY])
        return None

    def batches(
        self,
        columns: Sequence[str],
        batch_rows: int,
        files: Sequence[str] | None = None,
    ) -> Iterator[pa.RecordBatch]:
        for file in files or self.files:
            yield from pq.ParquetFile(_local(file)).iter_batches(batch_size=batch_rows, columns=list(columns))


def _local(uri: str) -> str:
    return uri.removeprefix("file://")


@dataclass(frozen=True)
class ItemVectorTable:
    """One encoder version's vectors of one modality: sorted item ids and a [n, D] matrix."""

    ids: np.ndarray
    matrix: np.ndarray

    @classmethod
    def load(cls, table: PinnedTable, modality: str, version: str) -> ItemVectorTable:
        files = [f for f in table.files if f"modality={modality}/" in f]
        ids, vectors = [], []
        for batch in table.batches(["item_id", "encoder_version", "vector"], 8_192, files):
            batch = batch.filter(pc.equal(batch.column("encoder_version"), version))
            if batch.num_rows:
                ids.append(batch.column("item_id").to_numpy())
                vectors.append(batch.column("vector").flatten().to_numpy().reshape(batch.num_rows, -1))
        if not ids:
            raise LookupError(f"item_embeddings version {table.version} has no {modality} vectors of {version}")
        all_ids = np.concatenate(ids)
        order = np.argsort(all_ids)
        return cls(all_ids[order], np.concatenate(vectors)[order].astype(np.float32))

    @property
    def dim(self) -> int:
        return int(self.matrix.shape[1])

    def lookup(self, item_ids: np.ndarray) -> np.ndarray:
        """Vectors [..., D] of `item_ids`; zeros for an item without one."""
        rows, found = self._rows(item_ids.reshape(-1))
        out = np.where(found[:, None], self.matrix[rows], 0.0).astype(np.float32)
        return out.reshape(*item_ids.shape, self.dim)

    def contains(self, item_ids: np.ndarray) -> np.ndarray:
        """Whether each of `item_ids` has a vector."""
        return self._rows(item_ids.reshape(-1))[1].reshape(item_ids.shape)

    def _rows(self, flat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return find_sorted(self.ids, flat)


@dataclass(frozen=True)
class Vocabulary:
    """Item ids the model has an embedding for (index 1..n); any other id is 0, the unknown item."""

    ids: np.ndarray

    def __len__(self) -> int:
        return len(self.ids) + 1

    def index(self, item_ids: np.ndarray) -> np.ndarray:
        rows, found = find_sorted(self.ids, item_ids)
        return np.where(found, rows + 1, 0)


SAMPLE_COLUMNS = ("user_id", "item_id", "event_time", "label", "hist_item_ids", "hist_len")
MODEL_FEATURES: tuple[Feature, ...] = ("sim", "bucket", "hist", "hist_count", "topk_sims")  # what models read


def sample_columns(modalities: Sequence[str]) -> list[str]:
    return [*SAMPLE_COLUMNS, *[feature_column(m, f) for m in modalities for f in MODEL_FEATURES]]


def similarity_tensors(features: Mapping[str, Mapping[str, np.ndarray]]) -> dict[str, dict[str, torch.Tensor]]:
    """Each modality's features as `samples` holds them (numpy, a row per sample; NaN where masked) as
    `CTRBatch`'s fields: masked similarities 0, buckets int64 (-1 masked), histograms, and `sim_top`
    = [log(1 + unmasked positions), the top-K similarities]. Training batches and serving requests
    both come through here."""
    return {
        "buckets": {m: torch.from_numpy(f["bucket"].astype(np.int64)) for m, f in features.items()},
        "sims": {m: torch.from_numpy(np.nan_to_num(f["sim"]).astype(np.float32)) for m, f in features.items()},
        "sim_hist": {m: torch.from_numpy(f["hist"].astype(np.float32)) for m, f in features.items()},
        "sim_top": {
            m: torch.from_numpy(
                np.concatenate(
                    [np.log1p(f["hist_count"].astype(np.float32))[:, None], np.nan_to_num(f["topk_sims"]).astype(np.float32)],
                    axis=1,
                )
            )
            for m, f in features.items()
        },
    }


def epoch_seconds(column: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """A timestamp column (any unit) as int64 UTC epoch seconds."""
    per_second = {"s": 1, "ms": 1_000, "us": 1_000_000, "ns": 1_000_000_000}[column.type.unit]
    return np.asarray(pc.cast(column, pa.int64()).to_numpy(), np.int64) // per_second


def to_batch(
    records: pa.RecordBatch,
    vocabulary: Vocabulary,
    modalities: Sequence[str],
    vectors: ItemVectorTable | None,
    hist_vectors: bool = False,
    prior_stats: PriorStats | None = None,
) -> CTRBatch:
    """A `samples` record batch as model input: ids through the vocabulary, vectors looked up, and
    (with `prior_stats`) the user's and item's point-in-time statistics as context features."""
    n = records.num_rows
    raw_hist = list_matrix(records.column("hist_item_ids"), n)
    mask = np.arange(raw_hist.shape[1])[None, :] < records.column("hist_len").to_numpy()[:, None]
    targets = records.column("item_id").to_numpy()
    batch = CTRBatch(
        user_ids=torch.from_numpy(records.column("user_id").to_numpy().copy()),
        target_ids=torch.from_numpy(vocabulary.index(targets)),
        hist_ids=torch.from_numpy(vocabulary.index(raw_hist) * mask),
        hist_mask=torch.from_numpy(mask),
        **similarity_tensors(
            {m: {f: _feature_array(records, feature_column(m, f), n) for f in MODEL_FEATURES} for m in modalities}
        ),
        labels=torch.from_numpy(records.column("label").to_numpy().astype(np.float32)),
        item_ids=torch.from_numpy(targets.copy()),
    )
    if prior_stats is not None:
        batch.context = torch.from_numpy(
            prior_stats.features(records.column("user_id").to_numpy(), targets, epoch_seconds(records.column("event_time")))
        )
    if vectors is not None:
        batch.target_vectors = torch.from_numpy(vectors.lookup(targets))
        if hist_vectors:
            distinct, rows = np.unique(raw_hist, return_inverse=True)
            batch.hist_vectors = torch.from_numpy(vectors.lookup(distinct))
            batch.hist_vector_rows = torch.from_numpy(rows.reshape(raw_hist.shape))
    return batch


def _feature_array(records: pa.RecordBatch, column: str, rows: int) -> np.ndarray:
    values = records.column(column)
    return list_matrix(values, rows) if pa.types.is_list(values.type) else values.to_numpy(zero_copy_only=False)


def list_matrix(column: pa.Array, rows: int) -> np.ndarray:
    """A list column whose lists all have one length as a [rows, length] array."""
    values = column.flatten().to_numpy(zero_copy_only=False, writable=True)
    return values.reshape(rows, -1) if rows else values.reshape(0, 0)
