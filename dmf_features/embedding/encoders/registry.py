"""Every encoder kind, once: its modality, where its class lives, what it needs; and the spec that names one.

The config validator reads this (without importing torch or any model code), `identity.py` gives each
kind's version and width from its files, and `load_encoder` imports the one class a spec names, so
`base.py` imports no implementation. A new encoder is one module, its identity and one line here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from dmf_features.schemas import ContentModality

from . import identity


@dataclass(frozen=True)
class EncoderKind:
    name: str  # what `embedding.<modality>.kind` says in the config
    modality: ContentModality
    module: str  # relative to this package
    class_name: str
    identify: Callable[[str | None], identity.EncoderIdentity]  # name, version and width from its files, no model load
    needs_path: bool = False  # no weights ship with the package: `path` names a model folder or a Hugging Face id


ENCODER_KINDS: dict[str, EncoderKind] = {
    kind.name: kind
    for kind in (
        EncoderKind("minilm", "text", ".text", "TransformersTextEncoder", identity.transformers_text),
        EncoderKind("efficientnet-lite0", "image", ".image", "EfficientNetLiteEncoder", identity.efficientnet_lite0),
        EncoderKind("clip-text", "text", ".clip", "ClipTextEncoder", identity.clip("clip-text"), needs_path=True),
        EncoderKind("clip-image", "image", ".clip", "ClipImageEncoder", identity.clip("clip-image"), needs_path=True),
    )
}


def kinds_for(modality: str) -> tuple[str, ...]:
    return tuple(name for name, kind in ENCODER_KINDS.items() if kind.modality == modality)


def encoder_kind(name: str) -> EncoderKind:
    if name not in ENCODER_KINDS:
        raise ValueError(f"encoder kind {name!r} is unknown; use one of {', '.join(ENCODER_KINDS)}")
    return ENCODER_KINDS[name]


@dataclass(frozen=True)
class EncoderSpec:
    """Which encoder to load; frozen (hashable) so that it can key the encoder cache.

    `path` is a model folder or a Hugging Face id (for EfficientNet-Lite0: a `.pth` state dict);
    None means the weights shipped in an installed package (MiniLM, EfficientNet-Lite0).
    `batch_size` bounds how many items one forward pass takes, so a 10,000-row Arrow batch does not
    allocate activations for all rows at once.
    """

    kind: str  # a name in `registry.ENCODER_KINDS`
    path: str | None = None
    max_tokens: int = 128
    batch_size: int = 64

    def __post_init__(self) -> None:
        if encoder_kind(self.kind).needs_path and not self.path:
            raise ValueError(f"{self.kind} needs a path: a CLIP model folder or a Hugging Face id")
        if self.max_tokens < 1 or self.batch_size < 1:
            raise ValueError("max_tokens and batch_size must be positive")
