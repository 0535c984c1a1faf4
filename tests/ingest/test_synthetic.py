"""The synthetic generator: deterministic, cached, and carrying the structure it promises."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dmf_features.infra.config import SyntheticSourceConfig
from dmf_features.ingest.sources.synthetic import BAD_KINDS, generate

SMALL = dict(users=300, items=120, events=20_000, topics=4, image_size=32, bad_row_fraction=0.003)
YEAR_1990 = 631_152_000


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synthetic")
    generate(SyntheticSourceConfig(output=out, **SMALL))
    return out


def _read(path: Path) -> list[list[str]]:
    with open(path, newline="") as f:
        return list(csv.reader(f))


def _truth(data: Path, name: str) -> dict[int, dict[str, str]]:
    with open(data / "truth" / f"{name}.csv", newline="") as f:
        return {int(row[next(iter(row))]): row for row in csv.DictReader(f)}


def _classify(row: list[str], prev: list[str], movie_ids: set[int]) -> str | None:
    """Which planted defect a ratings row has, or None for a valid row."""
    if row == prev:
        return "duplicate"
    if len(row) != 4:
        return "garbage"
    if row[0] == "":
        return "empty_user_id"
    try:
        _, movie, rating, ts = int(row[0]), int(row[1]), float(row[2]), int(row[3])
    except ValueError:
        return "garbage"
    if movie not in movie_ids:
        return "unknown_movie_id"
    if not (0.5 <= rating <= 5.0 and rating * 2 == int(rating * 2)):
        return "rating_out_of_range"
    if ts < YEAR_1990:
        return "timestamp_before_1990"
    return None


def _valid_ratings(data: Path) -> np.ndarray:
    """(userId, movieId, rating, timestamp) of the valid rows."""
    rows = _read(data / "ratings.csv")[1:]
    movie_ids = {int(r[0]) for r in _read(data / "movies.csv")[1:]}
    good = [r for prev, r in zip([None, *rows], rows) if _classify(r, prev, movie_ids) is None]
    return np.array(good, dtype=float)


def test_same_config_gives_identical_files(data, tmp_path):
    generate(SyntheticSourceConfig(output=tmp_path, **SMALL))
    files = sorted(p.relative_to(data) for p in data.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    for name in files:
        assert (data / name).read_bytes() == (tmp_path / name).read_bytes(), name


def test_same_parameters_are_not_regenerated(tmp_path):
    cfg = SyntheticSourceConfig(output=tmp_path, **SMALL)
    first = generate(cfg)
    mtimes = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()}
    assert generate(cfg) == first
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()} == mtimes
    before = (tmp_path / "ratings.csv").read_bytes()
    generate(cfg.model_copy(update={"seed": 8}))  # other parameters: generated again
    assert json.loads((tmp_path / "manifest.json").read_text())["params"]["seed"] == 8
    assert (tmp_path / "ratings.csv").read_bytes() != before


def test_files_are_movielens_format(data):
    movies = _read(data / "movies.csv")
    assert movies[0] == ["movieId", "title", "genres"]
    assert [int(r[0]) for r in movies[1:]] == list(range(1, SMALL["items"] + 1))
    assert all(re.fullmatch(r".+ \(\d{4}\)", r[1]) and r[2] for r in movies[1:])
    assert any("," in r[1] for r in movies[1:])  # quoted titles are exercised
    assert _read(data / "ratings.csv")[0] == ["userId", "movieId", "rating", "timestamp"]
    manifest = json.loads((data / "manifest.json").read_text())
    assert manifest["counts"]["events"] == len(_read(data / "ratings.csv")) - 1 == SMALL["events"]


def test_ratings_follow_the_users_top_topic(data):
    ratings = _valid_ratings(data)
    items, users = _truth(data, "items"), _truth(data, "users")
    topic = np.array([int(items[m]["topic"]) for m in ratings[:, 1].astype(int)])
    top = np.array([int(users[u]["top_topic"]) for u in ratings[:, 0].astype(int)])
    clicked = ratings[:, 2] >= 4
    assert clicked[topic == top].mean() > clicked[topic != top].mean() + 0.3
    assert ratings[topic == top, 2].mean() > ratings[topic != top, 2].mean() + 0.5


def test_each_users_events_are_in_time_order_within_the_range(data):
    ratings = _valid_ratings(data)
    span = json.loads((data / "manifest.json").read_text())["time_range"]
    assert span["start"] <= ratings[:, 3].min() and ratings[:, 3].max() < span["end"]
    same_user = ratings[1:, 0] == ratings[:-1, 0]
    assert (np.diff(ratings[:, 3])[same_user] > 0).all()


def test_cold_start_items_exist_and_have_no_events_before_release(data):
    manifest = json.loads((data / "manifest.json").read_text())
    items = _truth(data, "items")
    cold = {m: int(row["release_timestamp"]) for m, row in items.items() if row["cold_start"] == "1"}
    assert len(cold) == manifest["counts"]["cold_start_items"] == round(0.1 * SMALL["items"])
    assert min(cold.values()) >= manifest["time_range"]["cold_start_after"]
    ratings = _valid_ratings(data)
    on_cold = np.isin(ratings[:, 1], list(cold))
    release = np.array([cold[int(m)] for m in ratings[on_cold, 1]])
    assert on_cold.any() and (ratings[on_cold, 3] >= release).all()


def test_planted_bad_rows_match_the_manifest(data):
    manifest = json.loads((data / "manifest.json").read_text())
    rows = _read(data / "ratings.csv")[1:]
    movie_ids = {int(r[0]) for r in _read(data / "movies.csv")[1:]}
    found = dict.fromkeys(BAD_KINDS, 0)
    for prev, row in zip([None, *rows], rows):
        kind = _classify(row, prev, movie_ids)
        if kind:
            found[kind] += 1
    assert found == {k: manifest["planted"][k] for k in BAD_KINDS}
    assert min(found.values()) >= 1 and sum(found.values()) == manifest["counts"]["bad_rows"] == 60


def test_posters_decode_and_differ_between_topics(data):
    bad = json.loads((data / "manifest.json").read_text())["bad_posters"]
    assert not (data / "posters" / f"{bad['missing'][0]}.jpg").exists()
    with pytest.raises(OSError):
        Image.open(data / "posters" / f"{bad['corrupt'][0]}.jpg").load()
    colours, topics, pixels = [], [], set()
    for movie, row in _truth(data, "items").items():
        if movie in bad["missing"] + bad["corrupt"]:
            continue
        with Image.open(data / "posters" / f"{movie}.jpg") as img:
            assert img.size == (32, 48)
            rgb = np.asarray(img.convert("RGB"))
        colours.append(rgb.mean((0, 1)))
        pixels.add(rgb.tobytes())
        topics.append(int(row["topic"]))
    chroma = np.array(colours) / np.array(colours).sum(1, keepdims=True)  # brightness varies by style
    topics = np.array(topics)
    centroids = np.array([chroma[topics == t].mean(0) for t in range(SMALL["topics"])])
    nearest = ((chroma[:, None] - centroids[None]) ** 2).sum(-1).argmin(1)
    assert (nearest == topics).mean() > 0.8
    assert len(pixels) == len(colours)  # per-item variation: no two posters alike
