"""Single-process pandas/numpy reference for the per-sample features of `samples`.

This is the baseline that the features benchmark times the Spark job against, and the oracle its
equality test compares with. It follows README "Samples and target-aware features" literally:
one pass per user over the time-sorted events, one small numpy product per sample and modality.
Clarity over speed; it imports no Spark.

Conventions the spec leaves open, fixed here (see `reference_features`):
- "strictly before" compares full-resolution timestamps; `sample_id` and `hist_times` floor to
  whole epoch seconds.
- a similarity is the float64 dot product of the float32 vectors, rounded to float32; the bucket
  and the top-k order are taken from that rounded value, so they agree with the reported `sim`.
- rows come back sorted by (user_id, event_time, item_id, event_type), index reset.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from dmf_features.schemas import FEATURES, HISTORY_ORDER, feature_column

ORDER = ["user_id", *HISTORY_ORDER]  # ascending: oldest first, the reverse of a history


def _epoch_ns(times: pd.Series) -> np.ndarray:
    # Whatever the stored unit (s/ms/us/ns), go through UTC nanoseconds as plain int64.
    naive = times.dt.tz_convert("UTC").dt.tz_localize(None)
    return naive.astype("datetime64[ns]").to_numpy().astype(np.int64)


def _bucket(s: np.ndarray, edges: np.ndarray) -> np.ndarray:
    # The bucket is the number of boundaries at or below the similarity.
    return (np.asarray(s, np.float32)[:, None] >= edges[None, :]).sum(axis=1).astype(np.int32)


def reference_features(
    events: pd.DataFrame,
    vectors: dict[str, tuple[np.ndarray, np.ndarray]],
    *,
    history_length: int,
    long_history_length: int,
    buckets: int,
    top_k: int,
    behaviour_label: int | None = 1,
    behaviour_event_types: Sequence[str] | None = None,
    bucket_edges: dict[str, np.ndarray] | None = None,
) -> pd.DataFrame:
    """One row per event of `events` (columns user_id, item_id, event_time [tz-aware], event_type,
    label) with its point-in-time history and, per modality m of `vectors` (m -> (item ids [n],
    float32 unit rows [n, d])), the target-aware features `<m>_sim/_mask/_bucket/_hist/
    _hist_count/_topk_ids/_topk_sims`. Array cells are numpy arrays. `bucket_edges` (m -> the B - 1
    float32 boundaries the job used); a modality without is split into B equal widths over [-1, 1]."""
    L, LL, B, K = history_length, long_history_length, buckets, top_k
    ev = events.sort_values(ORDER, kind="stable").reset_index(drop=True)
    ns = _epoch_ns(ev["event_time"])
    secs = ns // 1_000_000_000  # floor, also before 1970
    items = ev["item_id"].to_numpy(np.int64)
    behaviour = np.ones(len(ev), dtype=bool)
    if behaviour_label is not None:
        behaviour &= ev["label"].to_numpy() == behaviour_label
    if behaviour_event_types is not None:
        behaviour &= ev["event_type"].isin(list(behaviour_event_types)).to_numpy()

    # Row of each event's item in each modality's matrix; -1 = no vector of that modality.
    rows: dict[str, np.ndarray] = {}
    mats: dict[str, np.ndarray] = {}
    for m, (ids, mat) in vectors.items():
        index = pd.Index(np.asarray(ids, dtype=np.int64))
        if not index.is_unique:
            raise ValueError(f"duplicate item ids in modality {m!r}")
        rows[m] = index.get_indexer(items)
        mats[m] = np.asarray(mat, dtype=np.float64)
    edges = {m: np.asarray((bucket_edges or {}).get(m, -1.0 + 2.0 * np.arange(1, B) / B), np.float32) for m in vectors}

    out: dict[str, list] = {c: [] for c in ["hist_len", "hist_item_ids", "hist_times", "long_len"]}
    for m in vectors:
        for feature in FEATURES:
            out[feature_column(m, feature)] = []

    depth = max(L, LL)
    for pos in ev.groupby("user_id", sort=False).indices.values():  # positions, already time-sorted
        bpos = pos[behaviour[pos]]  # this user's behaviours, in (time, item, type) order
        for i in pos:
            # Behaviours strictly before this sample's time: a prefix of bpos; most recent first.
            n = int(np.searchsorted(ns[bpos], ns[i], side="left"))
            recent = bpos[max(0, n - depth) : n][::-1]
            short, long_ = recent[:L], recent[:LL]
            out["hist_len"].append(len(short))
            out["hist_item_ids"].append(np.pad(items[short], (0, L - len(short))))
            out["hist_times"].append(np.pad(secs[short], (0, L - len(short))))
            out["long_len"].append(len(long_))
            for m in vectors:
                r, t = rows[m], rows[m][i]
                # Unmasked only when the position exists and both target and history item have a vector.
                mask = (r[recent] >= 0) & (t >= 0)
                s = np.full(len(recent), np.nan, dtype=np.float32)
                if mask.any():
                    s[mask] = (mats[m][r[recent[mask]]] @ mats[m][t]).astype(np.float32)
                ms, ml, sl = mask[:L], mask[:LL], s[:LL]
                sim = np.full(L, np.nan, dtype=np.float32)
                sim[: len(short)] = s[:L]
                bucket = np.full(L, -1, dtype=np.int32)
                bucket[: len(short)][ms] = _bucket(s[:L][ms], edges[m])
                out[feature_column(m, "sim")].append(sim)
                out[feature_column(m, "mask")].append(np.pad(ms, (0, L - len(short))))
                out[feature_column(m, "bucket")].append(bucket)
                count = int(ml.sum())
                hist = np.bincount(_bucket(sl[ml], edges[m]), minlength=B).astype(np.float64)
                out[feature_column(m, "hist")].append((hist / count if count else hist).astype(np.float32))
                out[feature_column(m, "hist_count")].append(count)
                # Best first; the stable sort keeps equal sims in position order = most recent first.
                cand = np.flatnonzero(ml)
                best = cand[np.argsort(-sl[cand], kind="stable")][:K]
                topk_ids = np.zeros(K, dtype=np.int64)
                topk_ids[: len(best)] = items[long_[best]]
                topk_sims = np.full(K, np.nan, dtype=np.float32)
                topk_sims[: len(best)] = sl[best]
                out[feature_column(m, "topk_ids")].append(topk_ids)
                out[feature_column(m, "topk_sims")].append(topk_sims)

    base = ev[["user_id", "item_id", "event_time", "event_type", "label"]].copy()
    keys = zip(ev["user_id"], items, secs, ev["event_type"])
    base.insert(0, "sample_id", [f"{u}:{it}:{s}:{et}" for u, it, s, et in keys])
    return pd.concat([base, pd.DataFrame(out, index=base.index)], axis=1)
