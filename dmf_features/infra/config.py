"""Typed, validated configuration loaded from YAML, with `--set key.path=value` overrides.

Relative paths in a config file are resolved against its `root`, which is itself relative to the
folder holding the file (`conf/local.yaml` says `root: ..`, so paths there are relative to the
project folder). Every error names the file and the dotted key, and says what to fix.
"""

from __future__ import annotations

import datetime as dt
import difflib
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from dmf_features.embedding.encoders.registry import ENCODER_KINDS, encoder_kind, kinds_for
from dmf_features.schemas import CONTENT_MODALITIES, MODALITIES, Modality
from models.protocol import EvaluationConfig


class ConfigError(ValueError):
    """A configuration file (or an override) is wrong; the message says where and how to fix it."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class GpuConfig(_Section):
    """GPU resources for a cluster master (YARN, Kubernetes, standalone). Never for `local[*]`."""

    executor_amount: int = Field(1, ge=1, description="spark.executor.resource.gpu.amount")
    task_amount: float = Field(1.0, gt=0, description="spark.task.resource.gpu.amount")
    discovery_script: str | None = Field(None, description="spark.executor.resource.gpu.discoveryScript (standalone and YARN)")


class SparkConfig(_Section):
    master: str = "local[*]"
    app_name: str = "dmf-features"
    driver_memory: str = "6g"
    shuffle_partitions: int = Field(8, ge=1)
    python: str | None = Field(None, description="Python for Spark workers; default: the interpreter running the job")
    gpu: GpuConfig | None = None
    short_jobs: bool = Field(
        False,
        description="the driver JVM tuned for jobs of seconds (a daily run of a small day, tests): only the quick "
        "JIT compiler and the serial collector, which cost less CPU at start-up than they lose in speed; off for large builds",
    )
    conf: dict[str, str] = Field(default_factory=dict, description="any other spark.* settings")

    @property
    def is_local(self) -> bool:
        return self.master.startswith("local")

    @model_validator(mode="after")
    def _no_gpu_in_local_mode(self) -> SparkConfig:
        if self.gpu is not None and self.is_local:
            raise ValueError(
                "gpu: GPU resource settings need a cluster master (yarn, k8s://..., spark://...); "
                f"Spark hangs on GPU requests with master {self.master!r}. Remove spark.gpu for local runs."
            )
        return self


class LakeConfig(_Section):
    uri: str = Field(description="folder or object-store URI (s3://, gs://, abfss://) holding the Delta tables")
    storage_options: dict[str, str] = Field(default_factory=dict)
    commit_retries: int = Field(8, ge=0, description="retries, with backoff, when another writer commits first")


class MlflowConfig(_Section):
    tracking_uri: str = "sqlite:///mlflow.db"
    experiment: str = "dmf-features"


class MovielensSourceConfig(_Section):
    path: Path = Field(description="folder with ratings.csv and movies.csv")
    posters: Path | None = Field(None, description="folder of <movieId>.jpg posters (optional)")
    tags: bool = Field(True, description="read tags.csv when present")


class SyntheticSourceConfig(_Section):
    """Scale knobs of the seeded generator; it writes MovieLens-format files to `output`."""

    output: Path
    seed: int = 7
    users: int = Field(2_000, ge=1)
    items: int = Field(1_000, ge=1)
    events: int = Field(100_000, ge=1)
    days: int = Field(60, ge=1)
    start_date: dt.date = dt.date(2024, 1, 1)
    topics: int = Field(8, ge=2)
    cold_start_fraction: float = Field(0.1, ge=0, lt=1)
    image_size: int = Field(96, ge=16)
    bad_row_fraction: float = Field(0.001, ge=0, lt=1, description="rows made invalid on purpose")


class SourceConfig(_Section):
    kind: Literal["movielens", "synthetic"] = "movielens"
    movielens: MovielensSourceConfig | None = None
    synthetic: SyntheticSourceConfig | None = None

    @model_validator(mode="after")
    def _chosen_source_present(self) -> SourceConfig:
        if getattr(self, self.kind) is None:
            raise ValueError(f"kind is {self.kind!r} but the section source.{self.kind} is missing")
        return self


class IngestConfig(_Section):
    click_threshold: float = Field(4.0, description="an event is a click when rating >= this")
    rating_min: float = 0.5
    rating_max: float = 5.0
    min_event_time: dt.datetime = dt.datetime(1995, 1, 1, tzinfo=dt.UTC)
    max_event_time: dt.datetime | None = Field(None, description="default: the time the job runs")
    max_image_bytes: int = Field(20_000_000, ge=1, description="larger poster files are not read")
    strict: bool = Field(False, description="fail instead of quarantining bad rows")
    max_quarantined_share: float = Field(
        0.05, ge=0, le=1, description="fail, writing nothing, when more of an input's records than this would be quarantined"
    )
    share_min_records: int = Field(
        20, ge=1, description="smaller inputs are not held to max_quarantined_share (one bad line of 5 is 20%)"
    )
    max_record_chars: int = Field(65_536, ge=64, description="a longer CSV record is quarantined as too_long, not parsed")
    max_record_lines: int = Field(50, ge=2, description="a quoted field may span at most this many lines")

    @model_validator(mode="after")
    def _ranges_ordered(self) -> IngestConfig:
        if self.rating_min > self.rating_max:
            raise ValueError("rating_min must not exceed rating_max")
        return self


class EncoderConfig(_Section):
    """One pretrained encoder, a kind of `dmf_features/embedding/encoders/registry.py`; `path` a local
    model folder or a Hugging Face id (already in the local cache) where the kind ships no weights."""

    kind: str = Field(description="an encoder kind: " + ", ".join(ENCODER_KINDS))
    path: str | None = Field(None, description="model folder or Hugging Face id; default: the shipped weights")
    max_tokens: int = Field(128, ge=8, description="text encoders truncate longer titles")

    @model_validator(mode="after")
    def _known_kind(self) -> EncoderConfig:
        if encoder_kind(self.kind).needs_path and not self.path:
            raise ValueError(f"{self.kind} needs a path: a model folder or a Hugging Face id")
        return self


class EmbeddingConfig(_Section):
    text: EncoderConfig | None = EncoderConfig(kind="minilm")
    image: EncoderConfig | None = EncoderConfig(kind="efficientnet-lite0")
    fusion: Literal["concat", "mean"] = Field(
        "concat", description="fused vector: normalised concatenation, or the mean (same-space encoders such as CLIP)"
    )
    batch_size: int = Field(32, ge=1, description="inputs per forward pass")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto: CUDA when a GPU is visible")
    items_per_task: int = Field(
        256, ge=1, description="work per Spark task, in posters (a title counts as 0.1): smaller gives finer progress"
    )
    max_image_pixels: int = Field(40_000_000, ge=1, description="larger images are refused as decompression bombs")

    @model_validator(mode="after")
    def _encoders_fit_their_modality(self) -> EmbeddingConfig:
        if self.text is None and self.image is None:
            raise ValueError("configure at least one of embedding.text and embedding.image")
        for modality in CONTENT_MODALITIES:
            encoder, kinds = getattr(self, modality), kinds_for(modality)
            if encoder is not None and encoder.kind not in kinds:
                raise ValueError(f"{modality}: {encoder.kind!r} is not a {modality} encoder (use one of {kinds})")
        return self


class BehaviourConfig(_Section):
    """Which events make up a user's behaviour history (every event is a sample either way)."""

    label: int | None = Field(1, description="only events with this label (1: clicks); null: any label")
    event_types: list[str] | None = Field(None, description="only these event types; null: any type")


