"""Jobs racing on one lake, each a spark-submit of its own (its own driver JVM), started together.

Nothing coordinates them but the lake's optimistic concurrency: a commit is made on the snapshot its
job read, and when another job committed first it is checked against that commit and retried on a
fresh snapshot. What that must guarantee is tested here: every job succeeds, no commit is lost, no
merge key is written twice, and a reader sees one version of a table, never a mix of two.

One lake, three rounds, each round's tables the next one's input: two days ingested at once on an
empty lake; two embedding jobs on the same new items; a features build while an ingest changes a day.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable

from dmf_features.infra.config import load_config
from dmf_features.infra.spark import submit_options
from dmf_features.testing import movielens_files as fx
from dmf_features.testing.delta_rows import table_rows
from models.data import PinnedTable

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
DAY1, DAY2 = fx.DAY1.date().isoformat(), fx.DAY2.date().isoformat()


class Lakeside:
    """A MovieLens fixture, a config and a lake; runs jobs on them and reads the tables without Spark."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.data = fx.write_movielens(folder / "movielens")
        self.lake = folder / "lake"
        self.config = folder / "concurrency.yaml"
        self.jobs_started = 0
        self.config.write_text(f"""
spark: {{master: "local[1]", shuffle_partitions: 1, driver_memory: 1g, short_jobs: true, conf: {{spark.ui.enabled: "false"}}}}
lake: {{uri: {self.lake}}}
source: {{kind: movielens, movielens: {{path: {self.data}, posters: {self.data / "posters"}}}}}
ingest: {{max_quarantined_share: 0.5}}  # a tiny folder full of planted bad input
features: {{history_length: 4, long_history_length: 8, buckets: 4, top_k: 3}}
""")

    def together(self, *jobs: tuple[str, ...], lake: Path | None = None) -> None:
        """Start every job (`script, *args`) at once, then wait for all; each must succeed."""
        venv_bin = Path(sys.executable).parent
        env = {**os.environ, "PATH": f"{venv_bin}:{os.environ['PATH']}", "PYSPARK_PYTHON": sys.executable}
        running = []
        for script, *args in jobs:
            self.jobs_started += 1
            log = self.folder / f"{self.jobs_started:02d}-{Path(script).stem}.log"
            options = submit_options(load_config(self.config).spark)  # jobs of seconds: spark.short_jobs
            command = [str(venv_bin / "spark-submit"), *options, f"jobs/{script}", "--config", str(self.config), *args]
            command += ["--set", f"lake.uri={lake}"] if lake else []
            with log.open("w") as out:  # a file, not a pipe: a job must never wait for the test to read it
                running.append((subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT), log))
        try:
            for process, _ in running:
                process.wait(timeout=600)
        finally:
            for process, _ in running:
                if process.poll() is None:
                    process.kill()
        for process, log in running:
            assert process.returncode == 0, f"{log.name} failed:\n{log.read_text()[-4000:]}"

    def records(self, table: str) -> list[dict]:
        """Every row of `table` with its partition values."""
        path = self.lake / table
        rows = []
        for file in pa.table(DeltaTable(str(path)).get_add_actions(flatten=True)).to_pylist():
            partition = {k.removeprefix("partition."): v for k, v in file.items() if k.startswith("partition.")}
            rows += [row | partition for row in pq.read_table(path / file["path"]).to_pylist()]
        return rows

    def history(self, table: str) -> list[dict]:
        return DeltaTable(str(self.lake / table)).history()


def duplicated(rows: list[dict], keys: tuple[str, ...]) -> list[tuple]:
    return [key for key, n in Counter(tuple(r[k] for k in keys) for r in rows).items() if n > 1]


def copy_at_version(source: Path, target: Path, version: int) -> None:
    """A copy of a table whose latest version is `source`'s `version`: its later commits left out."""
    newer = {f"{v:020d}.json" for v in range(version + 1, DeltaTable(str(source)).version() + 1)}
    shutil.copytree(source, target, ignore=lambda _, names: [n for n in names if n in newer])


