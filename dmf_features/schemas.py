"""The contract between the lake and the trainer, importable without pyspark.

One place for each table's columns (pyarrow; `dmf_features.infra.lake.spark_schema` converts them
for Spark), the modalities, the names of the feature columns in `samples`, the order of a history,
and the lineage record the feature stage writes into each commit and the trainer, the tracking code
and `dmf recommend` read back. The Spark stages and `models/` both import it; neither keeps a copy.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, get_args

import pyarrow as pa

_TYPES: dict[str, pa.DataType] = {
    "bigint": pa.int64(),
    "int": pa.int32(),
    "double": pa.float64(),
    "string": pa.string(),
    "binary": pa.binary(),
    "boolean": pa.bool_(),
    "date": pa.date32(),
    "timestamp": pa.timestamp("us", tz="UTC"),
    "float": pa.float32(),
}


def _type(kind: str) -> pa.DataType:
    kind = kind.lower()
    if kind.startswith("array<") and kind.endswith(">"):
        return pa.list_(_type(kind[len("array<") : -1]))
    return _TYPES[kind]


def _schema(columns: str) -> pa.Schema:
    """'name type, ...' in Spark SQL spelling; every column nullable, as Delta and Spark keep them."""
    return pa.schema(
        [pa.field(name, _type(kind), nullable=True) for name, kind in (column.split() for column in columns.split(","))]
    )


@dataclass(frozen=True)
class TableSpec:
    name: str
    schema: pa.Schema
    keys: tuple[str, ...]
    partition_by: tuple[str, ...] = ()

    @property
    def columns(self) -> tuple[str, ...]:
        return tuple(self.schema.names)


# ---------------------------------------------------------------------------------- modalities
ContentModality = Literal["text", "image"]  # what the encoders embed; `fused` is made from them
CONTENT_MODALITIES: tuple[ContentModality, ...] = get_args(ContentModality)
Modality = Literal["text", "image", "fused"]
MODALITIES: tuple[Modality, ...] = get_args(Modality)
FUSED: Modality = "fused"  # the items' multimodal vector: what models take for a target and its history


# ------------------------------------------------------------------------ feature columns of samples
# DMF's target-aware features, the same seven per modality, named `{modality}_{feature}`:
# sim/mask/bucket over the short history (L), hist/hist_count over the long one, topk_* its K best.
FEATURE_TYPES = {
    "sim": "array<float>",
    "mask": "array<boolean>",
    "bucket": "array<int>",
    "hist": "array<float>",
    "hist_count": "int",
    "topk_ids": "array<bigint>",
    "topk_sims": "array<float>",
}
Feature = Literal["sim", "mask", "bucket", "hist", "hist_count", "topk_ids", "topk_sims"]
FEATURES: tuple[Feature, ...] = get_args(Feature)
assert tuple(FEATURE_TYPES) == FEATURES


def feature_column(modality: str, feature: Feature) -> str:
    return f"{modality}_{feature}"


def vectors_column(modality: str) -> str:
    """`user_sequences`' column of the history items' vectors of one modality."""
    return f"{modality}_vectors"


# ----------------------------------------------------------------------------------- history order
# A history is newest first; events of the same time are ordered by item id, then event type, both
# descending. Spark windows, the numpy kernels' stream order (its reverse) and the reference all
# follow these columns.
HISTORY_ORDER = ("event_time", "item_id", "event_type")


# ------------------------------------------------------------------------------------------ tables
ITEMS = TableSpec(
    "items",
    _schema(
        "item_id BIGINT, title STRING, year INT, genres ARRAY<STRING>, tags ARRAY<STRING>, "
        "image BINARY, image_path STRING, image_status STRING, image_sha256 STRING, "
        "content_hash STRING, source STRING"
    ),
    keys=("item_id",),
)

EVENTS = TableSpec(
    "events",
    _schema(
        "user_id BIGINT, item_id BIGINT, event_time TIMESTAMP, event_type STRING, rating DOUBLE, "
        "label INT, source STRING, date DATE"
    ),
    keys=("user_id", "item_id", "event_time", "event_type"),
    partition_by=("date",),
)

QUARANTINE = TableSpec(
    "quarantine",
    _schema("record_id STRING, source STRING, reason STRING, detail STRING, raw STRING, target STRING"),
    keys=("record_id",),
    partition_by=("target",),
)

ITEM_EMBEDDINGS = TableSpec(
    "item_embeddings",
    _schema(
        "item_id bigint, modality string, encoder string, encoder_version string, input_hash string, "
        "dim int, vector array<float>, embedded_at timestamp"
    ),
    keys=("item_id", "modality", "encoder_version"),
    partition_by=("modality",),
)

VALIDATION_RESULTS = TableSpec(
    "validation_results",
    _schema(
        "run_id STRING, checked_at TIMESTAMP, table_name STRING, table_version BIGINT, suite STRING, "
        "expectation STRING, column_name STRING, success BOOLEAN, observed STRING, details STRING"
    ),
    keys=("run_id", "table_name", "expectation", "column_name"),
    partition_by=("table_name",),
)

SAMPLES = TableSpec(
    "samples",
    _schema(
        "sample_id string, user_id bigint, item_id bigint, event_time timestamp, event_type string, label int, "
        "is_negative boolean, split string, split_rule string, hist_len int, hist_item_ids array<bigint>, "
        "hist_times array<bigint>, long_len int, "
        + ", ".join(f"{feature_column(m, f)} {kind}" for m in MODALITIES for f, kind in FEATURE_TYPES.items())
        + ", date date"
    ),
    keys=("sample_id",),
    partition_by=("date",),
)

USER_SEQUENCES = TableSpec(
    "user_sequences",
    _schema(
        "user_id bigint, as_of timestamp, last_event_time timestamp, hist_len int, hist_item_ids array<bigint>, "
        "hist_event_times array<timestamp>, hist_event_types array<string>, long_hist_item_ids array<bigint>, "
        + ", ".join(f"{vectors_column(m)} array<array<float>>" for m in MODALITIES)
    ),
    keys=("user_id",),
)

# Two rows per stage run: `started` (the tables it will write) and, after its last commit, `complete`
# (the versions it produced and read, JSON objects of table -> version). Readers pin the versions of
# the last complete run (`dmf_features.infra.runs`).
RUNS = TableSpec(
    "runs",
    _schema("run_id string, stage string, status string, at timestamp, scope string, produced string, read string"),
    keys=("run_id", "status"),
)

# items.image_status: what ingest found for the item's image (the image column is null unless "ok"
# or "corrupt"; a corrupt file's bytes are kept so the embedding job can report exactly why)
IMAGE_STATUSES = ("ok", "missing", "empty", "corrupt", "too_large")


# ----------------------------------------------------------------------------------------- lineage
LINEAGE_KEY = "dmf.lineage"  # the commit metadata entry that holds it


FULL_SCOPE = "all dates"  # a feature build's scope when it covered every date


@dataclass(frozen=True)
class Lineage:
    """What a `samples` / `user_sequences` version was built from and with: input table versions,
    the encoder version of each modality's vectors, and the feature settings a server must repeat
    (L, B, K and each modality's bucket boundaries)."""

    events_version: int
    item_embeddings_version: int
    item_vectors: dict[str, str]  # modality -> encoder version
    scope: str  # the dates the build covered (FULL_SCOPE: a full build)
    features: dict[str, Any]  # the feature settings used (the config's `features` section as JSON)
    bucket_edges: dict[str, list[float]] = field(default_factory=dict)  # modality -> its B - 1 boundaries

    @property
    def history_length(self) -> int:
        return int(self.features["history_length"])

    @property
    def buckets(self) -> int:
        return int(self.features["buckets"])

    @property
    def top_k(self) -> int:
        return int(self.features["top_k"])

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, default=str)

    @classmethod
    def from_json(cls, text: str) -> Lineage:
        return cls(**json.loads(text))
