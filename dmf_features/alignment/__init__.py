"""The alignment stage (MIM's content-interest fine-tuning): behaviour-aligned item vectors as a new
encoder version in `item_embeddings` (`stage.py`; the training pairs in `pairs.py`, the heads in
`models/alignment.py`)."""

from dmf_features.infra.lazy_exports import lazy_exports

__all__ = ["AlignReport", "align_embeddings", "aligned_versions"]
__getattr__, __dir__ = lazy_exports(
    __name__, {"AlignReport": ".stage", "align_embeddings": ".stage", "aligned_versions": ".manifest"}
)
