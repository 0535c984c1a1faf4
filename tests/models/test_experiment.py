"""Reading `samples` and `item_embeddings` at a pinned Delta version into CTRBatches (no Spark in
models/; Spark only builds the tables here)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import torch

from dmf_features.testing.feature_inputs import VERSIONS
from models.config import load_model_spec
from models.data import (
    ItemVectorTable,
    PinnedTable,
    Vocabulary,
    sample_columns,
    to_batch,
)
from models.din import DINMultimodal
from models.dmf import DMF
from models.layers import ModelConfig
from models.protocol import Fold
from models.serving import DecoupledScorer, Items, request_features, request_history
from models.splits import SampleIndex, SplitReader, training_items
from tests.models.conftest import evaluation

pytestmark = pytest.mark.e2e


def first_fold(spark_rows) -> tuple[Fold, pd.DataFrame]:
    """A fold training on the older half of the rows, and those rows."""
    seconds = (
        spark_rows.event_time.astype("int64") // 10**9
        if spark_rows.event_time.dt.tz is None
        else spark_rows.event_time.dt.tz_convert(None).astype("int64") // 10**9
    )
    cut = int(np.median(seconds))
    return Fold("f", (cut, cut + 86_400, cut + 2 * 86_400)), spark_rows[seconds < cut]


def test_batches_carry_the_tables_values_with_vectors_looked_up(tables):
    lake, spark_rows, vectors = tables
    samples = PinnedTable.open(lake.uri("samples"))
    lineage = samples.lineage()
    assert lineage.item_vectors == VERSIONS and lineage.events_version == 0
    assert lineage.history_length == 4
    fused = ItemVectorTable.load(
        PinnedTable.open(lake.uri("item_embeddings"), lineage.item_embeddings_version), "fused", lineage.item_vectors["fused"]
    )
    np.testing.assert_array_equal(fused.ids, vectors["fused"][0])
    vocabulary = Vocabulary(np.array([5, 6, 7]))
    seen = 0
    for records in samples.batches([*sample_columns(("text", "image", "fused")), "sample_id"], 16):
        batch = to_batch(records, vocabulary, ("text", "image", "fused"), fused, hist_vectors=True)
        for row, sample_id in enumerate(records.column("sample_id").to_pylist()):
            expected = spark_rows.loc[sample_id]
            length = expected.hist_len
            assert batch.hist_mask[row].sum() == length
            raw = np.asarray(expected.hist_item_ids[:length])
            np.testing.assert_array_equal(batch.hist_ids[row, :length].numpy(), vocabulary.index(raw))
            np.testing.assert_array_equal(batch.buckets["image"][row].numpy(), expected.image_bucket)
            np.testing.assert_allclose(batch.sims["text"][row].numpy(), np.nan_to_num(expected.text_sim))
            np.testing.assert_allclose(
                batch.target_vectors[row].numpy(), vectors["fused"][1][list(vectors["fused"][0]).index(expected.item_id)]
            )
            np.testing.assert_array_equal(batch.hist_vectors[batch.hist_vector_rows[row, :length]].numpy(), fused.lookup(raw))
        seen += len(batch)
    assert seen == len(spark_rows)


def test_training_items_count_train_targets_and_leave_rare_items_unknown(tables):
    lake, spark_rows, _ = tables
    fold, train = first_fold(spark_rows)
    counts = train.item_id.value_counts()
    items = training_items(SampleIndex.read(PinnedTable.open(lake.uri("samples"))), fold, min_count=3)
    assert items.rows == len(train) and items.target_counts == counts.to_dict()
    frequent = np.sort(counts[counts >= 3].index.to_numpy())
    assert 0 < len(frequent) < len(counts)  # the fixture has both kinds
    np.testing.assert_array_equal(items.vocabulary.ids, frequent)
    rare = counts[counts < 3].index.to_numpy()
    assert (items.vocabulary.index(rare) == 0).all() and (items.vocabulary.index(frequent) > 0).all()


@pytest.mark.parametrize("cache_bytes", [0, 2 << 30], ids=["streamed", "cached"])
def test_a_training_pass_gives_every_row_once_in_full_batches_shuffled_per_epoch(tables, cache_bytes):
    lake, spark_rows, _ = tables
    samples = PinnedTable.open(lake.uri("samples"))
    fold, train = first_fold(spark_rows)
    reader = SplitReader(
        samples, fold, "train", 5, Vocabulary(np.arange(1, 30)), ("text",), None, shuffle_seed=0, cache_bytes=cache_bytes
    )
    assert len(train) > 8 * 5  # more than one buffer of rows, so rows carry across buffers
    orders = []
    for _ in range(3):
        batches = list(reader)
        assert all(len(b) == 5 for b in batches[:-1]) and 0 < len(batches[-1]) <= 5
        pairs = [(int(u), int(i)) for b in batches for u, i in zip(b.user_ids, b.item_ids, strict=True)]
        assert sorted(pairs) == sorted(zip(train.user_id, train.item_id, strict=True))
        orders.append(pairs)
    assert orders[0] != orders[1] != orders[2]
    assert (reader._cached is None) == (cache_bytes == 0)


def test_models_run_on_loaded_batches_and_unknown_items_map_to_zero(tables):
    lake, _, _ = tables
    samples = PinnedTable.open(lake.uri("samples"), version=0)
    fused = ItemVectorTable.load(PinnedTable.open(lake.uri("item_embeddings")), "fused", VERSIONS["fused"])
    records = next(samples.batches(sample_columns(("text", "image", "fused")), 64))
    batch = to_batch(records, Vocabulary(np.array([], np.int64)), ("text", "image", "fused"), fused, hist_vectors=True)
    assert batch.target_ids.abs().sum() == 0 and batch.hist_ids.abs().sum() == 0
    cfg = ModelConfig(vocab_size=1, vector_dim=fused.dim, buckets=6)
    for model in (DMF(cfg), DINMultimodal(cfg)):
        assert model(batch).shape == (records.num_rows,)
    with pytest.raises(LookupError, match="no image vectors of nope"):
        ItemVectorTable.load(PinnedTable.open(lake.uri("item_embeddings")), "image", "nope")


def test_a_training_run_is_tracked_in_mlflow_with_lineage_plots_and_a_registered_model(tables, tmp_path):
    import mlflow

    from models.experiment import train_run
    from models.tracking import Tracker

    lake, spark_rows, _ = tables
    spec = load_model_spec("dmf").model_copy(
        update={"training": load_model_spec("dmf").training.model_copy(update={"epochs": 2, "batch_size": 32, "patience": 5})}
    )
    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "test-experiment")
    result = train_run(spec, 0, evaluation(lake), tracker, progress=lambda _: None)
    run = mlflow.get_run(result.run_id)
    assert run.data.tags["lineage.samples_version"] == "0"
    assert run.data.tags["lineage.item_vectors.fused"] == VERSIONS["fused"]
    assert run.data.params["architecture.fusion"] == "gate" and run.data.params["features.buckets"] == "6"
    assert run.data.params["protocol.fold1"].startswith("fold1: train < ")
    for metric in (
        "test_auc",
        "test_logloss",
        "fold1.valid_auc",
        "fold2.train_auc",
        "fold2.test_auc",
        "fold1.train_samples_per_s",
        "test_cold_samples",
        "item_mean_test_auc",
    ):
        assert metric in run.data.metrics
    for fold in ("fold1", "fold2"):
        history = mlflow.tracking.MlflowClient().get_metric_history(result.run_id, f"{fold}.valid_auc")
        assert [m.step for m in history] == [1, 2]
    artifacts = {a.path for a in mlflow.tracking.MlflowClient().list_artifacts(result.run_id, "evaluation")}
    assert {"evaluation/roc.png", "evaluation/calibration.png", "evaluation/results.csv"} <= artifacts
    version = mlflow.tracking.MlflowClient().search_model_versions("name='dmf'")[0]
    loaded = mlflow.pyfunc.load_model(f"models:/dmf/{version.version}")
    rows = spark_rows.reset_index().head(6)
    probabilities = loaded.predict(rows)
    assert probabilities.shape == (6,) and ((probabilities > 0) & (probabilities < 1)).all()


def test_compare_fits_baselines_and_every_spec_per_seed_with_paired_intervals(tables, tmp_path):
    import mlflow

    from models.experiment import compare
    from models.tracking import Tracker

    lake, _, _ = tables

    def quick(name: str):
        spec = load_model_spec(name)
        return spec.model_copy(update={"training": spec.training.model_copy(update={"epochs": 1, "batch_size": 32})})

    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "compare-experiment")
    result = compare(
        [quick("din"), quick("dmf")],
        ["item_mean", "lightgbm"],
        evaluation(lake),
        tracker,
        tmp_path / "reports",
        seeds=(0, 1),
        progress=lambda _: None,
    )
    table = result["subsets"]["all"]
    assert list(table["models"]) == ["item_mean", "lightgbm", "din", "dmf"] and result["reference"] == "dmf"
    assert result["seeds"] == {"item_mean": [0], "lightgbm": [0], "din": [0, 1], "dmf": [0, 1]}
    assert set(table["differences"]) == {"item_mean", "lightgbm", "din"}
    for interval in (table["models"]["dmf"]["auc"], table["differences"]["din"]["gauc"]):
        assert interval["low"] <= interval["estimate"] <= interval["high"]
    assert set(result["subsets"]) == {"all", "cold", "rare"}
    written = {p.suffix for p in (tmp_path / "reports").glob("compare-*")}
    assert written == {".json", ".md", ".png"}
    assert json.loads(next((tmp_path / "reports").glob("compare-*.json")).read_text()) == result
    runs = mlflow.search_runs(experiment_names=["compare-experiment"], output_format="list")
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    assert len(parents) == 1 and len(children) == 6
    assert sorted(r.info.run_name for r in children) == [
        "din-seed0",
        "din-seed1",
        "dmf-seed0",
        "dmf-seed1",
        "item_mean",
        "lightgbm",
    ]
    assert {"dmf.all_auc_estimate", "lightgbm.all_auc_low", "din.rare_logloss_high"} <= set(parents[0].data.metrics)


def test_tune_chooses_on_validation_and_logs_every_trial(tables, tmp_path):
    from models.experiment import tune, with_settings
    from models.tracking import Tracker

    lake, _, _ = tables
    spec = load_model_spec("dmf")
    spec = with_settings(spec, {"training.epochs": 1, "training.batch_size": 32})
    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "tune-experiment")
    best, trials = tune(spec, {"architecture.dropout": [0.0, 0.5]}, evaluation(lake), tracker, progress=lambda _: None)
    assert [t["architecture.dropout"] for t in trials] in ([0.0, 0.5], [0.5, 0.0]) and len(trials) == 2
    assert trials[0]["valid_auc_mean"] >= trials[1]["valid_auc_mean"]
    assert best.architecture.dropout == trials[0]["architecture.dropout"] and best.training.epochs == 1
    with pytest.raises(ValueError, match="no setting 'architecture.dropuot'"):
        with_settings(spec, {"architecture.dropuot": 0.1})


def test_scoring_a_user_sequences_row_finds_the_samples_features_and_the_training_scores(tables):
    """A sample later than the user's newest behaviour has exactly the row's history: given the row
    and that sample's target as a candidate, the scorer must find the features the job wrote and
    the score the model gives the sample's row."""
    lake, spark_rows, _ = tables
    samples = PinnedTable.open(lake.uri("samples"))
    lineage = samples.lineage()
    embeddings = PinnedTable.open(lake.uri("item_embeddings"), lineage.item_embeddings_version)
    catalog = {m: ItemVectorTable.load(embeddings, m, v) for m, v in lineage.item_vectors.items()}
    sequences = PinnedTable.open(lake.uri("user_sequences"))
    rows = pa.Table.from_batches(list(sequences.batches(["user_id", "last_event_time", "long_hist_item_ids"], 64)))
    vocabulary, length = Vocabulary(np.arange(1, 30)), lineage.history_length
    torch.manual_seed(0)
    model = DMF(ModelConfig(vocab_size=len(vocabulary), vector_dim=catalog["fused"].dim, buckets=lineage.buckets)).eval()
    scorer = DecoupledScorer(model, lineage.bucket_edges, length)
    checked = 0
    for row in rows.to_pylist():
        newest = pd.Timestamp(row["last_event_time"]).tz_convert(None)
        later = spark_rows[(spark_rows.user_id == row["user_id"]) & (spark_rows.event_time > newest)]
        if later.empty:
            continue
        history = request_history(row, vocabulary, catalog)
        candidates = Items.from_catalog(later.item_id.to_numpy(), vocabulary, catalog)
        features = request_features(history, candidates, scorer.edges, length, lineage.top_k)
        for m in ("text", "image", "fused"):
            short = later.hist_len.max()
            np.testing.assert_array_equal(features.buckets[m].numpy(), np.stack(later[f"{m}_bucket"])[:, :short])
            np.testing.assert_allclose(features.sims[m].numpy(), np.nan_to_num(np.stack(later[f"{m}_sim"]))[:, :short], atol=1e-6)
            np.testing.assert_allclose(features.sim_hist[m].numpy(), np.stack(later[f"{m}_hist"]), atol=1e-6)
            np.testing.assert_allclose(features.sim_top[m][:, 0].numpy(), np.log1p(later[f"{m}_hist_count"]), atol=1e-6)
            np.testing.assert_allclose(
                features.sim_top[m][:, 1:].numpy(), np.nan_to_num(np.stack(later[f"{m}_topk_sims"])), atol=1e-6
            )
        records = pa.RecordBatch.from_pandas(later[sample_columns(("text", "image", "fused"))], preserve_index=False)
        with torch.no_grad():
            trained = model(to_batch(records, vocabulary, ("text", "image", "fused"), catalog["fused"]))
        torch.testing.assert_close(scorer.score(history, candidates), trained, rtol=0, atol=1e-5)
        checked += len(later)
    assert checked >= 3


