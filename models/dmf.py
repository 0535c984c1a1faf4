"""DMF (arXiv 2510.11066): Decoupled Target Attention + the modality-centric path, combined by
Complementary Modality Modeling; and its early-fusion counterpart, the paper's serving baseline.

Decoupled Target Attention: keys and values of history item j are `W_K e_j + P_K[bucket_j]` and
`W_V e_j + P_V[bucket_j]` (summed over the modalities' bucket tables), the query `W_Q e_t`. The
projections of the history do not depend on the target, so a scorer computes them once per user
and adds only bucket-embedding lookups per candidate (`models/serving.py`). The early-fusion
variant feeds [e_j, similarities of j] to the projections instead, so they depend on the target
and must be recomputed for every candidate.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from models.batch import CTRBatch
from models.layers import (
    MLP,
    BucketEmbeddings,
    ModelConfig,
    SimilarityHistograms,
    masked_attention,
    with_context,
)


class DMF(nn.Module):
    needs_hist_vectors = False

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        d, a = cfg.embedding_dim, cfg.attention_dim
        self.items = nn.Embedding(cfg.vocab_size, d)
        # the target's own content: a cold item is scored by what it is, not by the shared rare-item ID
        self.target_content = nn.Linear(cfg.vector_dim, d, bias=False) if cfg.target_content and cfg.vector_dim else None
        self.query = nn.Linear(d, a, bias=False)
        self.key = nn.Linear(self._key_inputs(), a, bias=False)
        self.value = nn.Linear(self._key_inputs(), a, bias=False)
        self.bucket_keys = BucketEmbeddings(cfg.modalities, cfg.buckets, a) if self._uses_bucket_tables() else None
        self.bucket_values = BucketEmbeddings(cfg.modalities, cfg.buckets, a) if self._uses_bucket_tables() else None
        self.modality_path = SimilarityHistograms(cfg, a) if cfg.use_modality_path else None
        if self.modality_path is not None and cfg.fusion == "gate":
            self.gate = nn.Linear(2 * a + d, a)
        if self.modality_path is not None and cfg.fusion == "weighted_sum":
            self.mix = nn.Parameter(torch.zeros(2))
        both = self.modality_path is not None and cfg.fusion == "concat"
        self.head = MLP(d + (2 * a if both else a) + cfg.context_features, cfg.mlp, 1, cfg.dropout)

    # ------------------------------------------------------------------ parts the scorer reuses
    def _key_inputs(self) -> int:
        return self.cfg.embedding_dim

    def _uses_bucket_tables(self) -> bool:
        return self.cfg.use_buckets

    def target(self, ids: torch.Tensor, vectors: torch.Tensor | None) -> torch.Tensor:
        """e_t: the target's ID embedding, plus its projected content vector with `target_content`."""
        embedded = self.items(ids)
        return embedded if self.target_content is None else embedded + self.target_content(vectors)

    def history_projections(self, hist_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """W_K e_j and W_V e_j: target-agnostic, computed once per user by the decoupled scorer."""
        embedded = self.items(hist_ids)
        return self.key(embedded), self.value(embedded)

    def keys_values(
        self, hist_ids: torch.Tensor, buckets: dict[str, torch.Tensor], sims: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        keys, values = self.history_projections(hist_ids)
        if self.bucket_keys is not None:
            keys = keys + self.bucket_keys(buckets)
            values = values + self.bucket_values(buckets)
        return keys, values

    def attend(self, target: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        query = self.query(target).unsqueeze(-2)
        scores = (query * keys).sum(dim=-1) / math.sqrt(self.cfg.attention_dim)
        return masked_attention(scores, values, mask)

    def combine(
        self, target: torch.Tensor, id_interest: torch.Tensor, batch: CTRBatch, item_terms: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Complementary Modality Modeling: the ID interest with the modality-centric one
        (`item_terms`: the targets' precomputed `SimilarityHistograms.item_term`, if a scorer has them)."""
        if self.modality_path is None:
            return self.head(with_context([target, id_interest], batch, self.cfg))
        modality_interest = self.modality_path(batch, item_terms)
        if self.cfg.fusion == "concat":
            interest = torch.cat([id_interest, modality_interest], dim=-1)
        elif self.cfg.fusion == "weighted_sum":
            weights = torch.softmax(self.mix, dim=0)
            interest = weights[0] * id_interest + weights[1] * modality_interest
        else:
            gate = torch.sigmoid(self.gate(torch.cat([id_interest, modality_interest, target], dim=-1)))
            interest = gate * id_interest + (1 - gate) * modality_interest
        return self.head(with_context([target, interest], batch, self.cfg))

    def forward(self, batch: CTRBatch) -> torch.Tensor:
        """Logits [B]."""
        target = self.target(batch.target_ids, batch.target_vectors)
        keys, values = self.keys_values(batch.hist_ids, batch.buckets, batch.sims)
        interest = self.attend(target, keys, values, batch.hist_mask)
        return self.combine(target, interest, batch).squeeze(-1)


class DMFEarlyFusion(DMF):
    """The paper's baseline: each history item's similarities (and whether each exists) are
    concatenated to its ID embedding before the key/value projections."""

    def _key_inputs(self) -> int:
        return self.cfg.embedding_dim + 2 * len(self.cfg.modalities)

    def _uses_bucket_tables(self) -> bool:
        return False

    def keys_values(self, hist_ids, buckets, sims):
        inputs = torch.cat([self.items(hist_ids), similarity_inputs(buckets, sims, self.cfg.modalities)], dim=-1)
        return self.key(inputs), self.value(inputs)


def similarity_inputs(buckets: dict[str, torch.Tensor], sims: dict[str, torch.Tensor], modalities) -> torch.Tensor:
    """[..., L, 2 * modalities]: each modality's similarity (0 where masked) and a 0/1 'exists'."""
    parts = []
    for modality in modalities:
        exists = (buckets[modality] >= 0).to(sims[modality].dtype)
        parts += [sims[modality] * exists, exists]
    return torch.stack(parts, dim=-1)
