"""The feature stage: `samples` and `user_sequences` with DMF's similarity features (`stage.py`).

The arithmetic lives in `kernels/` (numpy and FAISS, no Spark) so that tests and the trainer can use it
without a Spark session.
"""

from dmf_features.infra.lazy_exports import lazy_exports

__all__ = ["FeaturesError", "FeaturesReport", "build_features"]
__getattr__, __dir__ = lazy_exports(__name__, dict.fromkeys(__all__, ".stage"))