class SplitConfig(_Section):
    """`temporal`: train before valid_from, valid before test_from, test after. `leave_last_out`: each
    user's last event is test, the one before it valid, the rest train (needs a full build)."""

    method: Literal["temporal", "leave_last_out"] = "temporal"
    valid_from: dt.date | None = None
    test_from: dt.date | None = None

    @model_validator(mode="after")
    def _cutoffs_fit_method(self) -> SplitConfig:
        if self.method == "temporal":
            if self.valid_from is None or self.test_from is None:
                raise ValueError("the temporal split needs valid_from and test_from dates (YYYY-MM-DD)")
            if self.valid_from > self.test_from:
                raise ValueError(f"valid_from {self.valid_from} is after test_from {self.test_from}")
        elif self.valid_from is not None or self.test_from is not None:
            raise ValueError("valid_from / test_from belong to the temporal split; remove them for leave_last_out")
        return self

    def rule(self) -> str:
        if self.method == "temporal":
            return f"temporal(valid_from={self.valid_from},test_from={self.test_from})"
        return "leave_last_out"


class NegativesConfig(_Section):
    """Negative sampling for implicit feedback: `ratio` random items per positive sample, items that
    had already appeared in `events` before the sample's time; seeded and repeatable."""

    ratio: int = Field(0, ge=0, description="negatives per positive; 0 turns sampling off (explicit labels)")
    seed: int = 13


