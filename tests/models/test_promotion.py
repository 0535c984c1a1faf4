"""The promotion gate's row alignment (the whole gate runs in tests/dags/test_dag_runs.py)."""

import pyarrow as pa

from models.promotion import Decision, common_rows


def test_common_rows_keeps_the_shared_sample_ids_aligned_row_by_row():
    candidate = pa.table({"sample_id": ["c", "a", "b", "x"], "feature": [3.0, 1.0, 2.0, 9.0]})
    champion = pa.table({"sample_id": ["b", "y", "c", "a"], "feature": [20.0, 0.0, 30.0, 10.0]})
    mine, theirs = common_rows(candidate, champion)
    assert mine.column("sample_id").to_pylist() == theirs.column("sample_id").to_pylist() == ["a", "b", "c"]
    assert mine.column("feature").to_pylist() == [1.0, 2.0, 3.0] and theirs.column("feature").to_pylist() == [10.0, 20.0, 30.0]


def test_a_decision_round_trips_through_json_and_renders_its_reason_and_note():
    decision = Decision(
        False,
        "AUC 0.7 does not beat the champion (version 1) 0.8",
        "dmf",
        "champion",
        "2",
        "1",
        rows=100,
        users=10,
        auc={"candidate": {"estimate": 0.7, "low": 0.6, "high": 0.8}},
        note="the champion was trained on other item vectors",
    )
    assert Decision.from_json(decision.to_json()) == decision
    text = decision.render()
    assert text.startswith("dmf version 2: REFUSED (AUC 0.7 does not beat") and "(the champion was trained on other" in text
    assert "candidate  AUC 0.7000 [0.6000, 0.8000]" in text
