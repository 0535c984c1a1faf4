"""The contract's history order (`schemas.HISTORY_ORDER`: newest first, ties by item, then type) in Spark."""

from __future__ import annotations

from pyspark.sql import Window, WindowSpec
from pyspark.sql import functions as F

from dmf_features.schemas import HISTORY_ORDER


def newest_first_window() -> WindowSpec:
    """Each user's events, newest first: row 1 is the event a history starts from."""
    return Window.partitionBy("user_id").orderBy(*(F.desc(column) for column in HISTORY_ORDER))


# The numpy kernels walk each user's rows oldest first, a sample row (kind 0) before the behaviours
# of its own time, so the reverse of HISTORY_ORDER with `kind` after the time.
STREAM_ORDER = ("user_id", "micros", "kind", *HISTORY_ORDER[1:])
