"""The encoder interface and a per-process cache of loaded encoders (the spec that names one is in `registry.py`).

Encoders run inside Spark's Python workers and in the trainer, so this package never imports pyspark.
A worker process calls `load_encoder` once per batch; the cache makes that load the model only once.
"""

from __future__ import annotations

import functools
import importlib
import logging
import threading
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from dmf_features.schemas import ContentModality

from .identity import EncoderIdentity, check_width
from .registry import EncoderSpec, encoder_kind

log = logging.getLogger(__name__)


class Encoder(ABC):
    """A pretrained model that maps a batch of items to L2-normalised float32 vectors.

    Subclasses implement `_forward` (preprocessing + model on one chunk); `embed` adds chunking,
    `torch.inference_mode()` and normalisation, so every encoder returns the same kind of array.
    """

    name: str
    modality: ContentModality
    dim: int
    version: str
    device: torch.device

    def __init__(
        self, *, identity: EncoderIdentity, modality: ContentModality, loaded_dim: int, device: torch.device, batch_size: int
    ) -> None:
        check_width(identity, loaded_dim)
        self.name = identity.name
        self.modality = modality
        self.dim = identity.dim
        self.version = identity.version
        self.device = device
        self.batch_size = batch_size

    def embed(self, batch: Sequence[Any]) -> np.ndarray:
        """Embed `batch` (str for text encoders, `PIL.Image.Image` for image encoders): float32 [n, dim]."""
        chunks = []
        with torch.inference_mode():
            for start in range(0, len(batch), self.batch_size):
                vectors = self._forward(list(batch[start : start + self.batch_size])).float()
                chunks.append(torch.nn.functional.normalize(vectors, dim=1).cpu().numpy())
        if not chunks:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.concatenate(chunks)

    @abstractmethod
    def _forward(self, items: list[Any]) -> torch.Tensor:
        """Preprocess `items` and run the model: un-normalised vectors [len(items), dim] on any device."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(version={self.version!r}, dim={self.dim}, device={str(self.device)!r})"


def resolve_device(device: str = "auto", spark_gpus: Sequence[str] = ()) -> torch.device:
    """ "auto" means CUDA when available, else CPU; anything else ("cpu", "cuda:1") is taken as given.

    `spark_gpus` are the GPU addresses Spark assigned to the calling task: a GPU cluster whose executors
    cannot use CUDA (no driver, a CPU-only torch) would otherwise encode on CPU, many times slower, without
    a word, so that case is logged.
    """
    if device != "auto":
        return torch.device(device)
    if torch.cuda.is_available():
        # the GPU Spark assigned (a physical index on standalone nodes with several GPUs); where the node
        # isolates GPUs (the task sees only its own), the index may not exist and device 0 is the one
        if spark_gpus and spark_gpus[0].isdigit() and int(spark_gpus[0]) < torch.cuda.device_count():
            return torch.device(f"cuda:{spark_gpus[0]}")
        return torch.device("cuda")
    if spark_gpus:
        _warn_gpu_unusable(tuple(spark_gpus))
    return torch.device("cpu")


@functools.cache  # once per Python worker, not once per task
def _warn_gpu_unusable(spark_gpus: tuple[str, ...]) -> None:
    log.warning(
        "a GPU was assigned to this task (spark resources: gpu %s) but CUDA is not usable here (torch %s, %s); encoding on CPU",
        list(spark_gpus),
        torch.__version__,
        f"built for CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build",
    )


_CACHE: dict[tuple[EncoderSpec, str], Encoder] = {}
_CACHE_LOCK = threading.Lock()


def load_encoder(spec: EncoderSpec, device: str = "auto", spark_gpus: Sequence[str] = ()) -> Encoder:
    """The encoder for `spec` on `device` (see `resolve_device`), loaded on first use and cached for the life of the process."""
    resolved = resolve_device(device, spark_gpus)
    key = (spec, str(resolved))
    with _CACHE_LOCK:
        if key not in _CACHE:
            _CACHE[key] = _build(spec, resolved)
        return _CACHE[key]


def _build(spec: EncoderSpec, device: torch.device) -> Encoder:
    # Imported here: each module pulls in its own heavy dependencies (transformers, the EfficientNet code).
    kind = encoder_kind(spec.kind)
    cls = getattr(importlib.import_module(kind.module, __package__), kind.class_name)
    text_options = {"max_tokens": spec.max_tokens} if kind.modality == "text" else {}
    return cls(spec.path, device=device, batch_size=spec.batch_size, **text_options)
