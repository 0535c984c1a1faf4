"""Layer blocks every CTR model here is assembled from, and the config that sizes them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import nn

from dmf_features.schemas import MODALITIES, Modality
from models.batch import CTRBatch


class ArchitectureSpec(BaseModel):
    """A spec file's `architecture` (`conf/train/*.yaml`): switches and widths, the same for any data set."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    modalities: tuple[Modality, ...] = Field(MODALITIES, description="whose similarity buckets / histograms feed the model")
    embedding_dim: int = Field(32, ge=1)
    attention_dim: int = Field(32, ge=1)
    mlp: tuple[int, ...] = (128, 64)
    dropout: float = Field(0.0, ge=0, lt=1)
    fusion: Literal["weighted_sum", "concat", "gate"] = Field("gate", description="Complementary Modality Modeling")
    use_buckets: bool = Field(True, description="DMF ablation: False drops P_K / P_V")
    use_modality_path: bool = Field(True, description="DMF ablation: False drops the histogram path")
    context: bool = Field(False, description="take the user's and item's point-in-time statistics (models.prior_stats)")
    target_content: bool = Field(False, description="DMF: the target's projected content vector joins its ID embedding")
    top_similarities: bool = Field(
        False,
        description="the modality-centric path also reads each modality's count of similarities and its top-K (the samples' K)",
    )


class ModelConfig(ArchitectureSpec):
    """An architecture sized for its data: all a model class is built from, so a logged model is its
    weights and this config's JSON (`models.tracking`). The sizes agree with the switches."""

    vocab_size: int = Field(ge=1, description="item-id vocabulary, index 0 = padding / unknown")
    vector_dim: int = Field(0, ge=0, description="width of the multimodal item vectors in batches (0: the model uses none)")
    buckets: int = Field(10, ge=1)
    context_features: int = Field(0, ge=0, description="width of `CTRBatch.context`: nonzero exactly with `context`")
    top_k: int = Field(
        0,
        ge=0,
        description="K of `CTRBatch.sim_top` the modality-centric path reads (0: histograms "
        "only); nonzero only with `top_similarities`",
    )

    @model_validator(mode="after")
    def _sizes_follow_switches(self) -> ModelConfig:
        if bool(self.context_features) != self.context or (self.top_k and not self.top_similarities):
            raise ValueError(
                f"the sizes contradict the switches: context {self.context} with context_features "
                f"{self.context_features}, top_similarities {self.top_similarities} with top_k {self.top_k}"
            )
        return self


class MLP(nn.Sequential):
    def __init__(self, inputs: int, hidden: Sequence[int], outputs: int | None = None, dropout: float = 0.0):
        layers: list[nn.Module] = []
        for width in hidden:
            layers += [nn.Linear(inputs, width), nn.ReLU()]
            if dropout:
                layers.append(nn.Dropout(dropout))
            inputs = width
        if outputs is not None:
            layers.append(nn.Linear(inputs, outputs))
        super().__init__(*layers)


def masked_attention(scores: torch.Tensor, values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """sum_j softmax(scores)_j values_j over the positions where `mask` is true; zeros for an empty
    history. scores [..., L], values [..., L, d], mask [..., L] -> [..., d]."""
    scores = scores.masked_fill(~mask, float("-inf"))
    weights = torch.softmax(scores, dim=-1).nan_to_num(0.0)  # an all-masked row gives NaNs: no history
    return (weights.unsqueeze(-1) * values).sum(dim=-2)


class DinAttention(nn.Module):
    """DIN's activation unit: an MLP scores each history item against the target from
    [target, item, target - item, target * item]; a softmax over the real positions pools them.
    (The paper's un-normalised weighted sum grows with the history's length, so a shift in history
    lengths between training and test moves every interest vector out of the range it was trained on.)"""

    def __init__(self, dim: int, hidden: Sequence[int] = (64, 32)):
        super().__init__()
        self.score = MLP(4 * dim, hidden, 1)

    def forward(self, target: torch.Tensor, history: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        query = target.unsqueeze(1).expand_as(history)
        scores = self.score(torch.cat([query, history, query - history, query * history], dim=-1)).squeeze(-1)
        return masked_attention(scores, history, mask)


class SimilarityHistograms(nn.Module):
    """The modality-centric interest: an MLP over the similarity histograms of the configured
    modalities (with `top_k`, also each one's count and K largest similarities) and the target's
    multimodal vector. Its first layer is split in two sums, because the
    target vector's term depends on the item alone: a scorer computes `item_term` once per item and
    reuses it across requests instead of multiplying a 1,664-d vector per candidate per request."""

    def __init__(self, cfg: ModelConfig, outputs: int, with_context: bool = False):
        super().__init__()
        self.modalities = cfg.modalities
        first = cfg.mlp[0] if cfg.mlp else outputs
        self.top_k = cfg.top_k
        self.from_histograms = nn.Linear(len(cfg.modalities) * (cfg.buckets + (1 + cfg.top_k if cfg.top_k else 0)), first)
        self.from_vector = nn.Linear(cfg.vector_dim, first, bias=False) if cfg.vector_dim else None
        self.from_context = nn.Linear(cfg.context_features, first, bias=False) if with_context and cfg.context_features else None
        rest: list[nn.Module] = (
            [nn.ReLU(), *([nn.Dropout(cfg.dropout)] if cfg.dropout else []), MLP(first, cfg.mlp[1:], outputs, cfg.dropout)]
            if cfg.mlp
            else []
        )
        self.rest = nn.Sequential(*rest)

    def item_term(self, target_vectors: torch.Tensor | None) -> torch.Tensor | float:
        """[n, first layer]: the target vectors' share of the first layer (no bias)."""
        return 0.0 if self.from_vector is None else self.from_vector(target_vectors)

    def forward(self, batch: CTRBatch, item_term: torch.Tensor | None = None) -> torch.Tensor:
        histograms = torch.cat(
            [batch.sim_hist[m] for m in self.modalities]
            + ([batch.sim_top[m][:, : 1 + self.top_k] for m in self.modalities] if self.top_k else []),
            dim=-1,
        )
        if item_term is None:
            item_term = self.item_term(batch.target_vectors)
        first = self.from_histograms(histograms) + item_term
        if self.from_context is not None:
            first = first + self.from_context(batch.context)
        return self.rest(first)


def with_context(inputs: list[torch.Tensor], batch: CTRBatch, cfg: ModelConfig) -> torch.Tensor:
    """The head's inputs, with the batch's context features when the model takes them."""
    return torch.cat([*inputs, batch.context] if cfg.context_features else inputs, dim=-1)


class BucketEmbeddings(nn.Module):
    """P[bucket] summed over modalities; a masked position (-1: no similarity) has its own learned
    row per modality, never the embedding of a real bucket."""

    def __init__(self, modalities: Sequence[str], buckets: int, dim: int):
        super().__init__()
        self.buckets = buckets
        self.tables = nn.ModuleDict({m: nn.Embedding(buckets + 1, dim) for m in modalities})

    def forward(self, buckets: dict[str, torch.Tensor]) -> torch.Tensor:
        total = None
        for modality, table in self.tables.items():
            index = buckets[modality].masked_fill(buckets[modality] < 0, self.buckets)
            looked_up = table(index)
            total = looked_up if total is None else total + looked_up
        return total
