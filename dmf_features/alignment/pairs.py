"""What alignment may learn from: behaviour before the cut-off, as pairs of items a user clicked close together.

The cut-off is the evaluation protocol's first validation boundary (or `alignment.train_until`): every
fold trains on rows before it, so no valid or test event of any fold shapes the aligned vectors.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from dmf_features.features.samples import behaviour_events
from dmf_features.infra.config import Config, ConfigError
from models.protocol import resolve_folds


def training_cutoff(cfg: Config, events: DataFrame) -> int:
    """Epoch seconds before which behaviour trains the heads."""
    if cfg.alignment.train_until is not None:
        return int(dt.datetime.combine(cfg.alignment.train_until, dt.time(), dt.UTC).timestamp())
    if cfg.evaluation.protocol != "rolling":
        raise ConfigError(
            "alignment: the per_user evaluation protocol has no global cut-off; set alignment.train_until to a day "
            "before every valid and test row"
        )
    # the protocol's own code on the rows `samples` will hold (one per event when negatives are off)
    rows = events.select("user_id", F.unix_seconds("event_time").alias("seconds")).toArrow()
    folds = resolve_folds(cfg.evaluation, rows.column("user_id").to_numpy(), rows.column("seconds").to_numpy())
    return folds[0].cutoffs[0]


def behaviour_pairs(cfg: Config, events: DataFrame, cutoff: int) -> np.ndarray:
    """[P, 2] item ids (anchor, positive) in time order: each behaviour before `cutoff` with each of the same
    user's next `pair_window` behaviours within `max_gap_days` (the positive before the cut-off too)."""
    align = cfg.alignment
    clicks = behaviour_events(events, cfg.features.behaviour).where(F.col("micros") < F.lit(cutoff * 1_000_000))
    order = Window.partitionBy("user_id").orderBy("micros", "item_id")
    following = F.array(
        *[
            F.struct(F.lead("item_id", k).over(order).alias("item_id"), F.lead("micros", k).over(order).alias("micros"))
            for k in range(1, align.pair_window + 1)
        ]
    )
    max_gap = int(align.max_gap_days * 86_400 * 1_000_000)
    pairs = (
        clicks.select("item_id", "micros", following.alias("following"))  # Spark explodes no window expression
        .select("item_id", "micros", F.explode("following").alias("next"))
        .where(F.col("next.item_id").isNotNull() & (F.col("next.item_id") != F.col("item_id")))
        .where(F.col("next.micros") - F.col("micros") <= max_gap)
        .select(F.col("item_id").alias("anchor"), F.col("next.item_id").alias("positive"), F.col("next.micros").alias("micros"))
        .toArrow()
    )
    anchor, positive, micros = (pairs.column(c).to_numpy() for c in ("anchor", "positive", "micros"))
    order_in_time = np.lexsort((positive, anchor, micros))  # deterministic: the version digest hashes this order
    result = np.stack([anchor[order_in_time], positive[order_in_time]], axis=1).astype(np.int64)
    if len(result) > align.max_pairs:  # a seeded sample, still in time order
        keep = np.sort(np.random.default_rng(align.seed).choice(len(result), align.max_pairs, replace=False))
        result = result[keep]
    return result
