"""The alignment stage end to end on a tiny lake (real Spark, Delta and the real feature job)."""

import datetime as dt
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bench.model_quality import parse_args, record
from dmf_features.alignment import align_embeddings, aligned_versions
from dmf_features.cli import main
from dmf_features.features.stage import FeaturesError, build_features
from dmf_features.infra.config import load_config
from dmf_features.infra.lake import Lake, spark_schema
from dmf_features.schemas import ITEM_EMBEDDINGS
from dmf_features.testing.delta_rows import table_dicts
from dmf_features.testing.feature_inputs import VERSIONS, random_vectors, write_events
from models.config import load_model_spec
from models.data import PinnedTable
from models.experiment import compare, open_training, row_order

pytestmark = pytest.mark.e2e

SMALL = [
    "alignment.epochs=2",
    "alignment.dim=8",
    "alignment.hidden=16",
    "alignment.sampled_negatives=16",
    "alignment.batch_size=32",
    "alignment.heldout_fraction=0.2",
    "alignment.max_gap_days=5",
]


@pytest.fixture
def tiny(tiny_lake):
    cfg = load_config(tiny_lake, SMALL)
    return cfg, Lake(cfg.lake)


def _aligned(lake: Lake) -> pd.DataFrame:
    rows = pd.DataFrame(table_dicts(lake.uri("item_embeddings"))).drop(columns="embedded_at")
    return rows[rows.encoder.str.startswith("c-sft")].sort_values(["modality", "item_id"]).reset_index(drop=True)


def _events(lake: Lake) -> pd.DataFrame:
    return pd.DataFrame(table_dicts(lake.uri("events"))).drop(columns="date")


def test_every_item_gets_an_aligned_vector_once(spark, tiny):
    cfg, lake = tiny
    report = align_embeddings(spark, cfg, lake, progress=lambda _: None)
    aligned = _aligned(lake)
    frozen = pd.DataFrame(table_dicts(lake.uri("item_embeddings")))
    frozen = frozen[~frozen.encoder.str.startswith("c-sft")]
    for m in report.modalities:
        # every item with a frozen vector, cold ones (in no pair) included; unit length, the head's width
        assert set(aligned[aligned.modality == m.modality].item_id) == set(frozen[frozen.modality == m.modality].item_id)
        assert m.version.startswith("c-sft:") and m.version.endswith(f"({VERSIONS[m.modality]})")
        assert m.trained and m.written == m.items and m.pairs > 0
    norms = np.linalg.norm(np.stack(aligned.vector.to_list()), axis=1)
    np.testing.assert_allclose(norms, 1.0, atol=1e-5)
    assert set(aligned.dim) == {8}
    manifest = json.loads(open(f"{lake.root}/_alignment/latest.json").read())
    assert manifest["events_version"] == lake.complete_version("events")
    assert {m: e["parent"] for m, e in manifest["modalities"].items()} == VERSIONS
    assert aligned_versions(lake.root) == {m.modality: m.version for m in report.modalities}

    again = align_embeddings(spark, cfg, lake, progress=lambda _: None)  # same inputs: same versions, nothing written
    assert again.commit is None and [m.version for m in again.modalities] == [m.version for m in report.modalities]
    assert len(_aligned(lake)) == len(aligned)

    # a new item (no behaviour yet) gets vectors of the same versions from the saved heads, and nothing else changes
    new_item = random_vectors([31], {"text": 4, "image": 3, "fused": 7}, seed=5)
    rows = [
        (31, m, "test", VERSIONS[m], "h31", len(matrix[0]), [float(x) for x in matrix[0]], dt.datetime(2024, 1, 9, tzinfo=dt.UTC))
        for m, (_, matrix) in new_item.items()
    ]
    with lake.stage_run("embed", "items", ["item_embeddings"]):  # as `dmf embed` adds them: readers see complete runs
        lake.merge(spark.createDataFrame(rows, spark_schema(ITEM_EMBEDDINGS)), "item_embeddings", ITEM_EMBEDDINGS.keys)
    extended = align_embeddings(spark, cfg, lake, progress=lambda _: None)
    assert [(m.version, m.written, m.trained) for m in extended.modalities] == [(m.version, 1, False) for m in report.modalities]
    after = _aligned(lake)
    pd.testing.assert_frame_equal(after[after.item_id != 31].reset_index(drop=True), aligned)
    assert sorted(after[after.item_id == 31].modality) == ["fused", "image", "text"]


