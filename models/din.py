"""DIN baselines: target attention over ID embeddings, and its multimodal early-fusion version in
which each item (target and history) is [ID embedding, projected multimodal vector]; plus the
modality-centric-only baseline (similarity histograms + target vector, no IDs)."""

from __future__ import annotations

import torch
from torch import nn

from models.batch import CTRBatch
from models.layers import (
    MLP,
    DinAttention,
    ModelConfig,
    SimilarityHistograms,
    with_context,
)


class DIN(nn.Module):
    """Without content, a history item too rare for its own ID (index 0, shared) says nothing about
    the user and is left out of the attention; with content it keeps its vector and stays in."""

    needs_hist_vectors = False

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        d = cfg.embedding_dim
        self.items = nn.Embedding(cfg.vocab_size, d)
        self.vectors = nn.Linear(cfg.vector_dim, d) if self.needs_hist_vectors else None
        width = 2 * d if self.vectors is not None else d
        self.attention = DinAttention(width)
        self.head = MLP(2 * width + cfg.context_features, cfg.mlp, 1, cfg.dropout)

    def represent(
        self,
        ids: torch.Tensor,
        vectors: torch.Tensor | None,
        rows: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """[ID embedding, projected vector]; `rows` picks each position's vector from `vectors`."""
        embedded = self.items(ids)
        if self.vectors is None:
            return embedded
        projected = self.vectors(vectors)
        return torch.cat([embedded, projected if rows is None else projected[rows]], dim=-1)

    def forward(self, batch: CTRBatch) -> torch.Tensor:
        target = self.represent(batch.target_ids, batch.target_vectors)
        history = self.represent(batch.hist_ids, batch.hist_vectors, batch.hist_vector_rows)
        mask = batch.hist_mask if self.vectors is not None else batch.hist_mask & (batch.hist_ids > 0)
        interest = self.attention(target, history, mask)
        return self.head(with_context([target, interest], batch, self.cfg)).squeeze(-1)


class DINMultimodal(DIN):
    needs_hist_vectors = True


class ModalityCentric(nn.Module):
    needs_hist_vectors = False

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg  # what a logged model records to build it again
        self.path = SimilarityHistograms(cfg, 1, with_context=True)

    def forward(self, batch: CTRBatch) -> torch.Tensor:
        return self.path(batch).squeeze(-1)
