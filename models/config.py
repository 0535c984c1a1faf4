"""Model specs: `conf/train/<name>.yaml`, one per model or ablation, validated at load."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from models.din import DIN, DINMultimodal, ModalityCentric
from models.dmf import DMF, DMFEarlyFusion
from models.layers import ArchitectureSpec, ModelConfig
from models.prior_stats import CONTEXT_FEATURES

MODEL_CLASSES = {
    "din": DIN,
    "din_multimodal": DINMultimodal,
    "modality_centric": ModalityCentric,
    "dmf": DMF,
    "dmf_early_fusion": DMFEarlyFusion,
}
TRAIN_CONF = Path(__file__).resolve().parent.parent / "conf" / "train"


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TrainingSpec(_Spec):
    epochs: int = Field(10, ge=1)
    batch_size: int = Field(512, ge=1)
    learning_rate: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    patience: int = Field(2, ge=1, description="epochs without a better validation AUC before stopping")
    seeds: tuple[int, ...] = Field((0, 1, 2), min_length=1, description="`dmf compare` trains once per seed")


class ModelSpec(_Spec):
    name: str = Field(description="how runs and the registered model are named")
    kind: Literal["din", "din_multimodal", "modality_centric", "dmf", "dmf_early_fusion"]
    architecture: ArchitectureSpec = ArchitectureSpec()
    training: TrainingSpec = TrainingSpec()
    min_item_count: int = Field(1, ge=1, description="items with fewer training samples share the unknown item's embedding")
    cold_start_max_interactions: int = Field(
        5, ge=0, description="a test item with 1..this many training samples of its fold is rare (0: cold-start)"
    )

    def build(self, vocab_size: int, vector_dim: int, buckets: int, top_k: int = 0):
        """The model for a vocabulary, vector width and the samples' B and K."""
        cfg = ModelConfig(
            **self.architecture.model_dump(),
            vocab_size=vocab_size,
            vector_dim=vector_dim,
            buckets=buckets,
            context_features=len(CONTEXT_FEATURES) if self.architecture.context else 0,
            top_k=top_k if self.architecture.top_similarities else 0,
        )
        return MODEL_CLASSES[self.kind](cfg)


def load_model_spec(name_or_path: str | Path) -> ModelSpec:
    """`dmf` (conf/train/dmf.yaml) or a path to a spec file."""
    path = Path(name_or_path)
    if not path.suffix:
        path = TRAIN_CONF / f"{name_or_path}.yaml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in TRAIN_CONF.glob("*.yaml")))
        raise ValueError(f"no model spec {name_or_path!r} (known: {known})")
    try:
        return ModelSpec.model_validate(yaml.safe_load(path.read_text()) or {})
    except ValidationError as e:
        problems = "; ".join(f"{'.'.join(map(str, err['loc']))}: {err['msg']}" for err in e.errors())
        raise ValueError(f"{path}: {problems}") from None


def all_model_specs() -> list[ModelSpec]:
    return [load_model_spec(p) for p in sorted(TRAIN_CONF.glob("*.yaml"))]
