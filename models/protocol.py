"""The evaluation protocol: which `samples` rows train, select and test a model.

The trainer assigns splits from each row's user and time, so the protocol is chosen by config
(`evaluation:` in the pipeline config) without rebuilding features: a sample's features are
point-in-time whatever the split.

- `rolling` (primary): expanding-window folds on the global timeline. Boundaries b_0 < b_1 < ... <
  b_K, as dates or as fractions (of the rows in time order, or of the time range) so that any data
  set gets a split without new code. Fold i trains on rows before b_{i-1}, selects on
  [b_{i-1}, b_i) and tests on [b_i, b_{i+1}) (the last up to the end of the data). Every test row is
  later than every training row of its fold: nothing leaks from the future. Test rows of all folds
  are pooled for the metrics, each scored by its own fold's model.
- `per_user` (secondary, labelled so): each user's own rows in time order, the last fractions valid
  and test. Common in the literature, but a test row can be older than another user's training
  rows, so it sees the future of the catalogue.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from dmf_features.features.kernels.lookup import find_sorted

TRAIN, VALID, TEST = 1, 2, 3  # split codes; 0: the row is in no split of the fold
SPLIT_CODES = {"train": TRAIN, "valid": VALID, "test": TEST}


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RollingConfig(_Section):
    boundaries: tuple[float | dt.date, ...] = Field(
        (0.6, 0.7, 0.8, 0.9),
        min_length=3,
        description="b_0 < ... < b_K: dates (YYYY-MM-DD) or fractions in (0, 1); K folds, fold i validates on "
        "[b_(i-1), b_i) and tests on [b_i, b_(i+1))",
    )
    fraction_of: Literal["rows", "time"] = Field(
        "rows", description="a fraction is a share of the rows in time order (rows) or of the time range (time)"
    )
    min_test_users: int = Field(100, ge=1, description="a fold whose valid or test window has fewer users is an error")

    @model_validator(mode="after")
    def _ordered(self) -> RollingConfig:
        kinds = {type(b) for b in self.boundaries}
        if len(kinds) > 1:
            raise ValueError("boundaries must be all dates or all fractions")
        if isinstance(self.boundaries[0], float) and not all(0 < b < 1 for b in self.boundaries):
            raise ValueError(f"fractional boundaries must lie in (0, 1), got {list(self.boundaries)}")
        if list(self.boundaries) != sorted(set(self.boundaries)):
            raise ValueError(f"boundaries must increase strictly, got {list(self.boundaries)}")
        return self


class PerUserConfig(_Section):
    valid_fraction: float = Field(0.1, gt=0, lt=0.5, description="each user's share of rows before the test ones")
    test_fraction: float = Field(0.1, gt=0, lt=0.5, description="each user's newest share of rows")


class EvaluationConfig(_Section):
    """`evaluation:` in the pipeline config."""

    protocol: Literal["rolling", "per_user"] = "rolling"
    rolling: RollingConfig = RollingConfig()
    per_user: PerUserConfig = PerUserConfig()
    bootstrap_resamples: int = Field(1000, ge=10, description="user-bootstrap resamples for the intervals")


@dataclass(frozen=True)
class Fold:
    """One train / valid / test assignment. `cutoffs` are epoch seconds [train_end, test_start, test_end]
    for a rolling fold; a per-user fold holds each user's own thresholds instead."""

    name: str
    cutoffs: tuple[int, int, int] | None = None
    users: np.ndarray | None = None  # per_user: sorted user ids
    user_valid_from: np.ndarray | None = None  # their first valid time (seconds)
    user_test_from: np.ndarray | None = None

    def assign(self, user_ids: np.ndarray, seconds: np.ndarray) -> np.ndarray:
        """Split code (TRAIN, VALID, TEST or 0) of each row."""
        if self.cutoffs is not None:
            train_end, test_start, test_end = self.cutoffs
            return np.select([seconds < train_end, seconds < test_start, seconds < test_end], [TRAIN, VALID, TEST], 0).astype(
                np.int8
            )
        rows, known = find_sorted(self.users, user_ids)
        valid_from = np.where(known, self.user_valid_from[rows], np.iinfo(np.int64).max)
        test_from = np.where(known, self.user_test_from[rows], np.iinfo(np.int64).max)
        return np.select([seconds < valid_from, seconds < test_from], [TRAIN, VALID], TEST).astype(np.int8)

    @property
    def global_timeline(self) -> bool:
        return self.cutoffs is not None


