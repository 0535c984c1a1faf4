"""Which encoder versions a config produces: the embedding stage writes them, and the feature stage
reads the vectors of exactly these versions. No Spark and no torch: versions and widths are read from
the encoders' files (`encoders/identity.py`), never by loading a model."""

from __future__ import annotations

from dataclasses import dataclass

from dmf_features.alignment.manifest import aligned_versions
from dmf_features.embedding.encoders.registry import EncoderSpec, encoder_kind
from dmf_features.infra.config import Config, EmbeddingConfig, EncoderConfig
from dmf_features.schemas import CONTENT_MODALITIES, FUSED


@dataclass(frozen=True)
class Plan:
    """One modality's encoder as the job uses it: what it is called, its version and width."""

    modality: str
    spec: EncoderSpec
    encoder: str
    version: str
    dim: int


def plans(cfg: EmbeddingConfig) -> list[Plan]:
    """Each configured encoder's spec, version and width, read from its files."""
    result = []
    for modality in CONTENT_MODALITIES:
        encoder_cfg: EncoderConfig | None = getattr(cfg, modality)
        if encoder_cfg is None:
            continue
        spec = EncoderSpec(
            kind=encoder_cfg.kind, path=encoder_cfg.path, max_tokens=encoder_cfg.max_tokens, batch_size=cfg.batch_size
        )
        identity = encoder_kind(spec.kind).identify(spec.path)
        result.append(Plan(modality, spec, identity.name, identity.version, identity.dim))
    if cfg.fusion == "mean" and len({p.dim for p in result}) > 1:
        raise ValueError(f"embedding.fusion 'mean' needs encoders of one width, got {[p.dim for p in result]}")
    return result


def fused_version(cfg: EmbeddingConfig, plan_list: list[Plan]) -> str:
    parts = "+".join(p.version for p in plan_list)
    return f"{cfg.fusion}({parts})"


def encoder_versions(cfg: EmbeddingConfig) -> dict[str, str]:
    """The item_embeddings version of each modality (fused included) the configured encoders produce."""
    plan_list = plans(cfg)
    return {**{p.modality: p.version for p in plan_list}, FUSED: fused_version(cfg, plan_list)}


def frozen_versions(cfg: Config) -> dict[str, str]:
    """The versions features read unless aligned ones are asked for: `features.encoder_versions` when set,
    else those the configured encoders produce (and what `dmf align` aligns)."""
    return dict(cfg.features.encoder_versions or encoder_versions(cfg.embedding))


def item_vector_versions(cfg: Config, lake_root: str, item_vectors: str | None = None) -> dict[str, str]:
    """The item_embeddings version each modality's features are computed from: the frozen ones, or for
    `item_vectors` (default: `features.item_vectors`) `aligned` the latest `dmf align` run's, for the
    modalities it aligned. LookupError when aligned vectors are asked for and there are none."""
    versions = frozen_versions(cfg)
    if (item_vectors or cfg.features.item_vectors) == "aligned":
        versions |= {m: v for m, v in aligned_versions(lake_root).items() if m in versions}
    return versions
