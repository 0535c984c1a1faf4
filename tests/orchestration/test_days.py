"""Which day a daily run processes, for every kind of run (the real timetable's intervals are checked
in tests/dags, real runs in tests/dags/test_dag_runs.py)."""

import datetime as dt

import pytest

from dmf_features.orchestration.days import processing_day

UTC = dt.UTC
NOW = dt.datetime(2026, 12, 1, 18, 53, tzinfo=UTC)


def at(day: str, hour: int = 0) -> dt.datetime:
    return dt.datetime.fromisoformat(day).replace(hour=hour, tzinfo=UTC)


@pytest.mark.parametrize("run_type", ["scheduled", "backfill"])
def test_interval_runs_process_their_interval_day_not_the_day_they_fire(run_type):
    # the run for 2018-09-24 fires at 2018-09-25 00:00 (or years later, for a backfill)
    assert processing_day(run_type, at("2018-09-24"), at("2018-09-24"), at("2018-09-25")) == dt.date(2018, 9, 24)
    assert processing_day(run_type, at("2018-09-24"), at("2018-09-24"), NOW) == dt.date(2018, 9, 24)


def test_a_manual_run_for_a_past_date_processes_that_date():
    assert processing_day("manual", at("2018-09-22"), at("2018-09-24"), NOW) == dt.date(2018, 9, 24)


def test_a_manual_run_without_a_date_processes_the_last_complete_day():
    assert processing_day("manual", None, None, NOW) == dt.date(2026, 11, 30)
    assert processing_day("asset_triggered", None, None, NOW) == dt.date(2026, 11, 30)
    # Airflow fills in "now" as the logical date of a trigger without one: today is not over yet
    assert processing_day("manual", at("2026-11-30"), NOW, NOW) == dt.date(2026, 11, 30)


def test_the_date_param_wins_over_everything():
    assert processing_day("scheduled", at("2018-09-24"), at("2018-09-24"), NOW, "2018-01-02") == dt.date(2018, 1, 2)
    assert processing_day("manual", None, None, NOW, " 2018-01-02 ") == dt.date(2018, 1, 2)


def test_a_bad_date_param_names_the_param_and_the_format():
    with pytest.raises(ValueError, match=r"param date='2018-13-01' is not a day: give it as YYYY-MM-DD"):
        processing_day("manual", None, None, NOW, "2018-13-01")


def test_days_are_utc_days():
    tokyo = dt.timezone(dt.timedelta(hours=9))
    start = dt.datetime(2018, 9, 25, 8, tzinfo=tokyo)  # 2018-09-24 23:00 UTC
    assert processing_day("scheduled", start, start, NOW) == dt.date(2018, 9, 24)
    with pytest.raises(ValueError, match="no time zone"):
        processing_day("scheduled", dt.datetime(2018, 9, 24), None, NOW)
