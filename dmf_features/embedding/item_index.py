"""The nearest-item index (MIM's representation centre): FAISS over the fused item vectors.

Built by the embedding job from one fused version of `item_embeddings` and saved next to the lake's
tables as `<lake>/_indexes/item_embeddings/<version slug>/` with the index, the item titles (so a
lookup needs no Spark) and a `meta.json`; `latest.json` points at the newest build. Vectors are
unit length, so inner product is cosine similarity. A GPU index is used when faiss-gpu sees a GPU.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from dmf_features.infra.lake import Lake
from dmf_features.infra.lake_files import filesystem, publish_file, read_bytes
from dmf_features.schemas import FUSED, ITEM_EMBEDDINGS, ITEMS

FOLDER = "_indexes/item_embeddings"
_BATCH = 50_000  # vectors copied from Spark to the index at a time


def version_slug(version: str) -> str:
    """A short, file-name-safe name for a fused version (the index's folder)."""
    return hashlib.sha256(version.encode()).hexdigest()[:16]


def _on_gpu(index: faiss.Index) -> faiss.Index:
    gpus = faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0
    return faiss.index_cpu_to_all_gpus(index) if gpus > 0 else index


def current_index(lake: Lake, fused_version: str) -> str | None:
    """Where the index of `fused_version` is saved, if `latest.json` points at it and it was built from the
    versions of `item_embeddings` and `items` a rebuild would read now (a daily run with nothing new to
    embed then rebuilds nothing); else None."""
    slug = version_slug(fused_version)
    pointer = read_bytes(f"{lake.root}/{FOLDER}/latest.json")
    if pointer is None:
        return None
    meta = json.loads(pointer)
    inputs = {"item_embeddings_version": lake.version(ITEM_EMBEDDINGS.name), "items_version": lake.version(ITEMS.name)}
    if meta.get("slug") != slug or any(meta.get(key) != version for key, version in inputs.items()):
        return None
    return f"{lake.root}/{FOLDER}/{slug}"


def build_index(spark: SparkSession, lake: Lake, fused_version: str, latest: bool = True) -> str:
    """Index every item's fused vector of `fused_version`; returns where it was saved. `latest`: point
    `latest.json` (what `dmf similar` opens by default) at it."""
    rows = lake.read(spark, ITEM_EMBEDDINGS.name).where(
        (F.col("modality") == FUSED) & (F.col("encoder_version") == fused_version)
    )
    if lake.exists(ITEMS.name):  # titles to show; vectors written by a test may have no items
        rows = rows.join(lake.read(spark, ITEMS.name).select("item_id", "title"), "item_id", "left")
    else:
        rows = rows.withColumn("title", F.lit(None).cast("string"))
    # one Arrow transfer: the flat index holds every vector in memory anyway, and Arrow moves them
    # several times faster than row-by-row iteration
    table = rows.select("item_id", "vector", "title").toArrow()
    if table.num_rows == 0:
        raise RuntimeError(f"no fused vectors of version {fused_version!r} to index")
    item_ids = table.column("item_id").to_numpy().astype(np.int64)
    flat = table.column("vector").combine_chunks().flatten().to_numpy(zero_copy_only=False)
    vectors = np.ascontiguousarray(np.asarray(flat, np.float32).reshape(len(item_ids), -1))
    index = faiss.IndexIDMap2(faiss.IndexFlatIP(vectors.shape[1]))
    for start in range(0, len(item_ids), _BATCH):
        index.add_with_ids(vectors[start : start + _BATCH], item_ids[start : start + _BATCH])
    titles = table.column("title").to_pylist()

    slug = version_slug(fused_version)
    meta = {
        "version": fused_version,
        "items": int(index.ntotal),
        "dim": int(index.d),
        "built_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "item_embeddings_version": lake.version(ITEM_EMBEDDINGS.name),
        "items_version": lake.version(ITEMS.name),  # the titles shown
        "metric": "cosine",
    }
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(tmp)
        faiss.write_index(index, str(local / "index.faiss"))
        pq.write_table(pa.table({"item_id": item_ids, "title": titles}), local / "items.parquet")
        (local / "meta.json").write_text(json.dumps(meta, indent=2))
        destination = f"{lake.root}/{FOLDER}/{slug}"
        for path in local.iterdir():
            publish_file(path, f"{destination}/{path.name}")
        if latest:
            pointer = Path(tmp) / "latest.json"
            pointer.write_text(json.dumps({"slug": slug, **meta}, indent=2))
            publish_file(pointer, f"{lake.root}/{FOLDER}/latest.json")
    return destination


@dataclass(frozen=True)
class Neighbour:
    item_id: int
    title: str | None
    similarity: float


class ItemIndex:
    """A saved index loaded for lookups: `ItemIndex.load(lake).similar(item_id, k)`."""

    def __init__(self, index: faiss.Index, titles: dict[int, str | None], meta: dict):
        self.index, self.titles, self.meta = index, titles, meta

    @classmethod
    def load(cls, lake: Lake, version: str | None = None) -> ItemIndex:
        """The index of the fused `version` (default: the one `latest.json` points at)."""
        fs, root = filesystem(lake.root)
        base = f"{root}/{FOLDER}"
        if version is None:
            pointer = read_bytes(f"{lake.root}/{FOLDER}/latest.json")
            if pointer is None:
                raise LookupError(f"no item index under {lake.root}: run the embedding job first (dmf embed)")
            slug = json.loads(pointer)["slug"]
        else:
            slug = version_slug(version)
        with tempfile.TemporaryDirectory() as tmp:
            try:
                for name in ("index.faiss", "items.parquet", "meta.json"):
                    pafs.copy_files(f"{base}/{slug}/{name}", f"{tmp}/{name}", source_filesystem=fs)
            except FileNotFoundError:
                raise LookupError(f"no item index of {version} under {lake.root}: `dmf embed` or `dmf align` builds it") from None
            index = faiss.read_index(f"{tmp}/index.faiss")
            items = pq.read_table(f"{tmp}/items.parquet").to_pydict()
            meta = json.loads(Path(f"{tmp}/meta.json").read_text())
        return cls(_on_gpu(index), dict(zip(items["item_id"], items["title"])), meta)

    def similar(self, item_id: int, k: int = 10) -> list[Neighbour]:
        if item_id not in self.titles:
            raise KeyError(f"item {item_id} has no fused vector in this index ({self.meta['version']})")
        query = self._vector(item_id)[None, :]
        scores, found = self.index.search(query, k + 1)
        return [
            Neighbour(int(i), self.titles.get(int(i)), float(s)) for s, i in zip(scores[0], found[0]) if i != item_id and i >= 0
        ][:k]

    def _vector(self, item_id: int) -> np.ndarray:
        cpu = faiss.index_gpu_to_cpu(self.index) if hasattr(faiss, "index_gpu_to_cpu") and faiss.get_num_gpus() else self.index
        return cpu.reconstruct(int(item_id)).astype(np.float32)