@pytest.fixture(scope="module")
def lakeside(tmp_path_factory) -> Lakeside:
    """Day 1 and day 2 ingested at once on an empty lake: both jobs create the tables."""
    lakeside = Lakeside(tmp_path_factory.mktemp("concurrency"))
    lakeside.together(("ingest.py", "--date", DAY1), ("ingest.py", "--date", DAY2))
    return lakeside


@pytest.fixture(scope="module")
def embedded(lakeside) -> Lakeside:
    """Two embedding jobs at once on the same new items: both create item_embeddings."""
    lakeside.together(("embed_items.py",), ("embed_items.py",))
    return lakeside


def test_two_ingests_of_different_days_at_once_keep_both_days(lakeside):
    kept_lines = [*fx.good_ratings(), f"3,1,4.0,{int(fx.DAY1.timestamp()) + 1}"]  # + the first of a duplicated pair
    expected = sorted((int(u), int(m), float(r), int(t)) for u, m, r, t in (line.split(",") for line in kept_lines))
    events = lakeside.records("events")
    assert sorted((e["user_id"], e["item_id"], e["rating"], int(e["event_time"].timestamp())) for e in events) == expected
    assert all(e["date"] == e["event_time"].date() for e in events)

    commits = [c for c in lakeside.history("events") if c.get("dmf.operation") == "replace partitions"]
    by_day = Counter(e["date"].isoformat() for e in events)
    assert sorted(int(c["dmf.rows"]) for c in commits) == sorted(by_day.values())  # each job's own commit

    items = lakeside.records("items")
    assert sorted(i["item_id"] for i in items) == list(range(1, fx.MOVIES + 1))
    quarantine = lakeside.records("quarantine")
    assert duplicated(quarantine, ("record_id",)) == []
    assert {q["record_id"] for q in quarantine} == set(fx.PLANTED)


def test_two_embed_jobs_on_the_same_items_write_each_vector_once(embedded):
    vectors = embedded.records("item_embeddings")
    assert duplicated(vectors, ("item_id", "modality", "encoder_version")) == []
    assert len({(v["modality"], v["encoder_version"]) for v in vectors}) == 3  # one encoder version per modality
    items = embedded.records("items")
    every_item, with_image = {i["item_id"] for i in items}, {i["item_id"] for i in items if i["image_status"] == "ok"}
    assert {m: {v["item_id"] for v in vectors if v["modality"] == m} for m in ("text", "image", "fused")} == {
        "text": every_item,
        "image": with_image,
        "fused": every_item,
    }
    rejected = [q for q in embedded.records("quarantine") if q["target"] == "item_embeddings"]
    assert [q["record_id"].split(":")[:3] for q in rejected] == [["item", str(fx.CORRUPT_POSTER), "image"]]


def test_a_features_build_during_an_ingest_reads_one_version_of_events(embedded):
    before = DeltaTable(str(embedded.lake / "events")).version()
    late = int(fx.DAY2.timestamp()) + 11 * 3600  # new day-2 ratings: the ingest changes what features would read
    with (embedded.data / "ratings.csv").open("a") as ratings:
        ratings.writelines(f"{user},{1 + user % fx.MOVIES},5.0,{late + user}\n" for user in range(1, fx.USERS + 1))
    embedded.together(("build_features.py",), ("ingest.py", "--date", DAY2))
    assert DeltaTable(str(embedded.lake / "events")).version() == before + 1

    lineage = PinnedTable.open(str(embedded.lake / "samples")).lineage()
    assert lineage is not None and lineage.events_version in (before, before + 1)
    reference = embedded.folder / f"reference-at-{lineage.events_version}"
    copy_at_version(embedded.lake / "events", reference / "events", lineage.events_version)
    copy_at_version(embedded.lake / "item_embeddings", reference / "item_embeddings", lineage.item_embeddings_version)
    embedded.together(("build_features.py",), lake=reference)
    for table in ("samples", "user_sequences"):
        assert table_rows(embedded.lake / table) == table_rows(reference / table), table
