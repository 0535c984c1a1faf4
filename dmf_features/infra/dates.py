"""Which event dates a run covers, shared by every stage that can run for one day or from a day on."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from pyspark.sql import Column
from pyspark.sql import functions as F

from dmf_features.schemas import FULL_SCOPE


@dataclass(frozen=True)
class DateScope:
    """Which event dates a run covers: one day, a day and everything after, or everything."""

    date: dt.date | None = None
    since: dt.date | None = None

    def __post_init__(self) -> None:
        if self.date and self.since:
            raise ValueError("give --date or --since, not both")

    def condition(self, column: Column) -> Column:
        if self.date:
            return column == F.lit(self.date)
        if self.since:
            return column >= F.lit(self.since)
        return F.lit(True)

    @property
    def incremental(self) -> bool:
        """Only some days (as opposed to a full build over every date)."""
        return self.date is not None or self.since is not None

    def partitions(self) -> list[tuple[str, str, dt.date]] | None:
        """The `date` partitions a run replaces (None: the whole table)."""
        if self.date:
            return [("date", "=", self.date)]
        if self.since:
            return [("date", ">=", self.since)]
        return None

    def __str__(self) -> str:
        return f"date {self.date}" if self.date else f"dates since {self.since}" if self.since else FULL_SCOPE
