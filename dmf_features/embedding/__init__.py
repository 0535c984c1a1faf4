"""The embedding stage: items' images and titles to `item_embeddings` with pretrained encoders (`stage.py`)."""

from dmf_features.infra.lazy_exports import lazy_exports

__all__ = ["EmbedReport", "embed_items", "encoder_versions"]
__getattr__, __dir__ = lazy_exports(__name__, {"EmbedReport": ".stage", "embed_items": ".stage", "encoder_versions": ".versions"})
