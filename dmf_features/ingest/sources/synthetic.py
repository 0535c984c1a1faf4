"""Seeded synthetic data in MovieLens format, with latent structure that content features can learn.

Every item has a latent topic and style. Its title words and its poster are drawn from them, so text
and image encoders can both recover the topic. Users prefer a few topics and rate by that preference,
so a click (rating >= 4) carries real content signal. Cold-start items and known bad rows are planted
so that ingest, quarantine and cold-start evaluation all have work to do. The same config writes
byte-identical files; ratings are generated and written in chunks, in bounded memory.

`truth/items.csv` and `truth/users.csv` hold the latent variables (topic, style, release time, each
user's top topic) for evaluation; MovieLens ingest does not read them.
"""

from __future__ import annotations

import colorsys
import csv
import datetime as dt
import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from PIL import Image, ImageDraw

from dmf_features.infra.config import SyntheticSourceConfig

VERSION = 1  # bump whenever the output for a given config changes, so cached folders are regenerated
CHUNK_EVENTS = 1_000_000  # ratings rows generated and written at a time
COLD_WINDOW = 0.1  # cold-start items are released in this last fraction of the time range
PREFERENCE_ALPHA = 0.3  # Dirichlet concentration of user tastes: small means few liked topics
EXPLORE = 0.5  # share of exposures drawn by popularity alone; the others follow the user's taste
YEAR_1990 = 631_152_000  # unix seconds of 1990-01-01

# One theme per topic (cycled when there are more topics): genres, then title adjectives and nouns.
THEMES = [
    ("Sci-Fi|Adventure", "Cosmic Stellar Orbital Lunar Galactic", "Nebula Starship Comet Orbit Horizon"),
    ("Crime|Thriller", "Crimson Dirty Midnight Crooked Silent", "Heist Alibi Syndicate Witness Harbor"),
    ("Romance|Drama", "Tender Sweet Summer Eternal Golden", "Kiss Wedding Heart Letters Promise"),
    ("Horror|Thriller", "Haunted Cursed Bloody Hollow Wicked", "Graveyard Ghost Cellar Ritual Coffin"),
    ("Comedy", "Crazy Silly Lucky Awkward Wacky", "Roommates Vacation Prank Party Neighbors"),
    ("Fantasy|Adventure", "Enchanted Ancient Mystic Elven Runic", "Kingdom Sorcerer Dragon Quest Crown"),
    ("Animation|Children", "Little Happy Tiny Bouncy Fluffy", "Puppy Bunny Robot Friends Balloon"),
    ("War|Drama", "Iron Fallen Brave Bitter Armored", "Battalion Trenches Frontline Siege Soldier"),
    ("Documentary", "Wild Untold Frozen Vanishing Deep", "Planet Ocean Wilderness Glaciers Rainforest"),
    ("Western|Action", "Dusty Lonesome Outlaw Rugged Sunburnt", "Saloon Sheriff Canyon Frontier Stagecoach"),
    ("Musical|Romance", "Jazzy Rhythmic Melodic Swinging Velvet", "Melody Ballroom Symphony Chorus Serenade"),
    ("Mystery|Thriller", "Curious Secret Foggy Missing Veiled", "Clue Detective Manor Riddle Inspector"),
]
STYLE_WORDS = [
    ("Chronicles", "Files", "Shadows"),
    ("Saga", "Legacy", "Rising"),
    ("Diaries", "Stories", "Notes"),
    ("Returns", "Unleashed", "Forever"),
]
EXTRA_GENRES = ("Action", "Adventure", "Comedy", "Drama", "Film-Noir", "IMAX", "Thriller")
HIGH_RATINGS, HIGH_P = np.array([8, 9, 10]), [0.4, 0.25, 0.35]  # twice the rating: 4.0 .. 5.0
LOW_RATINGS, LOW_P = np.arange(1, 8), [0.03, 0.05, 0.07, 0.12, 0.18, 0.25, 0.30]  # 0.5 .. 3.5
RATING_TEXT = pa.array([f"{r / 2:.1f}" for r in range(16)])  # indexed by twice the rating
BAD_KINDS = ("garbage", "empty_user_id", "unknown_movie_id", "duplicate", "rating_out_of_range", "timestamp_before_1990")
GARBAGE = ("%%corrupted line%%", "17,42", "1,2,3,4,5,6", "userId;movieId;rating;timestamp")


