"""MovieLens-format sources (`movies.csv`, `ratings.csv`, optional `tags.csv` and posters folder),
parsed and checked in Spark into classified records (see `dmf_features.ingest.quarantine`).

Images are kept in the `items` table as bytes, not as URIs: the table is then self-contained and
versioned (time travel gives the exact pixels an embedding was computed from), the content hash
covers them, and the embedding job needs no access to the original files. Posters are small
(MovieLens: 15 KB on average); a file larger than `ingest.max_image_bytes` is not read and its item
is marked `too_large`. A missing or unreadable poster never loses its item: the item is kept with
`image_status` saying what was wrong.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import StringType

from dmf_features.infra.config import IngestConfig
from dmf_features.infra.errors import PipelineError
from dmf_features.ingest import quarantine as q
from dmf_features.ingest.sources.lines import csv_fields, invalid_utf8_at, read_records

MOVIES_HEADER = "movieId,title,genres"
RATINGS_HEADER = "userId,movieId,rating,timestamp"
TAGS_HEADER = "userId,movieId,tag,timestamp"
NO_GENRES = "(no genres listed)"
_YEAR_SUFFIX = r"\s*\((\d{4})(?:[-–]\d{4})?\)\s*$"


class SourceError(PipelineError, ValueError):
    """The source as a whole is unusable (missing file, wrong header): nothing is ingested."""


@dataclass(frozen=True)
class MovielensFiles:
    name: str  # source name written on every row (movielens, synthetic, ...)
    movies: Path
    ratings: Path
    tags: Path | None
    posters: Path | None

    @classmethod
    def at(cls, name: str, folder: Path, posters: Path | None, with_tags: bool) -> MovielensFiles:
        for required in ("movies.csv", "ratings.csv"):
            if not (folder / required).is_file():
                raise SourceError(f"{folder}: {required} not found (expected a MovieLens-format folder)")
        tags = folder / "tags.csv"
        if posters is not None and not posters.is_dir():
            raise SourceError(f"{posters}: posters folder not found")
        return cls(name, folder / "movies.csv", folder / "ratings.csv", tags if with_tags and tags.is_file() else None, posters)


def _data_records(spark: SparkSession, path: Path, header: str, cfg: IngestConfig) -> tuple[DataFrame, int]:
    """The records after the header, with record ids, and how many there are. A record longer than
    `max_record_chars` keeps its raw text for the quarantine but is parsed as null (`_parsed`)."""
    records, count = read_records(spark, str(path), cfg.max_record_lines)
    first = records.where("line_no = 1").select("raw").first()
    _check_header(path, None if first is None else first.raw, header)
    data = records.where("line_no > 1").withColumn("record_id", F.concat(F.lit(f"{path.name}:"), "line_no"))
    bounded = F.when(F.length("raw") <= cfg.max_record_chars, F.col("raw"))
    return data.withColumn("in_scope", F.lit(True)).withColumn("_parsed", bounded), count - 1


def _check_header(path: Path, found: str | None, header: str) -> None:
    """A wrong header is a structural error: nothing is read, and the message names what differs."""
    if found is None:
        raise SourceError(f"{path}: the file is empty; expected the header {header!r}")
    text = found.strip().lstrip("\ufeff")
    expected = header.split(",")
    columns = [c.strip().strip('"') for c in text.split(",")]
    if columns == expected:
        return
    for separator in (";", "\t", "|"):
        if [c.strip().strip('"') for c in text.split(separator)] == expected:
            raise SourceError(f"{path}: columns are separated by {separator!r}; expected commas, as in the header {header!r}")
    missing = [c for c in expected if c not in columns]
    extra = [c for c in columns if c not in expected]
    problems = [f"missing column {c!r}" for c in missing] + [f"unexpected column {c!r}" for c in extra]
    if not problems:
        problems = [f"columns in the order {columns}"]
    raise SourceError(f"{path}: header {text[:80]!r} has {', '.join(problems)}; expected the header {header!r}")


def _record_checks(found: Column, header: str, cfg: IngestConfig) -> list[q.Check]:
    """The checks every CSV record gets before its fields mean anything, in order."""
    raw, fields = F.col("raw"), len(header.split(","))
    return [
        (
            F.length(raw) > cfg.max_record_chars,
            q.TOO_LONG,
            F.format_string(f"%d characters, more than ingest.max_record_chars ({cfg.max_record_chars})", F.length(raw)),
        ),
        (
            invalid_utf8_at(raw) > 0,
            q.INVALID_ENCODING,
            F.format_string(
                "not valid UTF-8 at character %d; convert the file to UTF-8 (e.g. iconv -f latin1 -t utf-8)", invalid_utf8_at(raw)
            ),
        ),
        (found != fields, q.UNPARSEABLE, F.format_string(f"expected {fields} fields ({header}), found %d", found)),
    ]


def _is_blank(c: Column) -> Column:
    return c.isNull() | (F.trim(c) == "")


def _not_a_number(field: Column, typed: Column, label: str) -> q.Check:
    return (~_is_blank(field) & typed.isNull(), q.UNPARSEABLE, F.format_string(f"{label} %s is not a number", field))


# ------------------------------------------------------------------------------------------ items
def parse_movies(spark: SparkSession, files: MovielensFiles, cfg: IngestConfig) -> q.Classified:
    """Classified item records: item_id, title (year and trailing article moved), year, genres."""
    lines, rows_in = _data_records(spark, files.movies, MOVIES_HEADER, cfg)
    (movie_id, title, genres), found = csv_fields(F.col("_parsed"), 3)
    item_id = F.trim(movie_id).try_cast("bigint")
    df = lines.select(
        "line_no",
        "record_id",
        "raw",
        "in_scope",
        found.alias("_found"),
        movie_id.alias("_id"),
        item_id.alias("item_id"),
        _clean_title(title).alias("title"),
        _year(title).alias("year"),
        F.when(F.trim(genres) == NO_GENRES, F.array().cast("array<string>"))
        .otherwise(F.split(F.trim(genres), r"\|"))
        .alias("genres"),
    )
    checks: list[q.Check] = [
        *_record_checks(F.col("_found"), MOVIES_HEADER, cfg),
        (_is_blank(F.col("_id")), q.NULL_KEY, F.lit("movieId is empty")),
        _not_a_number(F.col("_id"), F.col("item_id"), "movieId"),
    ]
    classified = q.classify(df, checks).drop("_found", "_id")
    records = q.flag_duplicates(classified, ["item_id"], "line_no", q.DUPLICATE_ITEM)
    return q.Classified(files.movies.name, "items", records, rows_in)


def _year(title: Column) -> Column:
    year = F.regexp_extract(title, _YEAR_SUFFIX, 1)
    return F.when(year != "", year.cast("int"))


def _clean_title(title: Column) -> Column:
    """'American President, The (1995)' -> 'The American President': what an encoder should read."""
    bare = F.trim(F.regexp_replace(F.coalesce(title, F.lit("")), _YEAR_SUFFIX, ""))
    return F.regexp_replace(bare, r"^(.*?), (The|A|An)( \(.*\))?$", "$2 $1$3")


def parse_tags(
    spark: SparkSession, files: MovielensFiles, known_items: DataFrame, cfg: IngestConfig
) -> tuple[DataFrame, q.Classified]:
    """(item_id, tags) with each item's distinct lower-cased tags, and the classified tag lines.

    Tags are a content attribute here, not behaviour: they are not point-in-time, so features that
    must not see the future should not use them."""
    assert files.tags is not None
    lines, rows_in = _data_records(spark, files.tags, TAGS_HEADER, cfg)
    (user, movie, tag, _), found = csv_fields(F.col("_parsed"), 4)
    known = known_items.select("item_id", F.lit(True).alias("_known"))
    df = lines.select(
        "line_no",
        "record_id",
        "raw",
        "in_scope",
        found.alias("_found"),
        movie.alias("_id"),
        F.trim(movie).try_cast("bigint").alias("item_id"),
        F.lower(F.trim(tag)).alias("tag"),
    ).join(F.broadcast(known), "item_id", "left")
    checks: list[q.Check] = [
        *_record_checks(F.col("_found"), TAGS_HEADER, cfg),
        (_is_blank(F.col("_id")), q.NULL_KEY, F.lit("movieId is empty")),
        _not_a_number(F.col("_id"), F.col("item_id"), "movieId"),
        (F.col("_known").isNull(), q.UNKNOWN_ITEM, F.format_string("movieId %d is not in movies.csv", "item_id")),
    ]
    classified = q.classify(df, checks)
    tags = (
        classified.where(F.col("reason").isNull() & ~_is_blank(F.col("tag")))
        .groupBy("item_id")
        .agg(F.array_sort(F.collect_set("tag")).alias("tags"))
    )
    return tags, q.Classified(files.tags.name, "items", classified.drop("_found", "_id", "_known", "tag"), rows_in)


# ---------------------------------------------------------------------------------------- posters
def read_posters(spark: SparkSession, files: MovielensFiles, known_items: DataFrame, cfg: IngestConfig) -> q.Classified:
    """Classified poster files: item_id, image (bytes), image_path, image_status, image_sha256.

    A file is rejected only when it cannot belong to an item (name not `<movieId>.<ext>`, unknown
    item, second file for one item); a bad image is kept with its status for the item to carry."""
    assert files.posters is not None
    listing = spark.read.format("binaryFile").load(str(files.posters))
    rows_in = listing.select("path").count()
    small = listing.where(F.col("length") <= cfg.max_image_bytes)
    large = listing.where(F.col("length") > cfg.max_image_bytes).select(  # content never read
        "path", "length", F.lit(None).cast("binary").alias("content")
    )
    df = small.select("path", "length", "content").unionByName(large)
    name = F.element_at(F.split("path", "/"), -1)
    item_id = F.regexp_extract(name, r"^(\d+)\.(?i:jpe?g|png|webp|gif|bmp)$", 1)
    known = known_items.select("item_id", F.lit(True).alias("_known"))
    df = df.select(
        F.concat(F.lit("posters/"), name).alias("record_id"),
        F.col("path").alias("raw"),
        F.lit(True).alias("in_scope"),
        F.col("path").alias("image_path"),
        name.alias("_name"),
        F.when(item_id != "", item_id.cast("bigint")).alias("item_id"),
        F.when(F.col("content").isNotNull() & (F.col("length") > 0), F.col("content")).alias("image"),
        F.when(F.col("content").isNull(), F.lit("too_large"))
        .when(F.col("length") == 0, F.lit("empty"))
        .otherwise(_image_check(F.col("content")))
        .alias("image_status"),
    ).join(F.broadcast(known), "item_id", "left")
    checks: list[q.Check] = [
        (F.col("item_id").isNull(), q.UNRECOGNISED_FILE, F.format_string("%s is not named <movieId>.jpg", "_name")),
        (F.col("_known").isNull(), q.UNKNOWN_ITEM, F.format_string("movieId %d is not in movies.csv", "item_id")),
    ]
    classified = q.classify(df, checks).drop("_name", "_known")
    classified = classified.withColumn("image_sha256", F.sha2("image", 256))
    records = q.flag_duplicates(classified, ["item_id"], "image_path", q.DUPLICATE_ITEM)
    return q.Classified("posters", "items", records, rows_in)


@F.pandas_udf(StringType())
def _image_check(content: pd.Series) -> pd.Series:
    """'ok' when PIL can parse the file's structure, else 'corrupt' (full decoding is the embed job's)."""
    from PIL import Image

    def check(data: bytes) -> str:
        try:
            with Image.open(io.BytesIO(data)) as img:
                img.verify()
            return "ok"
        except Exception:  # any parser failure means the same to us: not a usable image
            return "corrupt"

    return content.map(check)


# ----------------------------------------------------------------------------------------- events
def parse_ratings(
    spark: SparkSession,
    files: MovielensFiles,
    known_items: DataFrame,
    cfg: IngestConfig,
    in_scope: Column,
    max_event_time: Column,
) -> q.Classified:
    """Classified rating events; `in_scope` (a condition on column `date`) marks those a dated run
    covers. A line whose date cannot be determined belongs to every scope: it is always reported."""
    lines, rows_in = _data_records(spark, files.ratings, RATINGS_HEADER, cfg)
    (user, movie, rating, ts), found = csv_fields(F.col("_parsed"), 4)
    seconds = F.trim(ts).try_cast("bigint")
    min_seconds = int(cfg.min_event_time.timestamp())
    in_time = seconds.between(F.lit(min_seconds), F.unix_seconds(max_event_time))
    event_time = F.when(in_time, F.timestamp_seconds(seconds))
    df = lines.select(
        "line_no",
        "record_id",
        "raw",
        found.alias("_found"),
        user.alias("_user"),
        movie.alias("_movie"),
        rating.alias("_rating"),
        ts.alias("_ts"),
        F.trim(user).try_cast("bigint").alias("user_id"),
        F.trim(movie).try_cast("bigint").alias("item_id"),
        F.trim(rating).try_cast("double").alias("rating"),
        seconds.alias("_seconds"),
        event_time.alias("event_time"),
    ).withColumn("date", F.to_date("event_time"))
    df = df.withColumn("in_scope", F.col("date").isNull() | in_scope)
    known = known_items.select("item_id", F.lit(True).alias("_known"))
    df = df.join(F.broadcast(known), "item_id", "left")
    checks: list[q.Check] = [
        *_record_checks(F.col("_found"), RATINGS_HEADER, cfg),
        (_is_blank(F.col("_user")), q.NULL_KEY, F.lit("userId is empty")),
        (_is_blank(F.col("_movie")), q.NULL_KEY, F.lit("movieId is empty")),
        (_is_blank(F.col("_rating")), q.MISSING_VALUE, F.lit("rating is empty")),
        (_is_blank(F.col("_ts")), q.MISSING_VALUE, F.lit("timestamp is empty")),
        _not_a_number(F.col("_user"), F.col("user_id"), "userId"),
        _not_a_number(F.col("_movie"), F.col("item_id"), "movieId"),
        _not_a_number(F.col("_rating"), F.col("rating"), "rating"),
        _not_a_number(F.col("_ts"), F.col("_seconds"), "timestamp"),
        (
            ~F.col("rating").between(cfg.rating_min, cfg.rating_max),
            q.OUT_OF_RANGE,
            F.format_string(f"rating %s outside [{cfg.rating_min}, {cfg.rating_max}]", "rating"),
        ),
        (
            F.col("_seconds") < min_seconds,
            q.OUT_OF_RANGE,
            F.format_string(f"timestamp %s is before {cfg.min_event_time.isoformat()}", "_ts"),
        ),
        (
            F.col("event_time").isNull(),
            q.OUT_OF_RANGE,  # the detail names no run time: re-runs agree
            F.format_string("timestamp %s is in the future", "_ts"),
        ),
        (F.col("_known").isNull(), q.UNKNOWN_ITEM, F.format_string("movieId %d is not in movies.csv", "item_id")),
    ]
    classified = q.classify(df, checks).select(
        "line_no",
        "record_id",
        "raw",
        "in_scope",
        "reason",
        "detail",
        "user_id",
        "item_id",
        "event_time",
        F.lit("rating").alias("event_type"),
        "rating",
        (F.col("rating") >= cfg.click_threshold).cast("int").alias("label"),
        F.lit(files.name).alias("source"),
        "date",
    )
    records = q.flag_duplicates(classified, ["user_id", "item_id", "event_time", "event_type"], "line_no", q.DUPLICATE_EVENT)
    return q.Classified(files.ratings.name, "events", records, rows_in)