def test_valid_and_test_events_do_not_change_the_aligned_vectors(spark, tiny):
    cfg, lake = tiny
    first = align_embeddings(spark, cfg, lake, progress=lambda _: None)
    before = _aligned(lake)
    events = _events(lake)
    cutoff = pd.Timestamp(first.cutoff)
    later = events.event_time >= cutoff
    assert later.any() and (~later).any()
    changed = events.copy()  # every event from the first validation day on: other items, flipped labels
    changed.loc[later, "item_id"] = (changed.loc[later, "item_id"] % 30) + 1
    changed.loc[later, "label"] = 1 - changed.loc[later, "label"]
    write_events(spark, lake, changed.drop_duplicates(["user_id", "item_id", "event_time"]))
    # the protocol's cut-off is a share of the rows: keep their number and times as they were
    assert len(_events(lake)) == len(events)
    second = align_embeddings(spark, cfg, lake, progress=lambda _: None)
    assert second.cutoff == first.cutoff
    assert [m.version for m in second.modalities] == [m.version for m in first.modalities]
    pd.testing.assert_frame_equal(_aligned(lake), before)

    # a training-period event does change them
    changed.loc[~later, "label"] = 1 - changed.loc[~later, "label"]
    write_events(spark, lake, changed.drop_duplicates(["user_id", "item_id", "event_time"]))
    third = align_embeddings(spark, cfg, lake, progress=lambda _: None)
    assert all(a.version != b.version for a, b in zip(third.modalities, first.modalities))


def test_models_compare_on_frozen_and_aligned_vectors(spark, tiny, tmp_path):
    """Features on aligned vectors are a second samples build; compare trains each vector-reading model
    on both and pairs their predictions row by row."""
    cfg, lake = tiny
    report = align_embeddings(spark, cfg, lake, progress=lambda _: None)
    aligned_cfg = load_config(cfg.source_file, [*SMALL, "features.item_vectors=aligned"])
    build_features(spark, aligned_cfg, lake, progress=lambda _: None)
    lineage = PinnedTable.open(lake.uri("samples")).lineage()
    assert lineage.item_vectors == {m.modality: m.version for m in report.modalities}

    frozen, tracker = open_training(cfg, progress=lambda _: None, item_vectors="frozen")
    aligned, _ = open_training(cfg, progress=lambda _: None, item_vectors="aligned")
    assert aligned.samples.version > frozen.samples.version  # the tiny lake's build, then this one
    # each version's own lineage (delta-rs numbers an older version's history wrongly)
    assert frozen.lineage.item_vectors == VERSIONS and aligned.lineage.item_vectors == lineage.item_vectors
    assert frozen.embeddings.version < aligned.embeddings.version
    order = row_order(frozen, aligned)
    for column in ("user_ids", "item_ids", "seconds", "labels"):
        np.testing.assert_array_equal(
            getattr(frozen.index, column)[frozen.test_rows], getattr(aligned.index, column)[aligned.test_rows][order]
        )
    spec = load_model_spec("dmf")
    spec = spec.model_copy(update={"training": spec.training.model_copy(update={"epochs": 1, "batch_size": 32})})
    result = compare(
        [spec],
        ["item_mean", "lightgbm"],
        frozen,
        tracker,
        tmp_path / "reports",
        (0,),
        "dmf",
        lambda _: None,
        {"aligned": aligned},
    )
    assert list(result["subsets"]["all"]["models"]) == ["item_mean", "lightgbm", "lightgbm@aligned", "dmf", "dmf@aligned"]
    assert set(result["vector_differences"]) == {"all", "cold", "rare"}
    difference = result["vector_differences"]["all"]["dmf@aligned"]["auc"]
    models = result["subsets"]["all"]["models"]
    assert difference["estimate"] == pytest.approx(models["dmf@aligned"]["auc"]["estimate"] - models["dmf"]["auc"]["estimate"])
    assert result["item_vectors"]["aligned"] == lineage.item_vectors
    assert "minus base item vectors" in (tmp_path / "reports" / Path(result["report"]).name).with_suffix(".md").read_text()

    # recorded beside the model comparison already in the results file, which stays as it was
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "model_quality.json").write_text(json.dumps({"figures": {"ratio": 1.2}, "settings": {"seeds": 3}}))
    record(parse_args(["--from-report", result["report"], "--results-dir", str(tmp_path / "results")]), result)
    written = json.loads((tmp_path / "results" / "model_quality.json").read_text())
    assert written["figures"]["ratio"] == 1.2 and written["settings"] == {"seeds": 3}
    assert written["figures"]["item_vectors"]["vector_differences"] == result["vector_differences"]
    assert (tmp_path / "results" / "model_quality_item_vectors.png").exists()