@dataclass(frozen=True)
class GeneratedDataset:
    path: Path
    items: int
    users: int  # users with at least one rating
    events: int  # data lines in ratings.csv, planted bad rows included
    bad_rows: int  # planted bad ratings rows
    cold_start_items: int


@dataclass(frozen=True)
class _Items:
    topic: np.ndarray
    style: np.ndarray
    quality: np.ndarray  # per-item bias of the click logit
    release: np.ndarray  # seconds after the start; 0 except for cold-start items
    popularity: np.ndarray  # Zipf-like weights


def generate(cfg: SyntheticSourceConfig, progress: Callable[[str], None] | None = None) -> GeneratedDataset:
    """Write the data set into `cfg.output`, or return at once if it already holds this config's."""
    say = progress or (lambda _msg: None)
    out = Path(cfg.output)
    params = {"version": VERSION, **cfg.model_dump(mode="json", exclude={"output"})}
    manifest_path = out / "manifest.json"
    if manifest_path.is_file() and json.loads(manifest_path.read_text()).get("params") == params:
        say(f"{out}: already generated with these parameters")
        return _dataset(out, json.loads(manifest_path.read_text()))
    _clear(out)

    start = int(dt.datetime.combine(cfg.start_date, dt.time(), tzinfo=dt.UTC).timestamp())
    span = cfg.days * 86_400
    items = _make_items(cfg, np.random.default_rng([cfg.seed, 1]), span)
    rng = np.random.default_rng([cfg.seed, 2])
    pref = rng.dirichlet(np.full(cfg.topics, PREFERENCE_ALPHA), size=cfg.users)
    activity = rng.lognormal(0.0, 1.3, cfg.users)  # skewed: a few heavy users
    counts = rng.multinomial(cfg.events, activity / activity.sum())

    _write_movies(out, cfg, items, start, np.random.default_rng([cfg.seed, 3]))
    planted = _write_ratings(out / "ratings.csv", cfg, items, pref, counts, start, span, rng, say)
    missing, corrupt = _write_posters(out / "posters", cfg, items, say)
    _write_truth(out / "truth", items, pref, counts, start)
    manifest = {
        "params": params,
        "counts": {
            "items": cfg.items,
            "users": int(np.count_nonzero(counts)),
            "events": cfg.events,
            "bad_rows": sum(planted[k] for k in BAD_KINDS),
            "cold_start_items": int(np.count_nonzero(items.release)),
        },
        "planted": planted | {"missing_poster": len(missing), "corrupt_poster": len(corrupt)},
        "bad_posters": {"missing": missing, "corrupt": corrupt},
        "time_range": {"start": start, "end": start + span, "cold_start_after": start + _cold_from(span)},
    }
    tmp = out / "manifest.json.tmp"  # written last and renamed: an interrupted run is never cached
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    tmp.replace(manifest_path)
    return _dataset(out, manifest)


def _dataset(out: Path, manifest: dict) -> GeneratedDataset:
    return GeneratedDataset(path=out, **manifest["counts"])


def _clear(out: Path) -> None:
    """Remove what an earlier generation wrote (and only that), so no stale poster survives."""
    out.mkdir(parents=True, exist_ok=True)
    for name in ("manifest.json", "ratings.csv", "movies.csv"):
        (out / name).unlink(missing_ok=True)
    for name in ("posters", "truth"):
        shutil.rmtree(out / name, ignore_errors=True)


def _cold_from(span: int) -> int:
    return int(span * (1 - COLD_WINDOW))


def _make_items(cfg: SyntheticSourceConfig, rng: np.random.Generator, span: int) -> _Items:
    n = cfg.items
    n_cold = min(round(cfg.cold_start_fraction * n), n - 1)
    cold = np.zeros(n, dtype=bool)
    cold[rng.choice(n, n_cold, replace=False)] = True
    return _Items(
        topic=rng.integers(cfg.topics, size=n),
        style=rng.integers(len(STYLE_WORDS), size=n),
        quality=rng.normal(0.0, 0.5, n),
        release=np.where(cold, rng.integers(_cold_from(span), span, n), 0),
        popularity=rng.permutation(1.0 / np.arange(1, n + 1) ** 0.8),
    )


