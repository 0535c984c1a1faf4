"""The ingest stage: raw sources to the `items`, `events` and `quarantine` tables (`stage.py`)."""

from dmf_features.infra.lazy_exports import lazy_exports

__all__ = ["IngestError", "IngestReport", "ingest"]
__getattr__, __dir__ = lazy_exports(__name__, dict.fromkeys(__all__, ".stage"))