class FeaturesConfig(_Section):
    behaviour: BehaviourConfig = BehaviourConfig()
    history_length: int = Field(50, ge=1, description="L: short-history positions per sample")
    long_history_length: int = Field(500, ge=1, description="L_long: history used for hist and top-k")
    buckets: int = Field(10, ge=2, description="B: similarity buckets per modality")
    bucket_edges: Literal["observed_range", "quantile", "equal_width"] = Field(
        "observed_range",
        description="observed_range: equal widths over the range where 99.8% of random item "
        "pairs' similarities lie; quantile: an equal share of those pairs per bucket; "
        "equal_width: [-1, 1] split evenly",
    )
    top_k: int = Field(10, ge=1, description="K: most similar long-history items kept per sample")
    split: SplitConfig = SplitConfig(method="leave_last_out")
    negatives: NegativesConfig = NegativesConfig()
    sequence_vectors: list[Modality] = Field(
        default_factory=lambda: list(MODALITIES),
        description="modalities whose vectors user_sequences stores beside the history ids",
    )
    encoder_versions: dict[Modality, str] | None = Field(
        None,
        description="item_embeddings versions to read per modality (a modality left out is masked); "
        "default: the versions the configured encoders produce",
    )
    item_vectors: Literal["frozen", "aligned"] = Field(
        "frozen",
        description="frozen: the configured encoders' vectors; aligned: those `dmf align` learned from behaviour "
        "(its latest run, for each modality it aligned) in place of the frozen ones",
    )
    batch_rows: int = Field(4096, ge=64, description="rows per Arrow batch in the feature UDF (bounds memory)")

    @model_validator(mode="after")
    def _lengths_nest(self) -> FeaturesConfig:
        if self.history_length > self.long_history_length:
            raise ValueError(
                f"history_length ({self.history_length}) must not exceed long_history_length "
                f"({self.long_history_length}): the short history is the start of the long one"
            )
        if self.top_k > self.long_history_length:
            raise ValueError(f"top_k ({self.top_k}) must not exceed long_history_length ({self.long_history_length})")
        return self


