"""The evaluation protocol (no Spark): folds from config for any time range, no leakage from the
future, point-in-time statistics, and a content path that scores cold items where IDs cannot."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from models.batch import CTRBatch
from models.config import TrainingSpec
from models.dmf import DMF
from models.layers import ModelConfig
from models.protocol import (
    TEST,
    TRAIN,
    VALID,
    EvaluationConfig,
    Fold,
    PerUserConfig,
    RollingConfig,
    resolve_folds,
)
from models.train import fit, predict, seed_everything


def a_few_months(n: int = 3_000, users: int = 400, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Rows of a data set spanning March to June 2031 (nothing like MovieLens's 1996-2018)."""
    rng = np.random.default_rng(seed)
    start = int(dt.datetime(2031, 3, 1, tzinfo=dt.UTC).timestamp())
    return rng.integers(1, users + 1, n), start + rng.integers(0, 92 * 86_400, n)


@pytest.mark.parametrize(
    "rolling",
    [
        RollingConfig(boundaries=(0.55, 0.7, 0.85), min_test_users=50),
        RollingConfig(boundaries=(0.55, 0.7, 0.85), fraction_of="time", min_test_users=50),
        RollingConfig(boundaries=(dt.date(2031, 4, 10), dt.date(2031, 5, 1), dt.date(2031, 5, 20)), min_test_users=50),
    ],
    ids=["row-fractions", "time-fractions", "dates"],
)
def test_rolling_folds_come_from_config_alone_for_any_time_range(rolling):
    users, seconds = a_few_months()
    folds = resolve_folds(EvaluationConfig(rolling=rolling), users, seconds)
    assert [f.name for f in folds] == ["fold1", "fold2"]
    for fold in folds:
        codes = fold.assign(users, seconds)
        assert {TRAIN, VALID, TEST} <= set(codes)
        # no leakage: every test (and valid) row is later than every training row of its fold
        assert seconds[codes == TEST].min() > seconds[codes == TRAIN].max()
        assert seconds[codes == VALID].min() > seconds[codes == TRAIN].max()
    first, second = (f.assign(users, seconds) for f in folds)
    assert ((first == TEST) == (second == VALID)).all()  # expanding window: fold 1's test is fold 2's valid
    assert (second == TRAIN).sum() > (first == TRAIN).sum()
    if rolling.fraction_of == "rows" and isinstance(rolling.boundaries[0], float):
        assert abs((second == TEST).mean() - 0.15) < 0.01


def test_a_window_too_small_or_a_misordered_config_is_a_clear_error():
    users, seconds = a_few_months(users=30)
    with pytest.raises(ValueError, match=r"fold1's valid window \[2031-.*\) holds 30 users, fewer than min_test_users"):
        resolve_folds(EvaluationConfig(rolling=RollingConfig(boundaries=(0.6, 0.7, 0.8))), users, seconds)
    with pytest.raises(ValidationError, match="increase strictly"):
        RollingConfig(boundaries=(0.7, 0.6, 0.8))
    with pytest.raises(ValidationError, match="all dates or all fractions"):
        RollingConfig(boundaries=(0.5, dt.date(2031, 5, 1), 0.8))
    with pytest.raises(ValueError, match="no training rows before 2031-01-01"):
        resolve_folds(
            EvaluationConfig(
                rolling=RollingConfig(
                    boundaries=(dt.date(2031, 1, 1), dt.date(2031, 5, 1), dt.date(2031, 5, 20)), min_test_users=1
                )
            ),
            users,
            seconds,
        )


def test_per_user_split_gives_each_user_their_newest_rows_as_test():
    users, seconds = a_few_months()
    (fold,) = resolve_folds(
        EvaluationConfig(protocol="per_user", per_user=PerUserConfig(valid_fraction=0.2, test_fraction=0.2)), users, seconds
    )
    codes = fold.assign(users, seconds)
    assert not fold.global_timeline
    for user in np.unique(users)[:50]:
        mine = users == user
        if mine.sum() >= 3:
            assert seconds[mine & (codes == TEST)].min() > seconds[mine & (codes == TRAIN)].max()
            assert (codes[mine] == TEST).sum() >= 1


