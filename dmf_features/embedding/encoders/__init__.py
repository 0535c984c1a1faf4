"""Pretrained item encoders (text and image) behind one small interface; never imports pyspark."""

from .base import Encoder, EncoderSpec, load_encoder

__all__ = ["Encoder", "EncoderSpec", "load_encoder"]
