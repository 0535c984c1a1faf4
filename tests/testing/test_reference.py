"""The pandas reference for `samples` features, on tiny inputs whose answers are worked out by hand.

Vectors are 2-D and the target is mostly (1, 0), so a history item (x, y) has similarity x exactly.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from dmf_features.testing.reference import reference_features

NAN = float("nan")


def events(*rows: tuple) -> pd.DataFrame:
    """rows: (user, item, epoch seconds, label[, event_type = 'rating'])."""
    full = [(*r[:3], r[4] if len(r) > 4 else "rating", r[3]) for r in rows]
    df = pd.DataFrame(full, columns=["user_id", "item_id", "secs", "event_type", "label"])
    df["event_time"] = pd.to_datetime(df.pop("secs"), unit="s", utc=True)
    return df


def vecs(table: dict[int, tuple[float, float]]) -> tuple[np.ndarray, np.ndarray]:
    ids = np.array(list(table), dtype=np.int64)
    mat = np.array([v for v in table.values()], dtype=np.float32)
    return ids, mat


def run(ev: pd.DataFrame, vectors: dict, **kw) -> pd.DataFrame:
    args = dict(history_length=3, long_history_length=5, buckets=4, top_k=3) | kw
    return reference_features(ev, vectors, **args).set_index("sample_id")


def eq(actual: np.ndarray, expected: list) -> None:
    np.testing.assert_array_equal(actual, np.array(expected, dtype=actual.dtype))


SQ = math.sqrt(0.75)
# Item -> vector; 1: the usual target; 2..6 and 8 have similarities 1, .5, 0, -1, -.5 and -.25 to it.
V = {1: (1.0, 0.0), 2: (1.0, 0.0), 3: (0.5, SQ), 4: (0.0, 1.0), 5: (-1.0, 0.0), 6: (-0.5, SQ), 8: (-0.25, math.sqrt(0.9375))}


def test_history_is_strictly_before_and_same_time_ties_by_larger_item_id():
    ev = events((7, 10, 100, 1), (7, 30, 200, 1), (7, 20, 200, 1), (7, 40, 300, 1), (8, 99, 150, 1))
    out = run(ev, {"text": vecs({})})
    # Neither event at 200 sees the other: same second is not before.
    for sid in ["7:20:200:rating", "7:30:200:rating"]:
        assert out.at[sid, "hist_len"] == 1
        eq(out.at[sid, "hist_item_ids"], [10, 0, 0])
        eq(out.at[sid, "hist_times"], [100, 0, 0])
    # At equal times the larger item id is the more recent one; other users never leak in.
    eq(out.at["7:40:300:rating", "hist_item_ids"], [30, 20, 10])
    eq(out.at["7:40:300:rating", "hist_times"], [200, 200, 100])
    assert out.at["8:99:150:rating", "hist_len"] == 0


def test_one_row_per_event_with_ids_types_and_padding():
    ev = events((7, 1, 100, 1), (7, 2, 200, 0, "view"), (7, 3, 300, 1))
    out = run(ev, {"text": vecs(V), "image": vecs(V)}, history_length=4, top_k=2)
    assert list(out.index) == ["7:1:100:rating", "7:2:200:view", "7:3:300:rating"]
    first = out.loc["7:1:100:rating"]
    assert (first.hist_len, first.long_len) == (0, 0)
    for m in ["text", "image"]:
        eq(first[f"{m}_sim"], [NAN] * 4)
        eq(first[f"{m}_mask"], [False] * 4)
        eq(first[f"{m}_bucket"], [-1] * 4)
        eq(first[f"{m}_hist"], [0, 0, 0, 0])
        assert first[f"{m}_hist_count"] == 0
        eq(first[f"{m}_topk_ids"], [0, 0])
        eq(first[f"{m}_topk_sims"], [NAN, NAN])
    last = out.loc["7:3:300:rating"]  # the label-0 view is not a behaviour
    eq(last.hist_item_ids, [1, 0, 0, 0])
    eq(last.text_sim, [0.5, NAN, NAN, NAN])
    eq(last.text_mask, [True, False, False, False])
    eq(last.text_bucket, [3, -1, -1, -1])
    dtypes = {
        "hist_item_ids": np.int64,
        "hist_times": np.int64,
        "text_sim": np.float32,
        "text_mask": np.bool_,
        "text_bucket": np.int32,
        "text_hist": np.float32,
        "text_topk_ids": np.int64,
        "text_topk_sims": np.float32,
    }
    assert {c: last[c].dtype.type for c in dtypes} == dtypes
    assert out.at["7:2:200:view", "event_time"] == pd.Timestamp(200, unit="s", tz="UTC")


def test_bucket_edges_and_histogram():
    # Behaviours 2..6, 8 (sims 1, .5, 0, -1, -.5, -.25), target 1 at the end.
    ev = events(*[(7, i, 10 * i, 1) for i in [2, 3, 4, 5, 6, 8]], (7, 1, 100, 1))
    out = run(ev, {"text": vecs(V)}, history_length=6, long_history_length=6).loc["7:1:100:rating"]
    eq(out.text_sim, [-0.25, -0.5, -1, 0, 0.5, 1])
    # floor((s+1)/2*4): -.25 -> 1.5 -> 1, -.5 -> 1 (edge), -1 -> 0, 0 -> 2 (edge), .5 -> 3 (edge),
    # 1 -> 4 clipped to B-1 = 3.
    eq(out.text_bucket, [1, 1, 0, 2, 3, 3])
    eq(out.text_hist, [1 / 6, 2 / 6, 1 / 6, 2 / 6])
    assert out.text_hist_count == 6


def test_item_without_vector_is_masked_and_left_out_of_hist_and_topk():
    # 50 has a text vector but no image; target 9 has no image vector at all.
    text = vecs(V | {50: (0.0, -1.0), 9: (1.0, 0.0)})
    image = vecs(V)
    ev = events((7, 4, 10, 1), (7, 50, 20, 1), (7, 1, 30, 1), (7, 9, 30, 1))
    out = run(ev, {"text": text, "image": image}, top_k=3)
    row = out.loc["7:1:30:rating"]
    eq(row.hist_item_ids, [50, 4, 0])
    eq(row.text_sim, [0, 0, NAN])
    eq(row.text_mask, [True, True, False])
    eq(row.image_sim, [NAN, 0, NAN])
    eq(row.image_mask, [False, True, False])
    eq(row.image_bucket, [-1, 2, -1])
    assert (row.text_hist_count, row.image_hist_count) == (2, 1)
    eq(row.image_hist, [0, 0, 1, 0])  # a missing vector never counts as s = 0
    eq(row.image_topk_ids, [4, 0, 0])
    eq(row.image_topk_sims, [0, NAN, NAN])
    eq(row.text_topk_ids, [50, 4, 0])  # equal sims: most recent first
    target_missing = out.loc["7:9:30:rating"]
    eq(target_missing.image_mask, [False, False, False])
    assert target_missing.image_hist_count == 0
    eq(target_missing.text_mask, [True, True, False])


def test_topk_over_long_history_best_first_ties_most_recent_first():
    # Behaviours oldest..newest: 2 (s=1), 3 (.5), 20 (s=1), 2 again (s=1), 11 (s=1), 4 (0), 5 (-1).
    v = vecs(V | {20: (1.0, 0.0), 11: (1.0, 0.0)})
    items = [2, 3, 20, 2, 11, 4, 5]
    ev = events(*[(7, i, 10 + k, 1) for k, i in enumerate(items)], (7, 1, 100, 1))
    out = run(ev, {"fused": v}, history_length=2, long_history_length=6, top_k=4)
    row = out.loc["7:1:100:rating"]
    assert (row.hist_len, row.long_len) == (2, 6)
    eq(row.hist_item_ids, [5, 4])
    # Long history (newest first): 5, 4, 11, 2, 20, 3; the oldest click of 2 is beyond L_long.
    # Among s=1, recency (11, 2, 20) beats item id order; item 2 is a position, counted once here.
    eq(row.fused_topk_ids, [11, 2, 20, 3])
    eq(row.fused_topk_sims, [1, 1, 1, 0.5])
    assert row.fused_hist_count == 6
    eq(row.fused_hist, [1 / 6, 0, 1 / 6, 4 / 6])
    wide = run(ev, {"fused": v}, history_length=2, long_history_length=8, top_k=6).loc["7:1:100:rating"]
    eq(wide.fused_topk_ids, [11, 2, 20, 2, 3, 4])  # the same item twice: positions, not items


def test_behaviour_label_none_and_event_types():
    ev = events((7, 2, 10, 0), (7, 3, 20, 1, "wish"), (7, 4, 30, 1), (7, 1, 40, 0))
    v = {"text": vecs(V)}
    default = run(ev, v).loc["7:1:40:rating"]
    eq(default.hist_item_ids, [4, 3, 0])
    everything = run(ev, v, behaviour_label=None).loc["7:1:40:rating"]
    eq(everything.hist_item_ids, [4, 3, 2])
    eq(everything.text_sim, [0, 0.5, 1])
    ratings = run(ev, v, behaviour_label=None, behaviour_event_types=["rating"]).loc["7:1:40:rating"]
    eq(ratings.hist_item_ids, [4, 2, 0])
    both = run(ev, v, behaviour_event_types=["rating"]).loc["7:1:40:rating"]
    eq(both.hist_item_ids, [4, 0, 0])


def test_sub_second_times_floor_in_ids_but_order_at_full_resolution():
    ev = events((7, 2, 10, 1), (7, 1, 10, 1))
    ev.loc[1, "event_time"] += pd.Timedelta(milliseconds=700)
    out = run(ev, {"text": vecs(V)})
    eq(out.at["7:1:10:rating", "hist_item_ids"], [2, 0, 0])
    assert out.at["7:2:10:rating", "hist_len"] == 0


def test_duplicate_vector_ids_are_refused():
    mat = np.array([[1, 0], [0, 1]], dtype=np.float32)
    with pytest.raises(ValueError, match="duplicate"):
        run(events((7, 1, 10, 1)), {"text": (np.array([1, 1]), mat)})