def resolve_folds(config: EvaluationConfig, user_ids: np.ndarray, seconds: np.ndarray) -> list[Fold]:
    """The folds of `config` over the rows (user, epoch seconds) of a samples table."""
    if not len(seconds):
        raise ValueError("samples has no rows to split")
    if config.protocol == "per_user":
        return [_per_user_fold(config.per_user, user_ids, seconds)]
    points = _boundary_seconds(config.rolling, seconds)
    end = int(seconds.max()) + 1
    folds = []
    for i in range(1, len(points)):
        fold = Fold(f"fold{i}", (points[i - 1], points[i], points[i + 1] if i + 1 < len(points) else end))
        _check_windows(fold, config.rolling.min_test_users, user_ids, seconds)
        folds.append(fold)
    return folds


def _boundary_seconds(config: RollingConfig, seconds: np.ndarray) -> list[int]:
    first = config.boundaries[0]
    if isinstance(first, dt.date):
        points = [int(dt.datetime.combine(b, dt.time(), dt.UTC).timestamp()) for b in config.boundaries]
    elif config.fraction_of == "rows":
        ordered = np.sort(seconds)
        points = [int(ordered[min(int(b * len(ordered)), len(ordered) - 1)]) for b in config.boundaries]
    else:
        low, high = int(seconds.min()), int(seconds.max())
        points = [int(low + b * (high - low)) for b in config.boundaries]
    if len(set(points)) < len(points):
        raise ValueError(
            f"evaluation.rolling.boundaries {list(config.boundaries)} fall on equal times in this data "
            "(many rows share a timestamp): spread them further apart"
        )
    return points


def _check_windows(fold: Fold, min_users: int, user_ids: np.ndarray, seconds: np.ndarray) -> None:
    codes = fold.assign(user_ids, seconds)
    for code, name in ((TRAIN, "train"), (VALID, "valid"), (TEST, "test")):
        users = len(np.unique(user_ids[codes == code]))
        if name != "train" and users < min_users:
            raise ValueError(
                f"evaluation.rolling: {fold.name}'s {name} window {_window(fold, code)} holds "
                f"{users} users, fewer than min_test_users={min_users}: move the boundaries "
                "earlier or lower min_test_users"
            )
        if name == "train" and not users:
            raise ValueError(
                f"evaluation.rolling: {fold.name} has no training rows before {_day(fold.cutoffs[0])}: "
                "move the first boundary later"
            )


def _window(fold: Fold, code: int) -> str:
    start, stop = (fold.cutoffs[0], fold.cutoffs[1]) if code == VALID else (fold.cutoffs[1], fold.cutoffs[2])
    return f"[{_day(start)}, {_day(stop)})"


def _day(seconds: int) -> str:
    return dt.datetime.fromtimestamp(seconds, dt.UTC).strftime("%Y-%m-%d %H:%M")


def _per_user_fold(config: PerUserConfig, user_ids: np.ndarray, seconds: np.ndarray) -> Fold:
    order = np.lexsort((seconds, user_ids))
    users, starts, counts = np.unique(user_ids[order], return_index=True, return_counts=True)
    ordered = seconds[order]
    n_test = np.where(counts >= 3, np.maximum(1, np.floor(counts * config.test_fraction)), 0).astype(np.int64)
    n_valid = np.where(counts >= 3, np.maximum(1, np.floor(counts * config.valid_fraction)), 0).astype(np.int64)
    never = np.iinfo(np.int64).max
    test_from = np.where(n_test > 0, ordered[np.maximum(starts + counts - n_test, 0)], never)
    valid_from = np.where(n_valid > 0, ordered[np.maximum(starts + counts - n_test - n_valid, 0)], never)
    return Fold("per_user", users=users, user_valid_from=valid_from.astype(np.int64), user_test_from=test_from.astype(np.int64))


def describe(folds: Sequence[Fold]) -> list[str]:
    """One line per fold, for the console and MLflow."""
    return [
        f"{f.name}: train < {_day(f.cutoffs[0])}, valid {_window(f, VALID)}, test {_window(f, TEST)}"
        if f.global_timeline
        else f"{f.name}: each user's newest rows (secondary protocol)"
        for f in folds
    ]