def test_a_tuned_text_encoder_writes_its_own_version_and_is_reused_for_new_items(spark, tiny):
    cfg, lake = tiny
    titles = spark.createDataFrame([(i, f"Movie number {i}") for i in range(1, 32)], "item_id bigint, title string")
    with lake.stage_run("ingest", "items", ["items"]):
        lake.write(titles, "items", mode="overwrite")
    tuned_cfg = load_config(
        cfg.source_file,
        [*SMALL, "alignment.modalities=[text]", "alignment.text_encoder_layers=1", "alignment.text_encoder_batch_size=16"],
    )
    first = align_embeddings(spark, tuned_cfg, lake, progress=lambda _: None)
    (text,) = first.modalities
    assert text.encoder == "c-sft-minilm" and text.version.startswith("c-sft-minilm:") and text.trained
    written = _aligned(lake)
    assert set(written.dim) == {384} and len(written) == text.items == 30

    # item 31 arrives: embedded by the encoder saved with the version, not a retrained one
    vector = random_vectors([31], {"text": 4}, seed=5)["text"][1][0]
    row = [(31, "text", "test", VERSIONS["text"], "h31", 4, [float(x) for x in vector], dt.datetime(2024, 1, 9, tzinfo=dt.UTC))]
    with lake.stage_run("embed", "items", ["item_embeddings"]):
        lake.merge(spark.createDataFrame(row, spark_schema(ITEM_EMBEDDINGS)), "item_embeddings", ITEM_EMBEDDINGS.keys)
    (again,) = align_embeddings(spark, tuned_cfg, lake, progress=lambda _: None).modalities
    assert (again.version, again.written, again.trained) == (text.version, 1, False)
    after = _aligned(lake)
    pd.testing.assert_frame_equal(after[after.item_id != 31].reset_index(drop=True), written)


def test_dmf_align_and_similar_on_the_aligned_index(spark, tiny, capsys):
    cfg, lake = tiny
    overrides = [item for setting in SMALL for item in ("--set", setting)]
    with pytest.raises(FeaturesError, match="run `dmf align` first"):
        build_features(spark, load_config(cfg.source_file, ["features.item_vectors=aligned"]), lake, progress=lambda _: None)
    assert main(["align", "--config", str(cfg.source_file), *overrides]) == 0
    out = capsys.readouterr().out
    assert "held-out recall@10 frozen -> aligned" in out and "fused version: c-sft:" in out
    assert main(["similar", "5", "-k", "3", "--config", str(cfg.source_file), "--version", "aligned"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "(c-sft:" in lines[0] and len(lines) == 4
