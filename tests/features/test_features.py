"""The feature stage end to end through real Spark and Delta: samples and user_sequences on tiny inputs.

Events and item vectors are written as real Delta tables (dmf_features/testing/feature_inputs.py) so that
every feature can be recomputed by brute force from exactly what the job read.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil

import numpy as np
import pandas as pd
import pytest

from dmf_features.features.kernels.similarity import bucket_edges
from dmf_features.features.stage import FeaturesError, build_features
from dmf_features.infra.config import ConfigError, load_config
from dmf_features.infra.dates import DateScope
from dmf_features.infra.lake import Lake
from dmf_features.schemas import MODALITIES
from dmf_features.testing.feature_inputs import VERSIONS, random_vectors, write_events, write_vectors
from dmf_features.testing.reference import reference_features
from models.data import PinnedTable

pytestmark = pytest.mark.e2e

L, L_LONG, BUCKETS, K = 5, 12, 8, 4
DAY0 = pd.Timestamp("2024-01-01", tz="UTC")
FEATURE_SUFFIXES = ("sim", "mask", "bucket", "hist", "hist_count", "topk_ids", "topk_sims")


def make_config(tmp_path, **features) -> object:
    section = {
        "history_length": L,
        "long_history_length": L_LONG,
        "buckets": BUCKETS,
        "top_k": K,
        "encoder_versions": VERSIONS,
        "batch_rows": 64,
        "split": {"method": "temporal", "valid_from": "2024-01-08", "test_from": "2024-01-10"},
    } | features
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "features.yaml"
    path.write_text(
        json.dumps(
            {
                "spark": {"master": "local[2]", "shuffle_partitions": 3},
                "lake": {"uri": str(tmp_path / "lake")},
                "source": {"kind": "movielens", "movielens": {"path": str(tmp_path)}},
                "features": section,
            }
        )
    )
    return load_config(path)


def random_events(seed: int = 1, n: int = 700, days: int = 12) -> pd.DataFrame:
    """Twenty users on eighty items, one of them heavy enough to span several Arrow batches."""
    rng = np.random.default_rng(seed)
    users = np.where(rng.random(n) < 0.4, 1, rng.integers(2, 21, n))
    frame = pd.DataFrame(
        {
            "user_id": users,
            "item_id": rng.integers(1, 81, n),
            # whole minutes, so equal times (ties) happen
            "event_time": DAY0 + pd.to_timedelta(rng.integers(0, days * 24 * 60, n) * 60, unit="s"),
            "label": rng.integers(0, 2, n),
        }
    )
    return frame.drop_duplicates(["user_id", "item_id", "event_time"]).reset_index(drop=True)


def read(spark, lake: Lake, table: str, version: int | None = None) -> pd.DataFrame:
    frame = lake.read(spark, table, version=version).toPandas()
    for column in ("event_time", "as_of", "last_event_time"):
        if column in frame:
            frame[column] = frame[column].dt.tz_localize("UTC")
    return frame


@pytest.fixture(scope="module")
def built(spark, tmp_path_factory):
    """A full build with negatives over random events; one image vector in three missing."""
    tmp = tmp_path_factory.mktemp("features")
    cfg = make_config(tmp, negatives={"ratio": 2, "seed": 3})
    lake = Lake(cfg.lake)
    events = random_events()
    vectors = random_vectors(range(1, 81), {"text": 8, "image": 6, "fused": 14}, missing={"image": set(range(1, 81, 3))})
    write_events(spark, lake, events)
    write_vectors(spark, lake, vectors)
    report = build_features(spark, cfg, lake, progress=lambda _: None)
    return cfg, lake, report, read(spark, lake, "samples"), vectors


def assert_same_features(job: pd.Series, expected: pd.Series, columns) -> None:
    for column in columns:
        actual, wanted = np.asarray(job[column]), np.asarray(expected[column])
        if actual.dtype.kind == "f":
            np.testing.assert_allclose(actual, wanted.astype(actual.dtype), atol=1e-5, equal_nan=True, err_msg=column)
        else:
            np.testing.assert_array_equal(actual, wanted, err_msg=column)


def test_every_observed_sample_equals_the_single_process_reference(spark, built):
    cfg, lake, _, samples, vectors = built
    events = read(spark, lake, "events")
    expected = reference_features(
        events, vectors, history_length=L, long_history_length=L_LONG, buckets=BUCKETS, top_k=K, bucket_edges=edges_of(lake)
    ).set_index("sample_id")
    job = samples[~samples.is_negative].set_index("sample_id")
    assert sorted(job.index) == sorted(expected.index)
    columns = ["hist_len", "hist_item_ids", "hist_times", "long_len", *[f"{m}_{s}" for m in MODALITIES for s in FEATURE_SUFFIXES]]
    for sample_id in expected.index:
        assert_same_features(job.loc[sample_id], expected.loc[sample_id], columns)


def edges_of(lake: Lake) -> dict[str, np.ndarray]:
    """The bucket boundaries the build recorded in its commit (quantiles of random item pairs)."""
    recorded = PinnedTable.open(lake.uri("samples")).lineage().bucket_edges
    return {m: np.array(e, np.float32) for m, e in recorded.items()}


def test_bucket_edges_are_recorded_and_split_the_range_the_items_similarities_span(spark, built):
    cfg, lake, _, samples, vectors = built
    edges = edges_of(lake)
    assert cfg.features.bucket_edges == "observed_range" and set(edges) == set(MODALITIES)
    for modality, edge in edges.items():
        matrix = vectors[modality][1]
        np.testing.assert_array_equal(edge, bucket_edges(matrix, BUCKETS))
        pairs = (matrix @ matrix.T)[np.triu_indices(len(matrix), 1)]  # every pair of distinct items
        low, high = np.quantile(pairs, [0.001, 0.999])
        np.testing.assert_allclose(edge, low + (high - low) * np.arange(1, BUCKETS) / BUCKETS, atol=0.05)
    written = np.concatenate(samples.text_bucket.to_numpy())
    assert len(np.unique(written[written >= 0])) == BUCKETS  # every bucket in use


def brute_force(
    events: pd.DataFrame, vectors: dict, user: int, target: int, when: pd.Timestamp, edges: dict[str, np.ndarray]
) -> dict:
    """Every feature of one sample straight from the definitions, one position at a time."""
    history = events[(events.user_id == user) & (events.label == 1) & (events.event_time < when)]
    history = history.sort_values(["event_time", "item_id", "event_type"], ascending=False)
    items = history.item_id.tolist()[:L_LONG]
    seconds = [int(t.timestamp()) for t in history.event_time][:L]
    out = {
        "hist_len": min(len(items), L),
        "long_len": len(items),
        "hist_item_ids": (items[:L] + [0] * L)[:L],
        "hist_times": (seconds + [0] * L)[:L],
    }
    for modality, (ids, matrix) in vectors.items():
        lookup = {int(i): matrix[n].astype(np.float64) for n, i in enumerate(ids)}
        sims = [float(lookup[target] @ lookup[i]) if target in lookup and i in lookup else None for i in items]
        real = [(s, pos) for pos, s in enumerate(sims) if s is not None]

        def bucket(s: float) -> int:  # how many of the recorded boundaries are at or below s
            return int((edges[modality] <= np.float32(s)).sum())

        buckets = [bucket(s) for s, _ in real]
        counts = np.bincount(buckets, minlength=BUCKETS) if real else np.zeros(BUCKETS)
        best = sorted(real, key=lambda sp: (-sp[0], sp[1]))[:K]
        short = sims[:L] + [None] * (L - len(sims[:L]))
        out |= {
            f"{modality}_sim": [np.nan if s is None else s for s in short],
            f"{modality}_mask": [s is not None for s in short],
            f"{modality}_bucket": [-1 if s is None else bucket(s) for s in short],
            f"{modality}_hist": counts / max(len(real), 1),
            f"{modality}_hist_count": len(real),
            f"{modality}_topk_ids": [items[p] for _, p in best] + [0] * (K - len(best)),
            f"{modality}_topk_sims": [s for s, _ in best] + [np.nan] * (K - len(best)),
        }
    return out


def test_random_samples_negatives_included_equal_brute_force_from_the_tables(spark, built):
    _, lake, _, samples, _ = built
    events = read(spark, lake, "events")
    stored = lake.read(spark, "item_embeddings").toPandas()
    vectors = {m: (g.item_id.to_numpy(), np.stack(g.vector.to_numpy())) for m, g in stored.groupby("modality")}
    picked = pd.concat(
        [samples[~samples.is_negative].sample(20, random_state=1), samples[samples.is_negative].sample(10, random_state=1)]
    )
    for _, sample in picked.iterrows():
        expected = brute_force(events, vectors, sample.user_id, sample.item_id, sample.event_time, edges_of(lake))
        assert_same_features(sample, pd.Series(expected), expected.keys())


def test_rows_reconcile_and_negatives_are_real_items_that_existed_then(spark, built):
    cfg, lake, report, samples, _ = built
    events = read(spark, lake, "events")
    assert report.balanced and report.samples_written == len(samples) == len(events) + report.negatives
    assert samples.sample_id.is_unique
    first_seen = events.groupby("item_id").event_time.min()
    negatives = samples[samples.is_negative]
    positives = samples[~samples.is_negative & (samples.label == 1)]
    assert len(negatives) > len(positives)  # about two per positive; fewer only early on
    assert (negatives.label == 0).all() and (negatives.event_type == "negative").all()
    assert (first_seen.loc[negatives.item_id].to_numpy() < negatives.event_time.to_numpy()).all()
    source = negatives.sample_id.str.split(":").str[-1].astype(int)
    assert (source != negatives.item_id).all()
    assert (
        not negatives.duplicated(["user_id", "event_time", "item_id"]).any()
        or not negatives.assign(source=source).duplicated(["user_id", "event_time", "source", "item_id"]).any()
    )
    assert (
        negatives.groupby(["user_id", "event_time"]).size()
        <= 2
        * positives.groupby(["user_id", "event_time"]).size().reindex(negatives.groupby(["user_id", "event_time"]).size().index)
    ).all()


def test_temporal_split_is_recorded_with_its_rule(built):
    cfg, _, report, samples, _ = built
    expected = np.where(
        samples.event_time < pd.Timestamp("2024-01-08", tz="UTC"),
        "train",
        np.where(samples.event_time < pd.Timestamp("2024-01-10", tz="UTC"), "valid", "test"),
    )
    assert (samples.split == expected).all()
    assert set(samples.split_rule) == {"temporal(valid_from=2024-01-08,test_from=2024-01-10)"}
    assert report.splits == samples.split.value_counts().to_dict()


def test_user_sequences_hold_the_latest_history_with_vectors(spark, built):
    _, lake, _, _, vectors = built
    events = read(spark, lake, "events")
    rows = read(spark, lake, "user_sequences").set_index("user_id")
    clicks = events[events.label == 1]
    assert sorted(rows.index) == sorted(clicks.user_id.unique())
    image = dict(zip(vectors["image"][0].tolist(), vectors["image"][1], strict=True))
    for user, row in rows.iterrows():
        newest = clicks[clicks.user_id == user].sort_values(["event_time", "item_id"], ascending=False)
        mine = newest.head(L)
        assert list(row.hist_item_ids) == mine.item_id.tolist()
        assert list(row.long_hist_item_ids) == newest.item_id.head(L_LONG).tolist()
        assert row.as_of == events.event_time.max() and row.last_event_time == mine.event_time.iloc[0]
        for item, vector in zip(row.hist_item_ids, row.image_vectors, strict=True):
            if item in image:
                np.testing.assert_allclose(vector, image[item])
            else:
                assert vector is None


def test_a_rerun_leaves_both_tables_unchanged(spark, built):
    cfg, lake, _, samples, _ = built
    sequences_version = lake.version("user_sequences")
    again = build_features(spark, cfg, lake, progress=lambda _: None)
    assert again.commits[-1].committed is False  # user_sequences: no row changed
    assert lake.version("user_sequences") == sequences_version
    rerun = read(spark, lake, "samples").set_index("sample_id").sort_index()
    before = samples.set_index("sample_id").sort_index()
    pd.testing.assert_frame_equal(rerun.drop(columns=FLOAT_ARRAYS).astype(str), before.drop(columns=FLOAT_ARRAYS).astype(str))
    for column in FLOAT_ARRAYS:
        np.testing.assert_array_equal(np.stack(rerun[column]), np.stack(before[column]))


FLOAT_ARRAYS = [f"{m}_{s}" for m in MODALITIES for s in ("sim", "hist", "topk_sims")]


def test_a_user_sequences_table_of_an_earlier_schema_is_rebuilt_for_every_user(spark, tmp_path):
    cfg = make_config(tmp_path)
    lake = Lake(cfg.lake)
    events = random_events(seed=4, n=200)
    write_events(spark, lake, events)
    write_vectors(spark, lake, random_vectors(range(1, 81), {"text": 8, "image": 6, "fused": 14}))
    build_features(spark, cfg, lake, progress=lambda _: None)
    current = read(spark, lake, "user_sequences").set_index("user_id").sort_index()
    # as an earlier version wrote it: without long_hist_item_ids
    lake.write(lake.read(spark, "user_sequences").drop("long_hist_item_ids"), "earlier_sequences")
    shutil.rmtree(lake.uri("user_sequences"))
    lake.write(lake.read(spark, "earlier_sequences"), "user_sequences")
    said = []
    build_features(spark, cfg, lake, DateScope(date=events.event_time.max().date()), progress=said.append)
    assert any("lacks the columns ['long_hist_item_ids']" in line for line in said)
    rebuilt = read(spark, lake, "user_sequences").set_index("user_id").sort_index()
    assert list(rebuilt.index) == list(current.index)  # every user, not only the day's
    assert [list(v) for v in rebuilt.long_hist_item_ids] == [list(v) for v in current.long_hist_item_ids]


def test_no_leakage_future_events_never_change_a_sample(spark, tmp_path):
    """Item 3 is the target's twin: were any event at or after the sample's time to leak into its
    history, the similarity features would show a similarity of 1."""
    cfg = make_config(tmp_path, encoder_versions={m: VERSIONS[m] for m in ("text", "fused")})
    lake = Lake(cfg.lake)
    at = DAY0 + pd.Timedelta(hours=12)
    past = pd.DataFrame(
        {
            "user_id": [1, 1, 1],
            "item_id": [1, 2, 5],
            "event_time": [at - pd.Timedelta(hours=2), at - pd.Timedelta(hours=1), at],
            "label": [1, 1, 0],
        }
    )
    future = pd.DataFrame({"user_id": [1, 1], "item_id": [3, 3], "event_time": [at, at + pd.Timedelta(days=1)], "label": [1, 1]})
    target = np.array([1.0, 0.0])
    vectors = {
        m: (np.array([1, 2, 3, 5]), np.array([[0.0, 1.0], [0.6, 0.8], target, target], np.float32)) for m in ("text", "fused")
    }
    write_vectors(spark, lake, vectors)
    write_events(spark, lake, past)
    build_features(spark, cfg, lake, progress=lambda _: None)
    without_future = read(spark, lake, "samples").set_index("sample_id")
    write_events(spark, lake, pd.concat([past, future]))
    build_features(spark, cfg, lake, progress=lambda _: None)
    with_future = read(spark, lake, "samples").set_index("sample_id")

    sample = with_future.loc[f"1:5:{int(at.timestamp())}:rating"]
    assert list(sample.hist_item_ids) == [2, 1, 0, 0, 0]
    np.testing.assert_allclose(sample.text_sim[:2], [0.6, 0.0], atol=1e-6)
    assert 3 not in set(sample.text_topk_ids) and np.nanmax(sample.fused_topk_sims) < 0.7
    columns = [c for c in with_future.columns if c not in ("split",)]
    assert_same_features(with_future.loc[sample.name], without_future.loc[sample.name], columns)
    # the twin clicked at the same second is history for the later sample only
    later = with_future.loc[f"1:3:{int((at + pd.Timedelta(days=1)).timestamp())}:rating"]
    assert list(later.hist_item_ids[:3]) == [3, 2, 1]


def test_a_daily_build_equals_the_full_build_and_keeps_earlier_days(spark, tmp_path):
    events = random_events(seed=4, n=500, days=6)
    last_day = (DAY0 + pd.Timedelta(days=5)).date()
    vectors = random_vectors(range(1, 81), {"text": 8, "image": 6, "fused": 14}, seed=2)

    full_cfg = make_config(tmp_path / "full")
    full_lake = Lake(full_cfg.lake)
    write_vectors(spark, full_lake, vectors)
    write_events(spark, full_lake, events)
    build_features(spark, full_cfg, full_lake, progress=lambda _: None)
    expected = read(spark, full_lake, "samples").set_index("sample_id").sort_index()

    cfg = make_config(tmp_path / "daily")
    lake = Lake(cfg.lake)
    write_vectors(spark, lake, vectors)
    earlier = events[events.event_time.dt.date < last_day]
    write_events(spark, lake, earlier)
    build_features(spark, cfg, lake, progress=lambda _: None)
    before = read(spark, lake, "user_sequences").set_index("user_id")
    first_files = {f for f in lake.delta("samples").file_uris()}
    write_events(spark, lake, events[events.event_time.dt.date == last_day], mode="overwrite", replace_date=last_day)
    report = build_features(spark, cfg, lake, DateScope(date=last_day), progress=lambda _: None)

    assert report.events == (events.event_time.dt.date == last_day).sum()
    actual = read(spark, lake, "samples").set_index("sample_id").sort_index()
    assert list(actual.index) == list(expected.index)
    for sample_id in actual.index:
        assert_same_features(actual.loc[sample_id], expected.loc[sample_id], expected.columns)
    assert first_files <= set(lake.delta("samples").file_uris())  # earlier days' files untouched

    after = read(spark, lake, "user_sequences").set_index("user_id")
    clicked_last_day = set(events[(events.event_time.dt.date == last_day) & (events.label == 1)].user_id)
    assert report.users_updated == len(clicked_last_day)
    changed = {u for u in after.index if u not in before.index or list(after.hist_item_ids[u]) != list(before.hist_item_ids[u])}
    assert changed <= clicked_last_day
    time_travel = read(spark, lake, "user_sequences", version=lake.version("user_sequences") - 1).set_index("user_id")
    assert all(list(time_travel.hist_item_ids[u]) == list(before.hist_item_ids[u]) for u in before.index)


def test_leave_last_out_puts_each_users_last_event_in_test(spark, tmp_path):
    cfg = make_config(tmp_path, split={"method": "leave_last_out"}, encoder_versions={"text": VERSIONS["text"]})
    lake = Lake(cfg.lake)
    events = random_events(seed=5, n=200, days=3)
    write_vectors(spark, lake, random_vectors(range(1, 81), {"text": 4}))
    write_events(spark, lake, events)
    build_features(spark, cfg, lake, progress=lambda _: None)
    samples = read(spark, lake, "samples").sort_values(["event_time", "item_id"])
    last = samples.groupby("user_id").tail(1)
    assert set(last.split) == {"test"} and (samples.split == "test").sum() == samples.user_id.nunique()
    second = samples.drop(last.index).groupby("user_id").tail(1)
    assert set(second.split) == {"valid"}
    assert samples.image_mask.map(lambda m: not any(m)).all()  # no image vectors: every position masked
    with pytest.raises(FeaturesError, match="leave_last_out split needs a full build"):
        build_features(spark, cfg, lake, DateScope(date=dt.date(2024, 1, 2)), progress=lambda _: None)


def test_missing_inputs_and_bad_settings_say_what_to_do(spark, tmp_path):
    cfg = make_config(tmp_path)
    with pytest.raises(FeaturesError, match="run `dmf ingest` first"):
        build_features(spark, cfg, Lake(cfg.lake), progress=lambda _: None)
    with pytest.raises(ConfigError, match="history_length .* must not exceed long_history_length"):
        make_config(tmp_path, history_length=50, long_history_length=20)
    with pytest.raises(ConfigError, match="temporal split needs valid_from and test_from"):
        make_config(tmp_path, split={"method": "temporal"})