class AlignmentConfig(_Section):
    """`alignment:` MIM's content-interest fine-tuning (C-SFT): a projection head per modality over the frozen
    vectors, trained with InfoNCE on pairs of items a user clicked close together, before the cut-off only."""

    enabled: bool = Field(
        False, description="`dmf run` aligns after embedding (features read them with features.item_vectors: aligned)"
    )
    modalities: list[Modality] = Field(default_factory=lambda: list(MODALITIES), description="a head per modality")
    train_until: dt.date | None = Field(
        None,
        description="use behaviour before this day only; default: the evaluation protocol's first validation "
        "boundary, so no valid or test event of any fold is ever seen",
    )
    pair_window: int = Field(5, ge=1, description="a click pairs with each of the user's next this many clicks")
    max_gap_days: float = Field(30.0, gt=0, description="... that follow it within this many days")
    max_pairs: int = Field(2_000_000, ge=100, description="a seeded sample of pairs beyond this many")
    heldout_fraction: float = Field(0.1, ge=0, lt=0.5, description="newest share of pairs kept out to pick the epoch")
    dim: int = Field(128, ge=8, description="width of the aligned vectors")
    hidden: int = Field(512, ge=8, description="hidden width of the head's MLP")
    temperature: float = Field(0.1, gt=0, description="InfoNCE temperature")
    sampled_negatives: int = Field(1024, ge=0, description="uniformly drawn catalogue items per batch, beside in-batch ones")
    batch_size: int = Field(1024, ge=8)
    epochs: int = Field(8, ge=1)
    learning_rate: float = Field(1e-3, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    seed: int = 0
    text_encoder_layers: int = Field(
        0,
        ge=0,
        le=12,
        description="0: a head over the frozen text vectors; n: fine-tune the text encoder's last n layers instead "
        "(a TransformersTextEncoder kind such as minilm) and write its vectors as the aligned text version",
    )
    text_encoder_pairs: int = Field(20_000, ge=100, description="the newest training pairs the encoder is tuned on")
    text_encoder_epochs: int = Field(1, ge=1)
    text_encoder_batch_size: int = Field(128, ge=8, description="pairs per step (each title through the encoder)")
    text_encoder_learning_rate: float = Field(2e-5, gt=0)
    text_encoder_max_tokens: int = Field(32, ge=8, description="titles are truncated here while tuning and encoding")


class QualityConfig(_Section):
    tables: list[str] = Field(default_factory=lambda: ["items", "events"], description="tables the gate checks")
    results_dir: Path = Field(Path("reports/validation"), description="JSON results, one file per run")


class PromotionConfig(_Section):
    """The gate a trained model passes before it becomes the registered model's champion (training DAG, `dmf promote`)."""

    model: str = Field("dmf", description="the conf/train spec that is trained and gated (also its registered model name)")
    alias: str = Field("champion", description="the registered model alias that serving and `dmf recommend` follow")
    min_auc_gain: float = Field(0.0, ge=0, description="the candidate's AUC must exceed the champion's by more than this")
    min_rows: int = Field(1000, ge=1, description="fewest rows unseen by both models that a comparison needs")


class Config(_Section):
    root: Path = Field(Path("."), description="base for relative paths, relative to this file's folder")
    spark: SparkConfig = SparkConfig()
    lake: LakeConfig
    mlflow: MlflowConfig = MlflowConfig()
    source: SourceConfig
    ingest: IngestConfig = IngestConfig()
    embedding: EmbeddingConfig = EmbeddingConfig()
    features: FeaturesConfig = FeaturesConfig()
    alignment: AlignmentConfig = AlignmentConfig()
    quality: QualityConfig = QualityConfig()
    evaluation: EvaluationConfig = EvaluationConfig()
    promotion: PromotionConfig = PromotionConfig()
    source_file: Path | None = Field(None, exclude=True)


# ---------------------------------------------------------------------------------------- loading

_INPUT_PATHS = ("source.movielens.path", "source.movielens.posters")
_RELATIVE_PATHS = (
    "lake.uri",
    "source.movielens.path",
    "source.movielens.posters",
    "source.synthetic.output",
    "quality.results_dir",
)


def load_config(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Load `path`, apply `key.path=value` overrides, resolve relative paths and validate."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from e
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections")
    for item in overrides:
        _apply_override(raw, item, path)
    root = (path.parent / raw.get("root", ".")).resolve()
    raw["root"] = str(root)
    for key in _RELATIVE_PATHS:
        _resolve_relative(raw, key, root)
    try:
        cfg = Config.model_validate(raw)
    except ValidationError as e:
        raise ConfigError(_explain(e, path)) from None
    for key in _INPUT_PATHS:
        value = _get(raw, key)
        if value is not None and not Path(value).exists():
            raise ConfigError(f"{path}: {key}: {value} does not exist; point it at the data folder")
    return cfg.model_copy(update={"source_file": path})


def _apply_override(raw: dict, item: str, path: Path) -> None:
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected KEY.PATH=VALUE, e.g. --set spark.master=local[1]")
    key, value = item.split("=", 1)
    node = raw
    parts = key.strip().split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"{path}: --set {key}: {part} is not a section")
    node[parts[-1]] = yaml.safe_load(value) if value else None


def _get(raw: dict, dotted: str) -> Any:
    node: Any = raw
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _resolve_relative(raw: dict, dotted: str, root: Path) -> None:
    value = _get(raw, dotted)
    if not isinstance(value, str) or "://" in value or Path(value).is_absolute():
        return
    *parents, last = dotted.split(".")
    node = raw
    for part in parents:
        node = node[part]
    node[last] = str((root / value).resolve())


def _explain(error: ValidationError, path: Path) -> str:
    lines = [f"{path}: {error.error_count()} problem(s) in the configuration:"]
    for err in error.errors():
        key = ".".join(str(p) for p in err["loc"])
        if err["type"] == "extra_forbidden":
            *parent, name = [str(p) for p in err["loc"]]
            known = _known_keys(parent)
            hint = difflib.get_close_matches(name, known, n=1)
            suggestion = f" (did you mean '{hint[0]}'?)" if hint else f" (known keys: {', '.join(sorted(known))})"
            lines.append(f"  {key}: unknown key{suggestion}")
        elif err["type"] == "missing":
            lines.append(f"  {key}: required key is missing")
        elif err["type"] == "value_error":
            lines.append(f"  {key}: {err['msg'].removeprefix('Value error, ')}")
        else:
            lines.append(f"  {key}: {err['msg']} (got {err.get('input')!r})")
    return "\n".join(lines)


def _known_keys(parent: list[str]) -> list[str]:
    model: type[BaseModel] = Config
    for part in parent:
        field = model.model_fields.get(part)
        annotation = getattr(field, "annotation", None)
        candidates = [a for a in getattr(annotation, "__args__", (annotation,)) if isinstance(a, type)]
        sub = next((a for a in candidates if issubclass(a, BaseModel)), None)
        if sub is None:
            return []
        model = sub
    return [k for k in model.model_fields if k != "source_file"]