def test_a_fold_that_tests_on_rows_older_than_its_training_rows_is_refused(tmp_path):
    from models.experiment import Evaluation

    users, seconds = a_few_months()

    class Leaky(Fold):  # a broken protocol: a random split on the global timeline
        def assign(self, user_ids, times):
            return np.random.default_rng(0).choice([TRAIN, VALID, TEST], len(times)).astype(np.int8)

    evaluation = Evaluation.__new__(Evaluation)  # only the rows are needed, not the tables
    evaluation.index = type("Index", (), {"user_ids": users, "seconds": seconds})()
    evaluation._rows = {}
    evaluation.index.prior_stats = lambda fold: None
    with pytest.raises(AssertionError, match="leaks the future"):
        evaluation.check_no_leakage(Leaky("leaky", (1, 2, 3)))
    for fold in resolve_folds(
        EvaluationConfig(rolling=RollingConfig(boundaries=(0.5, 0.7, 0.85), min_test_users=1)), users, seconds
    ):
        evaluation.check_no_leakage(fold)


def cold_content_batches(items: np.ndarray, vectors: np.ndarray, n: int, seed: int) -> list[CTRBatch]:
    """Clicks follow the target's content alone (a planted direction); histories are empty. Targets
    are drawn from `items`; for cold evaluation none of them has a trained ID (index 0)."""
    rng = np.random.default_rng(seed)
    direction = np.ones(vectors.shape[1]) / np.sqrt(vectors.shape[1])
    batches = []
    for _ in range(n // 256):
        targets = rng.choice(items, 256)
        p = 1 / (1 + np.exp(-4 * vectors[targets] @ direction))
        empty = torch.zeros(256, 3, dtype=torch.bool)
        batches.append(
            CTRBatch(
                user_ids=torch.arange(256),
                target_ids=torch.from_numpy(np.where(targets < 100, targets, 0)),
                hist_ids=torch.zeros(256, 3, dtype=torch.long),
                hist_mask=empty,
                buckets={"fused": torch.full((256, 3), -1)},
                sims={"fused": torch.zeros(256, 3)},
                sim_hist={"fused": torch.zeros(256, 4)},
                target_vectors=torch.from_numpy(vectors[targets]).float(),
                labels=torch.from_numpy((rng.random(256) < p).astype(np.float32)),
            )
        )
    return batches


@pytest.mark.parametrize("target_content", [True, False])
def test_the_content_path_scores_cold_items_where_ids_cannot(target_content):
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(200, 8))
    warm, cold = np.arange(1, 100), np.arange(100, 200)  # cold items never appear in training
    cfg = ModelConfig(
        vocab_size=100,
        vector_dim=8,
        modalities=("fused",),
        buckets=4,
        embedding_dim=8,
        attention_dim=8,
        mlp=(16,),
        use_modality_path=False,
        target_content=target_content,
    )
    seed_everything(0)
    model = DMF(cfg)
    train, valid = cold_content_batches(warm, vectors, 6_000, 1), cold_content_batches(warm, vectors, 1_000, 2)
    fit(model, lambda: train, lambda: valid, TrainingSpec(epochs=6, learning_rate=5e-3, patience=6))
    cold_auc = predict(model, cold_content_batches(cold, vectors, 3_000, 3)).metrics()["auc"]
    if target_content:
        assert cold_auc > 0.75
    else:  # every cold target is the shared unknown ID: one score for all of them
        assert abs(cold_auc - 0.5) < 0.03


