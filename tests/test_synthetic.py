"""The seeded synthetic generator: determinism, cache, content signal, cold start, planted bad rows."""

from __future__ import annotations

import csv
import filecmp
import io
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dmf_features.config import SyntheticSourceConfig
from dmf_features.sources.synthetic import generate


def small(tmp_path: Path, name: str = "syn", **overrides) -> SyntheticSourceConfig:
    settings = dict(output=tmp_path / name, users=300, items=120, events=20_000, days=30, topics=4,
                    image_size=32, bad_row_fraction=0.003, seed=11)
    return SyntheticSourceConfig(**(settings | overrides))


def rows(path: Path) -> list[list[str]]:
    return list(csv.reader(io.StringIO(path.read_text())))[1:]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    cfg = small(tmp_path_factory.mktemp("synthetic"))
    return cfg, generate(cfg)


def test_same_seed_same_bytes_and_a_second_call_is_a_cache_hit(tmp_path, dataset):
    cfg, first = dataset
    again = generate(small(tmp_path))  # same parameters, another folder
    for name in ("movies.csv", "ratings.csv", "manifest.json"):
        assert filecmp.cmp(first.path / name, again.path / name, shallow=False), name
    assert filecmp.cmp(first.path / "posters" / "7.jpg", again.path / "posters" / "7.jpg", shallow=False)
    stamp = (again.path / "ratings.csv").stat().st_mtime_ns
    messages = []
    assert generate(small(tmp_path), progress=messages.append) == again
    assert (again.path / "ratings.csv").stat().st_mtime_ns == stamp and "already generated" in messages[0]
    other = generate(small(tmp_path, "other", seed=12))
    assert (other.path / "ratings.csv").read_bytes() != (again.path / "ratings.csv").read_bytes()


def test_ratings_follow_each_users_taste(dataset):
    cfg, data = dataset
    topic = {int(r[0]): int(r[1]) for r in rows(data.path / "truth" / "items.csv")}
    top = {int(r[0]): int(r[1]) for r in rows(data.path / "truth" / "users.csv")}
    clicks: dict[bool, list[int]] = defaultdict(list)
    for user, movie, rating, _ in filter(lambda r: len(r) == 4, rows(data.path / "ratings.csv")):
        try:
            u, m, r = int(user), int(movie), float(rating)
        except ValueError:
            continue  # a planted bad row
        if m in topic and 0.5 <= r <= 5:
            clicks[topic[m] == top[u]].append(r >= 4)
    liked, other = np.mean(clicks[True]), np.mean(clicks[False])
    assert liked > other + 0.2, (liked, other)


def test_cold_start_items_appear_only_after_their_release(dataset):
    _, data = dataset
    release = {int(r[0]): int(r[3]) for r in rows(data.path / "truth" / "items.csv") if r[4] == "1"}
    assert len(release) == data.cold_start_items > 0
    seen = set()
    for _, movie, _, ts in filter(lambda r: len(r) == 4, rows(data.path / "ratings.csv")):
        if movie.isdigit() and int(movie) in release and ts.isdigit() and int(ts) > 631_152_000:
            assert int(ts) >= release[int(movie)]
            seen.add(int(movie))
    assert seen  # they do get some events


def test_planted_bad_rows_are_there_as_the_manifest_says(dataset):
    _, data = dataset
    import json

    planted = json.loads((data.path / "manifest.json").read_text())["planted"]
    lines = rows(data.path / "ratings.csv")
    assert len(lines) == data.events
    known = {int(r[0]) for r in rows(data.path / "movies.csv")}
    wrong_fields = sum(len(r) != 4 for r in lines)
    empty_user = sum(len(r) == 4 and r[0] == "" for r in lines)
    out_of_range = sum(len(r) == 4 and r[2] == "7.5" for r in lines)
    unknown = sum(len(r) == 4 and r[1].isdigit() and int(r[1]) not in known for r in lines)
    early = sum(len(r) == 4 and r[3].isdigit() and int(r[3]) < 631_152_000 for r in lines)
    seen, duplicates = set(), 0
    for r in filter(lambda r: len(r) == 4, lines):  # garbage lines repeat too, but are not events
        duplicates += tuple(r) in seen
        seen.add(tuple(r))
    assert empty_user == planted["empty_user_id"] and out_of_range == planted["rating_out_of_range"]
    assert unknown == planted["unknown_movie_id"] and early == planted["timestamp_before_1990"]
    assert duplicates == planted["duplicate"] and wrong_fields == planted["garbage"]
    assert data.bad_rows == sum(planted[k] for k in ("garbage", "empty_user_id", "unknown_movie_id", "duplicate",
                                                        "rating_out_of_range", "timestamp_before_1990"))
    assert planted["missing_poster"] == 1 and planted["corrupt_poster"] == 1


def test_posters_decode_and_differ_by_topic(dataset):
    _, data = dataset
    topic = {int(r[0]): int(r[1]) for r in rows(data.path / "truth" / "items.csv")}
    colours: dict[int, list[np.ndarray]] = defaultdict(list)
    broken = 0
    for path in (data.path / "posters").glob("*.jpg"):
        try:
            with Image.open(path) as img:
                colours[topic[int(path.stem)]].append(np.asarray(img.convert("HSV"), dtype=float).mean((0, 1)))
        except OSError:
            broken += 1
    assert broken == 1 and len(list((data.path / "posters").glob("*.jpg"))) == data.items - 1
    means = {t: np.mean(v, axis=0) for t, v in colours.items()}
    spread = np.mean([np.std(v, axis=0)[0] for v in colours.values()])  # hue spread within a topic
    gaps = [abs(means[a][0] - means[b][0]) for a in means for b in means if a < b]
    assert min(gaps) > spread, (gaps, spread)
