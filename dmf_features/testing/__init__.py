"""Helpers shared by tests and benchmarks: the reference feature implementation, input builders, tiny models."""
