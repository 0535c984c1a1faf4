"""A tiny MovieLens-format folder with one of each kind of bad input, for end-to-end tests."""

from __future__ import annotations

import datetime as dt
import io
from pathlib import Path

from PIL import Image

DAY1 = dt.datetime(2020, 3, 1, 12, tzinfo=dt.UTC)
DAY2 = DAY1 + dt.timedelta(days=1)
MOVIES = 20
USERS = 12

# record id -> the reason ingest must give it
PLANTED = {
    "ratings.csv:2": "unparseable_line",  # corrupt CSV line
    "ratings.csv:3": "unknown_item",
    "ratings.csv:4": "null_key",
    "ratings.csv:5": "out_of_range",  # rating 9.5
    "ratings.csv:6": "out_of_range",  # a timestamp in 1970
    "ratings.csv:7": "unparseable_line",  # rating not a number
    "ratings.csv:9": "duplicate_event",  # same as line 8
    "movies.csv:22": "duplicate_item",
    "posters/notaposter.txt": "unrecognised_file",
    "posters/999.jpg": "unknown_item",
}
MISSING_POSTER, CORRUPT_POSTER, PNG_AS_JPG = 3, 4, 5


def _jpeg(color: tuple[int, int, int], fmt: str = "JPEG") -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (24, 36), color).save(buffer, fmt)
    return buffer.getvalue()


def good_ratings() -> list[str]:
    """A few hundred valid ratings over two days, deterministic."""
    lines = []
    for user in range(1, USERS + 1):
        for movie in range(1, MOVIES + 1):
            if (user * 7 + movie * 3) % 5 == 0:
                continue
            when = (DAY1 if (user + movie) % 2 else DAY2) + dt.timedelta(minutes=user * 31 + movie)
            rating = 0.5 + ((user * movie) % 10) * 0.5
            lines.append(f"{user},{movie},{rating},{int(when.timestamp())}")
    return lines


def write_movielens(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    movies = ["movieId,title,genres"]
    movies += [f'{m},"Movie {m}, The ({1990 + m})",Drama|Comedy' for m in range(1, MOVIES + 1)]
    movies.append("7,A duplicate of movie 7 (2001),Drama")  # line 22
    (folder / "movies.csv").write_text("\n".join(movies) + "\n")
    ts = int(DAY1.timestamp())
    bad = [
        "this line, is broken",
        f"1,999999,4.0,{ts}",
        f",3,4.0,{ts}",
        f"2,3,9.5,{ts}",
        "2,4,4.0,1000",
        f"2,5,great,{ts}",
        f"3,1,4.0,{ts + 1}",
        f"3,1,4.0,{ts + 1}",
    ]
    (folder / "ratings.csv").write_text("\n".join(["userId,movieId,rating,timestamp", *bad, *good_ratings()]) + "\n")
    (folder / "tags.csv").write_text(f"userId,movieId,tag,timestamp\n1,1,Funny,{ts}\n2,1, funny ,{ts}\n1,2,dark,{ts}\n")
    posters = folder / "posters"
    posters.mkdir(exist_ok=True)
    for m in range(1, MOVIES + 1):
        if m == MISSING_POSTER:
            continue
        data = (
            b"\xff\xd8\xff\xe0 not really a jpeg"
            if m == CORRUPT_POSTER
            else _jpeg((m * 12, 80, 200), "PNG" if m == PNG_AS_JPG else "JPEG")
        )
        (posters / f"{m}.jpg").write_bytes(data)
    (posters / "999.jpg").write_bytes(_jpeg((1, 2, 3)))
    (posters / "notaposter.txt").write_text("hello")
    return folder
