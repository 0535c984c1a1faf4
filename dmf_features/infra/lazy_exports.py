"""Package re-exports that load on first use.

A stage package re-exports its entry points (`from dmf_features.ingest import ingest`), but importing
the package must not import Spark: its numpy kernels and encoders are used where pyspark is absent or
unwanted (the trainer, the tests' fast suite). PEP 562's module `__getattr__` defers each import.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(package: str, exports: Mapping[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """`__getattr__` and `__dir__` for `package`, where `exports` maps a name to its submodule (".stage")."""

    def __getattr__(name: str) -> Any:
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(exports[name], package), name)

    def __dir__() -> list[str]:
        return sorted(exports)

    return __getattr__, __dir__