def test_point_in_time_statistics_count_only_strictly_earlier_events(tmp_path):
    from models.prior_stats import SMOOTHING, PriorStats

    rng = np.random.default_rng(0)
    users, items = rng.integers(0, 20, 1_000), rng.integers(0, 40, 1_000)
    seconds, labels = rng.integers(0, 50, 1_000), rng.integers(0, 2, 1_000)  # many equal times
    stats = PriorStats.build(users, items, seconds, labels, 0.4)
    q_users, q_items, q_times = rng.integers(0, 25, 300), rng.integers(0, 45, 300), rng.integers(-5, 60, 300)
    features = stats.features(q_users, q_items, q_times)
    for k in range(300):
        for column, ids, query in ((0, users, q_users[k]), (2, items, q_items[k])):
            earlier = (ids == query) & (seconds < q_times[k])
            assert features[k, column] == pytest.approx(np.log1p(earlier.sum()))
            assert features[k, column + 1] == pytest.approx(
                (labels[earlier].sum() + SMOOTHING * 0.4) / (earlier.sum() + SMOOTHING)
            )
    stats.save(tmp_path / "stats.npz")  # as logged with a model, for serving
    np.testing.assert_array_equal(PriorStats.load(tmp_path / "stats.npz").features(q_users, q_items, q_times), features)


@pytest.mark.e2e
def test_another_movielens_data_set_over_a_few_months_gets_its_folds_from_config_alone(spark, tmp_path):
    """A MovieLens-format folder whose ratings span February to May 2003, through ingest and the
    feature job: the fractional boundaries of the config resolve to dates inside its own range."""
    import json

    from dmf_features.features.stage import build_features
    from dmf_features.infra.config import load_config
    from dmf_features.infra.lake import Lake
    from dmf_features.ingest import ingest
    from dmf_features.testing.feature_inputs import VERSIONS, random_vectors, write_vectors
    from models.experiment import DataSource, Evaluation, baseline_run
    from models.tracking import Tracker

    data = tmp_path / "ml-2003"
    data.mkdir()
    (data / "movies.csv").write_text(
        "movieId,title,genres\n" + "".join(f"{i},Movie {i} ({1990 + i % 10}),Drama\n" for i in range(1, 31))
    )
    rng = np.random.default_rng(4)
    start = int(dt.datetime(2003, 2, 1, tzinfo=dt.UTC).timestamp())
    pairs = {(int(u), int(i)) for u, i in zip(rng.integers(1, 61, 900), rng.integers(1, 31, 900), strict=True)}
    (data / "ratings.csv").write_text(
        "userId,movieId,rating,timestamp\n"
        + "".join(
            f"{u},{i},{rng.choice([1.0, 2.5, 4.0, 5.0])},{start + int(rng.integers(0, 88 * 86_400))}\n" for u, i in sorted(pairs)
        )
    )
    config = tmp_path / "c.yaml"
    config.write_text(
        json.dumps(
            {
                "spark": {"master": "local[2]", "shuffle_partitions": 2},
                "lake": {"uri": str(tmp_path / "lake")},
                "source": {"kind": "movielens", "movielens": {"path": str(data), "tags": False}},
                "features": {
                    "history_length": 4,
                    "long_history_length": 8,
                    "buckets": 6,
                    "top_k": 2,
                    "encoder_versions": VERSIONS,
                },
                "evaluation": {"rolling": {"boundaries": [0.5, 0.7, 0.85], "min_test_users": 20}},
            }
        )
    )
    cfg = load_config(config)
    lake = Lake(cfg.lake)
    ingest(spark, cfg, lake, progress=lambda _: None)
    write_vectors(spark, lake, random_vectors(range(1, 31), {"text": 4, "image": 3, "fused": 7}))
    build_features(spark, cfg, lake, progress=lambda _: None)
    evaluation = Evaluation(
        DataSource(lake.uri("samples"), lake.uri("item_embeddings"), evaluation=cfg.evaluation), progress=lambda _: None
    )
    assert [f.name for f in evaluation.folds] == ["fold1", "fold2"]
    first, last = dt.datetime(2003, 2, 1, tzinfo=dt.UTC), dt.datetime(2003, 5, 1, tzinfo=dt.UTC)
    for fold in evaluation.folds:
        assert all(first < dt.datetime.fromtimestamp(c, dt.UTC) <= last for c in fold.cutoffs)
        evaluation.check_no_leakage(fold)
    result = baseline_run(
        "item_mean", evaluation, Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "x"), 5, progress=lambda _: None
    )
    assert result.metrics["test_samples"] == len(evaluation.test_rows) > 0.25 * len(pairs)
