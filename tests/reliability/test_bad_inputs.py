"""The bad-input corpus through the real ingest and embed stages: no crash, every record kept or
quarantined with its reason, legal CSV parsed as CSV, and structural problems stopped before anything
is written."""

from __future__ import annotations

import pytest

from dmf_features.embedding.stage import EMPTY_TEXT, embed_items
from dmf_features.infra.config import load_config
from dmf_features.infra.lake import Lake
from dmf_features.ingest import IngestError, ingest
from dmf_features.ingest.sources.movielens import SourceError
from tests.reliability import bad_input_corpus as corpus

pytestmark = pytest.mark.e2e


def config(tmp_path, data, **ingest):
    path = tmp_path / "c.yaml"
    path.write_text(f"""
spark: {{master: "local[2]", shuffle_partitions: 4}}
lake: {{uri: {tmp_path / "lake"}}}
source: {{kind: movielens, movielens: {{path: {data}, posters: {data / "posters"}}}}}
ingest: {{max_event_time: 2030-01-01T00:00:00Z, {", ".join(f"{k}: {v}" for k, v in ingest.items())}}}
embedding: {{batch_size: 8, items_per_task: 8}}
""")
    return load_config(path)


def rows(lake, table):
    """A table's rows read with pyarrow from the files of its latest version (no Spark needed)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    snapshot = lake.delta(table)
    files = pa.table(snapshot.get_add_actions(flatten=True)).to_pylist()
    out = []
    for f in files:
        partition = {k[len("partition.") :]: v for k, v in f.items() if k.startswith("partition.")}
        out += [{**r, **partition} for r in pq.read_table(f"{lake.uri(table)}/{f['path']}").to_pylist()]
    return out


def test_every_bad_record_is_kept_or_quarantined_with_its_reason(spark, tmp_path):
    data = corpus.write_corpus(tmp_path / "corpus")
    cfg = config(tmp_path, data, max_quarantined_share=1.0)
    lake = Lake(cfg.lake)
    report = ingest(spark, cfg, lake, progress=lambda _: None)
    assert all(i.balanced for i in report.inputs), report.inputs

    expected = corpus.expected_records(corpus.MOVIE_LINES, "movies.csv") | corpus.expected_records(
        corpus.RATING_LINES, "ratings.csv"
    )
    quarantined = {r["record_id"]: r for r in rows(lake, "quarantine")}
    for record, outcome in expected.items():
        if outcome == corpus.KEPT:
            assert record not in quarantined, quarantined.get(record)
        else:
            assert quarantined[record]["reason"] == outcome, (record, quarantined.get(record))
    assert all(r["detail"] and r["raw"] for r in quarantined.values())
    by_outcome = {(record.split(":")[0], outcome): record for record, outcome in expected.items()}
    assert len(quarantined[by_outcome["movies.csv", "too_long"]]["raw"]) == 4096  # the million characters, truncated
    assert "\ufffd" in quarantined[by_outcome["movies.csv", "invalid_encoding"]]["raw"]  # shown, not kept as a title
    extra_field = quarantined[by_outcome["ratings.csv", "unparseable_line"]]["detail"]
    assert extra_field == "expected 4 fields (userId,movieId,rating,timestamp), found 5"

    items = {r["item_id"]: r for r in rows(lake, "items")}
    kept_movies = [line for line, outcome in corpus.MOVIE_LINES if outcome == corpus.KEPT]
    assert len(items) == len(kept_movies)
    assert items[2]["title"] == "Commas, In A Title"
    assert items[3]["title"] == 'A "Quoted" Word'
    assert items[4]["title"] == "Line One\nLine Two" and items[4]["year"] == 2003
    assert items[5]["title"] == "🎬🎥🍿"
    assert items[1]["tags"] == ["calm"] and items[2]["tags"] == ["odd, tag"]
    # Spark's file sources skip zero-byte files: that poster is missing, its item is not
    assert items[corpus.EMPTY_POSTER]["image_status"] == "missing"

    events = rows(lake, "events")
    kept_ratings = sum(outcome == corpus.KEPT for _, outcome in corpus.RATING_LINES)
    assert len(events) == kept_ratings
    assert all(e["rating"] is not None and e["label"] in (0, 1) for e in events)

    embedded = embed_items(spark, cfg, lake, progress=lambda _: None)
    counts = {c.modality: c for c in embedded.counts}
    assert all(c.balanced for c in embedded.counts), embedded.render()
    assert counts["text"].quarantined == {EMPTY_TEXT: 1} and counts["text"].embedded == len(items) - 1
    embed_rejects = [
        r["record_id"].split(":")[:3] + [r["reason"]] for r in rows(lake, "quarantine") if r["source"].startswith("embed")
    ]
    image_reasons = {int(item): reason for _, item, modality, reason in embed_rejects if modality == "image"}
    assert image_reasons == {item: reason for item, (_, reason) in corpus.posters().items() if reason}
    posters_embedded = sum(reason is None for _, reason in corpus.posters().values())
    assert counts["image"].embedded == posters_embedded
    assert counts["image"].without_input == len(items) - len(corpus.posters())  # no poster, or an empty file
    assert counts["fused"].embedded == len(items) - 1 and counts["fused"].without_input == 1  # item 8: no title, no poster


@pytest.mark.parametrize("case", sorted(corpus.STRUCTURAL))
def test_a_structural_problem_stops_before_anything_is_written(spark, tmp_path, case):
    data = corpus.write_corpus(tmp_path / "corpus")
    content, words = corpus.STRUCTURAL[case]
    (data / "ratings.csv").write_text(content)
    cfg = config(tmp_path, data, max_quarantined_share=1.0)
    lake = Lake(cfg.lake)
    with pytest.raises(SourceError) as error:
        ingest(spark, cfg, lake, progress=lambda _: None)
    assert all(w in str(error.value) for w in words), str(error.value)
    assert lake.tables() == []


@pytest.mark.parametrize(
    ("rewrite", "reason"),
    [
        (lambda line: line + b",extra", "unparseable_line"),  # every line has one column too many
        (lambda line: line.replace(b"4.0", "4.0é".encode("latin-1")), "invalid_encoding"),  # a Latin-1 file
    ],
    ids=["extra-column-on-every-line", "latin-1-file"],
)
def test_a_mostly_unreadable_file_fails_before_committing_naming_reasons_and_examples(spark, tmp_path, rewrite, reason):
    data = corpus.write_corpus(tmp_path / "corpus")
    good = [f"{u},{m},4.0,{corpus.T0 + u * 100 + m}".encode() for u in range(1, 6) for m in range(1, 6)]
    (data / "ratings.csv").write_bytes(b"userId,movieId,rating,timestamp\n" + b"".join(rewrite(x) + b"\n" for x in good))
    cfg = config(tmp_path, data)  # the default max_quarantined_share
    lake = Lake(cfg.lake)
    with pytest.raises(IngestError) as error:
        ingest(spark, cfg, lake, progress=lambda _: None)
    message = str(error.value)
    assert "ratings.csv: 25 of 25 records (100.0%)" in message and reason in message
    assert f": {reason}: " in message.split("examples:")[1]
    assert lake.tables() == []


def test_each_stage_accounts_for_every_row_and_logs_it_to_mlflow(tmp_path, capsys):
    """Through the `dmf` command, as a user runs it: rows in = written + quarantined, printed and in MLflow."""
    import mlflow

    from dmf_features.cli import main
    from dmf_features.infra.accounting import pipeline_experiment

    data = corpus.write_corpus(tmp_path / "corpus")
    cfg = config(tmp_path, data, max_quarantined_share=1.0)
    args = ["--config", str(cfg.source_file), "--set", f"mlflow.tracking_uri=sqlite:///{tmp_path / 'mlflow.db'}"]
    assert main(["ingest", *args]) == 0 and main(["embed", *args]) == 0
    printed = [line for line in capsys.readouterr().out.splitlines() if line.startswith("accounting")]
    assert len(printed) == 2 and all("(balanced)" in line for line in printed), printed

    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.get_experiment_by_name(pipeline_experiment(load_config(cfg.source_file).mlflow))
    runs = {r.data.tags["dmf.stage"]: r for r in client.search_runs([experiment.experiment_id])}
    assert set(runs) == {"ingest", "embed"}
    for run in runs.values():
        m = run.data.metrics
        assert m["rows_in"] == m["written"] + m["quarantined"] and m["rows_in"] > 0
        assert run.data.tags["dmf.balanced"] == "true" and run.info.status == "FINISHED"
    expected = corpus.expected_records(corpus.MOVIE_LINES, "movies.csv") | corpus.expected_records(
        corpus.RATING_LINES, "ratings.csv"
    )
    assert runs["ingest"].data.metrics["quarantined"] >= sum(o != corpus.KEPT for o in expected.values())
    assert runs["ingest"].data.tags["dmf.version.events"] == "0"
