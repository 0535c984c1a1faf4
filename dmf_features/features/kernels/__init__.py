"""Numpy-only feature arithmetic (histories, similarity, negatives): no pyspark, shared with tests and models."""