def _write_movies(out: Path, cfg: SyntheticSourceConfig, items: _Items, start: int, rng: np.random.Generator) -> None:
    """Titles like `Crimson Heist Chronicles (2021)`; some move "The" to the end as MovieLens does,
    which puts a comma in the title and so exercises CSV quoting."""
    with open(out / "movies.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["movieId", "title", "genres"])
        for i in range(cfg.items):
            genres, adjectives, nouns = THEMES[items.topic[i] % len(THEMES)]
            title = f"{rng.choice(adjectives.split())} {rng.choice(nouns.split())} {rng.choice(STYLE_WORDS[items.style[i]])}"
            if rng.random() < 0.15:
                title += ", The"
            released = dt.datetime.fromtimestamp(start + items.release[i], dt.UTC).year
            year = released if items.release[i] else int(rng.integers(1960, released + 1))
            if rng.random() < 0.2:  # a little genre noise, as real catalogues have
                genres += "|" + rng.choice([g for g in EXTRA_GENRES if g not in genres.split("|")])
            writer.writerow([i + 1, f"{title} ({year})", genres])


def _write_ratings(
    path: Path,
    cfg: SyntheticSourceConfig,
    items: _Items,
    pref: np.ndarray,
    counts: np.ndarray,
    start: int,
    span: int,
    rng: np.random.Generator,
    say: Callable[[str], None],
) -> dict:
    """Ratings sorted by user, then time, in chunks of whole users; returns how many bad rows of each kind."""
    n_bad = 0 if cfg.bad_row_fraction == 0 else max(len(BAD_KINDS), round(cfg.bad_row_fraction * cfg.events))
    n_bad = min(n_bad, cfg.events // 2)  # each bad row follows a valid one
    ends = np.cumsum(counts)
    bounds = np.unique(np.r_[0, np.searchsorted(ends, np.arange(CHUNK_EVENTS, cfg.events, CHUNK_EVENTS)) + 1, cfg.users])
    planted = dict.fromkeys(BAD_KINDS, 0)
    with open(path, "wb") as f:
        f.write(b"userId,movieId,rating,timestamp\n")
        for lo, hi in zip(bounds[:-1], bounds[1:]):
            done = int(ends[lo - 1]) if lo else 0
            if done == ends[hi - 1]:  # only users without ratings
                continue
            user, item, r2, seconds = _events(lo, counts[lo:hi], pref[lo:hi], items, span, rng)
            lines = _format(user, item, r2, start + seconds)
            quota = round(n_bad * ends[hi - 1] / cfg.events) - round(n_bad * done / cfg.events)
            lines = _plant(lines, user, item, r2, start + seconds, min(quota, len(lines) // 2), planted, cfg.items, rng)
            joined = pc.binary_join(pa.ListArray.from_arrays(pa.array([0, len(lines)], pa.int32()), lines), "\n")
            f.write(joined[0].as_buffer())
            f.write(b"\n")
            say(f"ratings: {int(ends[hi - 1]):,} / {cfg.events:,} rows")
    return planted


def _events(first: int, counts: np.ndarray, pref: np.ndarray, items: _Items, span: int, rng: np.random.Generator):
    """(userId, movieId, 2 x rating, seconds after start) of users `first`.. , time-ordered per user."""
    local = np.repeat(np.arange(len(counts)), counts)
    seconds = _times(counts, local, span, rng)
    item = _expose(pref, local, seconds, items, rng)
    affinity = pref[local, items.topic[item]] * pref.shape[1]  # 1.0 = indifferent to the item's topic
    p_click = 1.0 / (1.0 + np.exp(-(1.5 * (affinity - 2.0) + items.quality[item])))
    r2 = np.where(
        rng.random(len(local)) < p_click,
        rng.choice(HIGH_RATINGS, len(local), p=HIGH_P),
        rng.choice(LOW_RATINGS, len(local), p=LOW_P),
    )
    return local + first + 1, item + 1, r2, seconds


def _times(counts: np.ndarray, local: np.ndarray, span: int, rng: np.random.Generator) -> np.ndarray:
    """Sessions: gaps of about a minute within one, about a day between them. A user whose gaps do
    not fit in the range is compressed; gaps are at least 1 s, so a user never repeats a second."""
    n = len(local)
    gaps = np.where(rng.random(n) < 0.85, rng.lognormal(np.log(90), 1.0, n), rng.lognormal(np.log(129_600), 1.0, n))
    raw = np.bincount(local, weights=gaps, minlength=len(counts))
    scale = np.minimum(1.0, np.maximum(span - counts, 0) / np.maximum(raw, 1e-9))
    steps = np.floor(gaps * scale[local]).astype(np.int64) + 1
    total = np.cumsum(steps)
    first = np.cumsum(counts) - counts  # index of each user's first event
    within = total - np.repeat(total[first[counts > 0]] - steps[first[counts > 0]], counts[counts > 0])
    used = np.bincount(local, weights=steps, minlength=len(counts)).astype(np.int64)
    begin = np.floor(rng.random(len(counts)) * (np.maximum(span - used, 0) + 1)).astype(np.int64)
    return begin[local] + within - 1


def _expose(pref: np.ndarray, local: np.ndarray, seconds: np.ndarray, items: _Items, rng: np.random.Generator):
    """Which item each event shows: by popularity, or (1 - EXPLORE of the time) by popularity within
    a topic drawn from the user's taste. Cold-start items are only shown after their release."""
    item = _draw(items.popularity, len(local), rng)
    taste = np.flatnonzero(rng.random(len(local)) >= EXPLORE)
    n_topics = pref.shape[1]
    # one searchsorted for all users: row r's cumulative preferences are shifted into [r, r + 1]
    cum = np.cumsum(pref, axis=1)
    cum = (cum / cum[:, -1:] + np.arange(len(pref))[:, None]).ravel()
    rows = local[taste]
    topic = np.minimum(np.searchsorted(cum, rows + rng.random(len(rows)), side="right") - rows * n_topics, n_topics - 1)
    for t in range(n_topics):
        members, chosen = np.flatnonzero(items.topic == t), taste[topic == t]
        if len(members):
            item[chosen] = members[_draw(items.popularity[members], len(chosen), rng)]
    early = np.flatnonzero(items.release[item] > seconds)
    warm = np.flatnonzero(items.release == 0)
    item[early] = warm[_draw(items.popularity[warm], len(early), rng)]
    return item


def _draw(weights: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """n indices drawn with probability proportional to `weights`."""
    cdf = np.cumsum(weights)
    return np.minimum(np.searchsorted(cdf, rng.random(n) * cdf[-1], side="right"), len(cdf) - 1)


def _format(user: np.ndarray, item: np.ndarray, r2: np.ndarray, ts: np.ndarray) -> pa.Array:
    """CSV lines without their newline, formatted in Arrow (no Python loop over rows)."""
    return pc.binary_join_element_wise(
        pc.cast(pa.array(user), pa.string()),
        pc.cast(pa.array(item), pa.string()),
        RATING_TEXT.take(pa.array(r2)),
        pc.cast(pa.array(ts), pa.string()),
        ",",
    )


def _plant(lines: pa.Array, user, item, r2, ts, n_bad: int, planted: dict, n_items: int, rng: np.random.Generator) -> pa.Array:
    """Replace n_bad lines, at odd positions so that each follows a valid line (a duplicate copies it)."""
    if n_bad <= 0:
        return lines
    rows = np.sort(1 + 2 * rng.choice(len(lines) // 2, n_bad, replace=False))
    new = []
    for p in rows:
        kind = BAD_KINDS[sum(planted.values()) % len(BAD_KINDS)]
        planted[kind] += 1
        u, m, r, t = user[p], item[p], RATING_TEXT[r2[p]].as_py(), ts[p]
        new.append(
            {
                "garbage": GARBAGE[planted[kind] % len(GARBAGE)],
                "empty_user_id": f",{m},{r},{t}",
                "unknown_movie_id": f"{u},{n_items + 1 + p % 1000},{r},{t}",
                "duplicate": lines[p - 1].as_py(),
                "rating_out_of_range": f"{u},{m},7.5,{t}",
                "timestamp_before_1990": f"{u},{m},{r},{t % YEAR_1990}",
            }[kind]
        )
    mask = np.zeros(len(lines), dtype=bool)
    mask[rows] = True
    return pc.replace_with_mask(lines, pa.array(mask), pa.array(new, pa.string()))


def _write_posters(
    folder: Path, cfg: SyntheticSourceConfig, items: _Items, say: Callable[[str], None]
) -> tuple[list[int], list[int]]:
    """One JPEG per item; with bad rows planted, one poster is also missing and one is random bytes.
    Returns the movieIds of the missing and of the corrupt poster."""
    folder.mkdir()
    rng = np.random.default_rng([cfg.seed, 4])
    bad = rng.choice(cfg.items, 2, replace=False) + 1 if cfg.bad_row_fraction > 0 and cfg.items >= 2 else []
    missing, corrupt = ([int(bad[0])], [int(bad[1])]) if len(bad) else ([], [])
    for i in range(cfg.items):
        path = folder / f"{i + 1}.jpg"
        if i + 1 in corrupt:
            path.write_bytes(rng.bytes(2048))
        elif i + 1 not in missing:
            item_rng = np.random.default_rng([cfg.seed, 5, i])  # per item: independent of the loop order
            _poster(int(items.topic[i]), int(items.style[i]), cfg.topics, cfg.image_size, item_rng).save(path, "JPEG", quality=85)
        if (i + 1) % 5000 == 0 or i + 1 == cfg.items:
            say(f"posters: {i + 1:,} / {cfg.items:,}")
    return missing, corrupt


def _poster(topic: int, style: int, n_topics: int, width: int, rng: np.random.Generator) -> Image.Image:
    """Topic: the palette (its hue) and the shape family; style: the background; rng: placement and noise."""
    height = width * 3 // 2
    hue = topic / n_topics + rng.normal(0.0, 0.01)
    light, dark, accent = (
        np.array(colorsys.hsv_to_rgb(h % 1.0, s, v)) * 255
        for h, s, v in ((hue, 0.45, 0.95), (hue, 0.8, 0.4), (hue + 0.5, 0.7, 0.95))
    )
    y, x = np.mgrid[0:height, 0:width]
    if style == 0:  # noir: plain and dark
        bg = np.broadcast_to(dark * 0.5, (height, width, 3))
    elif style == 1:  # vertical gradient
        bg = dark + (light - dark) * (y / height)[..., None]
    elif style == 2:  # coarse grain
        bg = dark + rng.normal(0.0, 35.0, (height, width, 1))
    else:  # halftone dots
        dots = ((x % 8 - 4) ** 2 + (y % 8 - 4) ** 2 < 6)[..., None]
        bg = np.where(dots, light, dark * 0.8)
    img = Image.fromarray(np.clip(bg, 0, 255).astype(np.uint8))
    _shapes(ImageDraw.Draw(img), topic % 4, width, height, (tuple(map(int, accent)), tuple(map(int, light))), rng)
    noisy = np.asarray(img, dtype=np.float32) + rng.normal(0.0, 6.0, (height, width, 3))
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))


def _shapes(draw: ImageDraw.ImageDraw, family: int, w: int, h: int, colours: tuple, rng: np.random.Generator) -> None:
    """2-5 shapes of one family: circles, stars, diagonal stripes or triangles."""
    for k in range(int(rng.integers(2, 6))):
        cx, cy, r = rng.random() * w, rng.random() * h, rng.uniform(0.1, 0.25) * w
        fill = colours[k % 2]
        if family == 0:
            draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
        elif family == 2:
            draw.polygon([(0, cy), (w, cy - 0.6 * w), (w, cy - 0.6 * w + r), (0, cy + r)], fill=fill)
        else:  # star (10 points, alternating radius) or triangle (3 points)
            n = 10 if family == 1 else 3
            angle = rng.random() * 2 * np.pi + np.arange(n) * 2 * np.pi / n
            radius = np.where(np.arange(n) % 2, 0.45 * r, r) if family == 1 else np.full(n, r)
            draw.polygon(list(zip(cx + radius * np.cos(angle), cy + radius * np.sin(angle))), fill=fill)


def _write_truth(folder: Path, items: _Items, pref: np.ndarray, counts: np.ndarray, start: int) -> None:
    """The latent variables, for evaluating features and models (ingest does not read them)."""
    folder.mkdir()
    with open(folder / "items.csv", "w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["movieId", "topic", "style", "release_timestamp", "cold_start"])
        writer.writerows(
            zip(
                range(1, len(items.topic) + 1),
                items.topic.tolist(),
                items.style.tolist(),
                (start + items.release).tolist(),
                (items.release > 0).astype(int).tolist(),
            )
        )
    with open(folder / "users.csv", "w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["userId", "top_topic", "top_preference", "events"])
        writer.writerows(
            zip(range(1, len(pref) + 1), pref.argmax(1).tolist(), np.round(pref.max(1), 4).tolist(), counts.tolist())
        )
