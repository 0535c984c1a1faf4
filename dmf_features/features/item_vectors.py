"""Item vectors of one encoder version per modality, as dense numpy matrices for the feature UDFs.

Loaded once on the driver from `item_embeddings` and broadcast: the feature job looks vectors up by
item id instead of joining them onto every history position (a history of L items would otherwise
copy L vectors into each sample).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from dmf_features.features.kernels.vectors import ModalityVectors
from dmf_features.infra.lake import Lake
from dmf_features.schemas import ITEM_EMBEDDINGS


def load_item_vectors(
    spark: SparkSession, lake: Lake, versions: dict[str, str], table_version: int | None = None
) -> dict[str, ModalityVectors]:
    """{modality: vectors of that encoder version} from item_embeddings at `table_version` (default:
    the latest); a version with no rows is an error."""
    read = read_versions(spark, lake, versions, table_version)
    return {modality: ModalityVectors(versions[modality], ids, matrix) for modality, (ids, matrix, _) in read.items()}


def read_version(
    spark: SparkSession, lake: Lake, modality: str, version: str, table_version: int | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One encoder version's item ids (sorted), vectors [n, D] and input hashes, in that order, from
    item_embeddings at `table_version`; a version with no rows is an error."""
    return read_versions(spark, lake, {modality: version}, table_version)[modality]


def read_versions(
    spark: SparkSession, lake: Lake, versions: dict[str, str], table_version: int | None = None
) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """`read_version` of each {modality: version} in one Spark job: a job costs seconds in a JVM that has
    just started, more than the few vectors of a daily run take to read."""
    table = lake.read(spark, ITEM_EMBEDDINGS.name, version=table_version, partition_filters=[("modality", "in", list(versions))])
    wanted = F.lit(False)
    for modality, version in versions.items():
        wanted = wanted | ((F.col("modality") == modality) & (F.col("encoder_version") == version))
    arrow = table.where(wanted).select("modality", "item_id", "vector", "input_hash").toArrow()
    return {m: _arrays(arrow.filter(pc.equal(arrow.column("modality"), m)), m, v) for m, v in versions.items()}


def _arrays(arrow: pa.Table, modality: str, version: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if arrow.num_rows == 0:
        raise LookupError(f"item_embeddings has no {modality} vectors of {version}: run `dmf embed` with this config first")
    ids = arrow.column("item_id").to_numpy()
    flat = arrow.column("vector").combine_chunks().flatten().to_numpy(zero_copy_only=False)
    matrix = np.asarray(flat, np.float32).reshape(len(ids), -1)
    order = np.argsort(ids, kind="stable")
    hashes = np.asarray(arrow.column("input_hash").to_pylist(), object)
    return ids[order].astype(np.int64), np.ascontiguousarray(matrix[order]), hashes[order]
