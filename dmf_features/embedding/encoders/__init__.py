"""Pretrained item encoders (text and image) behind one small interface; never imports pyspark.

`registry.py` lists the kinds; importing this package loads no model code until a name is used.
"""

from dmf_features.infra.lazy_exports import lazy_exports

__all__ = ["Encoder", "EncoderSpec", "load_encoder"]
__getattr__, __dir__ = lazy_exports(__name__, {"Encoder": ".base", "EncoderSpec": ".registry", "load_encoder": ".base"})
