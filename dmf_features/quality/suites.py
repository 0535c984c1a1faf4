"""Expectation suites, one per lake table: the contract a table must meet before later stages read it.

On Spark every expectation costs at least one job, so the suites check the contract (keys, required
columns, value domains, non-emptiness), not statistics. A new table gets a builder function here
and an entry in `SUITES`; the runner needs no change.
"""

from __future__ import annotations

from collections.abc import Callable

import great_expectations as gx
import great_expectations.expectations as gxe

from dmf_features import schemas
from dmf_features.infra.config import ConfigError, IngestConfig

SuiteBuilder = Callable[[IngestConfig], gx.ExpectationSuite]

MIN_YEAR = 1870  # the first films (MovieLens has titles from the 1870s)
MAX_YEAR = 2100


def items_suite(ingest: IngestConfig) -> gx.ExpectationSuite:
    """Items: a unique id, the text the embedders need, a known image status, a plausible year."""
    (key,) = schemas.ITEMS.keys
    return gx.ExpectationSuite(
        name=schemas.ITEMS.name,
        expectations=[
            gxe.ExpectColumnValuesToNotBeNull(column=key),
            gxe.ExpectColumnValuesToBeUnique(column=key),
            gxe.ExpectColumnValuesToNotBeNull(column="title"),
            gxe.ExpectColumnValuesToNotBeNull(column="content_hash"),
            gxe.ExpectColumnValuesToBeInSet(column="image_status", value_set=list(schemas.IMAGE_STATUSES)),
            gxe.ExpectColumnValuesToBeBetween(column="year", min_value=MIN_YEAR, max_value=MAX_YEAR),
            gxe.ExpectTableRowCountToBeBetween(min_value=1),
        ],
    )


def events_suite(ingest: IngestConfig) -> gx.ExpectationSuite:
    """Events: the columns joins and partitions rely on, ratings in the ingest range, 0/1 labels,
    and one row per event key (a duplicate would count a click twice)."""
    return gx.ExpectationSuite(
        name=schemas.EVENTS.name,
        expectations=[
            *(gxe.ExpectColumnValuesToNotBeNull(column=c) for c in ("user_id", "item_id", "event_time", "date")),
            gxe.ExpectColumnValuesToBeBetween(column="rating", min_value=ingest.rating_min, max_value=ingest.rating_max),
            gxe.ExpectColumnValuesToBeInSet(column="label", value_set=[0, 1]),
            gxe.ExpectCompoundColumnsToBeUnique(column_list=list(schemas.EVENTS.keys)),
            gxe.ExpectTableRowCountToBeBetween(min_value=1),
        ],
    )


def samples_suite(ingest: IngestConfig) -> gx.ExpectationSuite:
    """Samples: one row per sample id, the columns the trainer splits and joins on, 0/1 labels and
    histories within their length (the daily DAG's gate before training sees a new version)."""
    (key,) = schemas.SAMPLES.keys
    return gx.ExpectationSuite(
        name=schemas.SAMPLES.name,
        expectations=[
            *(gxe.ExpectColumnValuesToNotBeNull(column=c) for c in (key, "user_id", "item_id", "event_time", "date")),
            gxe.ExpectColumnValuesToBeUnique(column=key),
            gxe.ExpectColumnValuesToBeInSet(column="label", value_set=[0, 1]),
            gxe.ExpectColumnValuesToBeBetween(column="hist_len", min_value=0),
            gxe.ExpectColumnPairValuesAToBeGreaterThanB(column_A="long_len", column_B="hist_len", or_equal=True),
            gxe.ExpectTableRowCountToBeBetween(min_value=1),
        ],
    )


SUITES: dict[str, SuiteBuilder] = {
    schemas.ITEMS.name: items_suite,
    schemas.EVENTS.name: events_suite,
    schemas.SAMPLES.name: samples_suite,
}


def suite_for(table: str, ingest: IngestConfig) -> gx.ExpectationSuite:
    """A fresh suite for `table`: adding a suite to a GX context binds it there, so each run builds its own."""
    if table not in SUITES:
        raise ConfigError(f"no expectation suite for table {table!r}; suites exist for {sorted(SUITES)}")
    return SUITES[table](ingest)
