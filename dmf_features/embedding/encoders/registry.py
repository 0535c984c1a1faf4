"""Every encoder kind, once: its modality, where its class lives, and what it needs.

The config validator reads this (without importing torch or any model code), and `load_encoder`
imports the one class a spec names, so `base.py` imports no implementation. A new encoder is one
module and one line here.
"""

from __future__ import annotations

from dataclasses import dataclass

from dmf_features.schemas import ContentModality


@dataclass(frozen=True)
class EncoderKind:
    name: str  # what `embedding.<modality>.kind` says in the config
    modality: ContentModality
    module: str  # relative to this package
    class_name: str
    needs_path: bool = False  # no weights ship with the package: `path` names a model folder or a Hugging Face id


ENCODER_KINDS: dict[str, EncoderKind] = {
    kind.name: kind
    for kind in (
        EncoderKind("minilm", "text", ".text", "TransformersTextEncoder"),
        EncoderKind("efficientnet-lite0", "image", ".image", "EfficientNetLiteEncoder"),
        EncoderKind("clip-text", "text", ".clip", "ClipTextEncoder", needs_path=True),
        EncoderKind("clip-image", "image", ".clip", "ClipImageEncoder", needs_path=True),
    )
}


def kinds_for(modality: str) -> tuple[str, ...]:
    return tuple(name for name, kind in ENCODER_KINDS.items() if kind.modality == modality)


def encoder_kind(name: str) -> EncoderKind:
    if name not in ENCODER_KINDS:
        raise ValueError(f"encoder kind {name!r} is unknown; use one of {', '.join(ENCODER_KINDS)}")
    return ENCODER_KINDS[name]
