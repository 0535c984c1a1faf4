"""One encoder version's item vectors per modality, as a dense matrix looked up by item id."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dmf_features.features.kernels.lookup import find_sorted


@dataclass(frozen=True)
class ModalityVectors:
    version: str
    ids: np.ndarray  # sorted item ids
    matrix: np.ndarray  # float32 [len(ids), dim], unit-length rows

    def lookup(self, item_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Row of each item in `matrix` (0 when absent) and whether the item has a vector."""
        rows, present = find_sorted(self.ids, item_ids)
        return np.where(present, rows, 0), present

    def get(self, item_ids: np.ndarray) -> list[np.ndarray | None]:
        rows, present = self.lookup(item_ids)
        return [self.matrix[r] if ok else None for r, ok in zip(rows, present, strict=True)]
