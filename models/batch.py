"""`CTRBatch`: the contract between data loading, every model and the serving path.

One row per sample. History arrays are newest first and padded at the end; `hist_mask` says which
positions are real. Per modality m, `buckets[m]` holds the precomputed similarity bucket of each
history position (-1 where masked: padding, or an item without a vector of m) and `sim_hist[m]` the
similarity histogram over the long history. Multimodal item vectors are looked up per batch from
one table (`item_vectors`), never copied into every sample.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

import torch

from dmf_features.schemas import FUSED

TARGET_VECTOR_MODALITY = FUSED  # the multimodal vector models take for a target (and history items)


@dataclass
class CTRBatch:
    user_ids: torch.Tensor  # [B] int64
    target_ids: torch.Tensor  # [B] int64 (model vocabulary indices, 0 = unknown)
    hist_ids: torch.Tensor  # [B, L] int64, 0 pads
    hist_mask: torch.Tensor  # [B, L] bool
    buckets: dict[str, torch.Tensor] = field(default_factory=dict)  # m -> [B, L] int64, -1 masked
    sims: dict[str, torch.Tensor] = field(default_factory=dict)  # m -> [B, L] float, 0 where masked
    sim_hist: dict[str, torch.Tensor] = field(default_factory=dict)  # m -> [B, n_buckets] float
    # m -> [B, 1 + K]: log(1 + unmasked long-history positions), then the K largest similarities over
    # the long history (0 pads): what a normalised histogram hides, e.g. one sequel among 500 items
    sim_top: dict[str, torch.Tensor] = field(default_factory=dict)
    target_vectors: torch.Tensor | None = None  # [B, D] the target's multimodal (fused) vector
    # Early fusion of history items only: the distinct history items' vectors [U, D] once each, and
    # for every position its row in them [B, L] (a batch of 512 x 50 positions holds a few thousand
    # distinct items, so this is several times smaller than [B, L, D] and projected once per item).
    hist_vectors: torch.Tensor | None = None
    hist_vector_rows: torch.Tensor | None = None
    context: torch.Tensor | None = None  # [B, C] point-in-time user and item statistics (models.prior_stats)
    labels: torch.Tensor | None = None  # [B] float
    item_ids: torch.Tensor | None = None  # [B] the targets' raw item ids (evaluation by item, e.g. cold start)

    def __len__(self) -> int:
        return int(self.target_ids.shape[0])

    def to(self, device: torch.device | str) -> CTRBatch:
        moved = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, dict):
                moved[f.name] = {k: v.to(device) for k, v in value.items()}
            else:
                moved[f.name] = None if value is None else value.to(device)
        return CTRBatch(**moved)
