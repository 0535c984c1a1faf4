"""Which UTC day a daily-pipeline run processes, decided once from what the run knows.

The daily DAG uses a data-interval timetable aligned to UTC midnight, so a scheduled or backfill run
covers [day 00:00, next day 00:00) and fires once that day is over: it processes its interval's first
day (Airflow 3's default cron timetable would instead process the day the run fires, which is not
complete yet). A manual run may name a day (the `date` param) or a logical date; a run with neither
(Airflow 3 lets manual and asset-triggered runs have no logical date) processes the last complete day
before it was triggered."""

from __future__ import annotations

import datetime as dt

INTERVAL_RUN_TYPES = ("scheduled", "backfill")


def processing_day(
    run_type: str,
    data_interval_start: dt.datetime | None,
    logical_date: dt.datetime | None,
    run_after: dt.datetime,
    requested: str | None = None,
) -> dt.date:
    """The day to process; `requested` (YYYY-MM-DD, the run's `date` param) wins over everything."""
    if requested:
        try:
            return dt.date.fromisoformat(requested.strip())
        except ValueError:
            raise ValueError(f"param date={requested!r} is not a day: give it as YYYY-MM-DD, e.g. 2018-09-24") from None
    if run_type in INTERVAL_RUN_TYPES and data_interval_start is not None:
        return _utc(data_interval_start).date()
    last_complete = _utc(run_after).date() - dt.timedelta(days=1)
    if logical_date is not None and _utc(logical_date).date() <= last_complete:
        return _utc(logical_date).date()
    return last_complete


def _utc(moment: dt.datetime) -> dt.datetime:
    if moment.tzinfo is None:
        raise ValueError(f"{moment} has no time zone: Airflow passes aware datetimes")
    return moment.astimezone(dt.UTC)