def test_a_missing_table_or_version_is_a_clear_error(tables, tmp_path):
    lake, _, _ = tables
    with pytest.raises(LookupError, match=r"samples has no version 99 \(the latest is 0\)"):
        PinnedTable.open(lake.uri("samples"), version=99)
    with pytest.raises(LookupError, match="there is no Delta table at .*: build samples with `dmf features`"):
        evaluation(lake, tmp_path)


def test_recommend_scores_the_unseen_catalog_for_a_user_with_the_registered_model(tables, tmp_path):
    from models.experiment import train_run
    from models.recommend import recommend
    from models.tracking import Tracker

    lake, _, vectors = tables
    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "recommend-experiment")
    for name in ("dmf", "din"):
        spec = load_model_spec(name)
        spec = spec.model_copy(update={"training": spec.training.model_copy(update={"epochs": 1, "batch_size": 32})})
        train_run(spec, 0, evaluation(lake), tracker, lambda _: None)
    sequences = pa.Table.from_batches(
        list(PinnedTable.open(lake.uri("user_sequences")).batches(["user_id", "long_hist_item_ids"], 64))
    ).to_pylist()
    user = sequences[0]
    best = recommend("models:/dmf/latest", str(lake.root), user["user_id"], k=5)
    probabilities = [r.probability for r in best]
    assert len(best) == 5 and probabilities == sorted(probabilities, reverse=True)
    assert all(0 < p < 1 for p in probabilities)
    unseen = set(vectors["fused"][0].tolist()) - set(user["long_hist_item_ids"])
    assert {r.item_id for r in best} <= unseen
    everything = recommend("models:/dmf/latest", str(lake.root), user["user_id"], k=1_000)
    assert {r.item_id for r in everything} == unseen and everything[:5] == best
    with pytest.raises(LookupError, match="is a DIN: the scorers serve DMF"):
        recommend("models:/din/latest", str(lake.root), user["user_id"])
    with pytest.raises(LookupError, match="user 999 has no row in user_sequences"):
        recommend("models:/dmf/latest", str(lake.root), 999)
