"""CLIP text and image encoders: titles and posters in one embedding space.

No CLIP weights install offline here; production configures a Hugging Face id or a local folder.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from transformers import AutoImageProcessor, AutoTokenizer, CLIPModel

from .base import Encoder
from .identity import clip, resolve_model_dir


@functools.cache
def _load_clip(path: str, device: str) -> tuple[CLIPModel, Path]:
    """One CLIPModel per (path, device), shared by the text and the image encoder: weights load once."""
    folder = resolve_model_dir(path)
    return CLIPModel.from_pretrained(folder).to(device).eval(), folder


def _vectors(output: Any) -> torch.Tensor:
    """`get_*_features` returns a tensor in transformers 4 and an output object in 5 (`.pooler_output`)."""
    return output if isinstance(output, torch.Tensor) else output.pooler_output


class ClipTextEncoder(Encoder):
    """`CLIPModel.get_text_features` over the folder's tokenizer, truncated at `max_tokens` (at most 77 for CLIP)."""

    def __init__(
        self, path: str, *, device: torch.device, max_tokens: int = 128, batch_size: int = 64, name: str = "clip-text"
    ) -> None:
        self.model, folder = _load_clip(path, str(device))
        self.tokenizer = AutoTokenizer.from_pretrained(folder)
        self.max_tokens = min(max_tokens, self.model.config.text_config.max_position_embeddings)
        super().__init__(
            identity=clip(name)(folder),
            modality="text",
            loaded_dim=self.model.config.projection_dim,
            device=device,
            batch_size=batch_size,
        )

    def _forward(self, items: list[str]) -> torch.Tensor:
        inputs = self.tokenizer(items, padding=True, truncation=True, max_length=self.max_tokens, return_tensors="pt").to(
            self.device
        )
        return _vectors(self.model.get_text_features(**inputs))


class ClipImageEncoder(Encoder):
    """`CLIPModel.get_image_features` over the folder's image processor.

    The PIL backend is forced so that vectors do not depend on whether torchvision is installed.
    """

    def __init__(self, path: str, *, device: torch.device, batch_size: int = 64, name: str = "clip-image") -> None:
        self.model, folder = _load_clip(path, str(device))
        self.processor = AutoImageProcessor.from_pretrained(folder, backend="pil")
        super().__init__(
            identity=clip(name)(folder),
            modality="image",
            loaded_dim=self.model.config.projection_dim,
            device=device,
            batch_size=batch_size,
        )

    def _forward(self, items: list[Image.Image]) -> torch.Tensor:
        images = [image if image.mode == "RGB" else image.convert("RGB") for image in items]
        pixels = self.processor(images=images, return_tensors="pt")["pixel_values"].to(self.device)
        return _vectors(self.model.get_image_features(pixel_values=pixels))
