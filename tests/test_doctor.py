"""`dmf doctor`: the real checks where they are cheap (Java here, a missing lake, a closed standalone
master, a YARN master, a missing encoder folder, a tracking store not created yet), how results render
and the exit code, deadlines and crashing checks, and the whole command on a tiny set-up (e2e: Spark)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pyarrow as pa
import pytest

from dmf_features.doctor import CHECKS, Check, Finding, Status, diagnose, exit_code, run_check
from dmf_features.infra.config import Config, load_config

ROOT = Path(__file__).resolve().parents[1]
CHECK = {check.name: check for check in CHECKS}


def tiny_config(folder: Path, **sections: dict) -> Path:
    """A config file whose paths all lie under `folder` (nothing there yet), with `sections` replaced."""
    raw = {
        "spark": {"master": "local[1]", "shuffle_partitions": 1, "driver_memory": "1g", "conf": {"spark.ui.enabled": "false"}},
        "lake": {"uri": str(folder / "lake")},
        "mlflow": {"tracking_uri": f"sqlite:///{folder / 'mlflow.db'}", "experiment": "doctor"},
        "source": {"kind": "movielens", "movielens": {"path": str(folder)}},
        **sections,
    }
    path = folder / "doctor.yaml"
    path.write_text(json.dumps(raw))
    return path


def config(folder: Path, **sections: dict) -> Config:
    return load_config(tiny_config(folder, **sections))


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_java_here_is_found_and_supported(tmp_path):
    finding = run_check(CHECK["java"], config(tmp_path)).finding
    assert finding.status is Status.OK and finding.summary.startswith(("Java 17", "Java 21")), finding


def test_a_missing_lake_is_a_problem_naming_the_path(tmp_path):
    finding = run_check(CHECK["lake"], config(tmp_path)).finding
    assert finding.status is Status.PROBLEM
    assert finding.summary == f"{tmp_path / 'lake'} does not exist" and "lake.uri" in finding.fix


def test_a_run_that_did_not_finish_is_a_problem_saying_which_stage_to_run_again(tmp_path):
    from deltalake import write_deltalake

    from dmf_features.infra.lake import Lake

    cfg = config(tmp_path)
    write_deltalake(str(tmp_path / "lake" / "samples"), pa.table({"sample_id": ["a"]}))
    lake = Lake(cfg.lake)
    with lake.stage_run("features", "all dates", ["samples"]):
        pass
    assert run_check(CHECK["lake"], cfg).finding.status is Status.OK
    with pytest.raises(RuntimeError), lake.stage_run("features", "2024-01-02", ["samples"]):
        raise RuntimeError("killed")
    finding = run_check(CHECK["lake"], cfg).finding
    assert finding.status is Status.PROBLEM and "the last features run(s) did not finish" in finding.summary
    assert "`dmf features` again" in finding.fix and any("last complete features run" in d for d in finding.details)


def test_a_standalone_master_that_does_not_answer_is_a_problem_with_a_fix(tmp_path):
    master = f"spark://127.0.0.1:{closed_port()}"
    finding = run_check(CHECK["spark"], config(tmp_path, spark={"master": master})).finding
    assert finding.status is Status.PROBLEM and finding.summary.startswith(f"{master}: nothing answers")
    assert "start-master.sh" in finding.fix and "spark.master" in finding.fix


def test_a_yarn_master_is_skipped_with_a_note(tmp_path):
    finding = run_check(CHECK["spark"], config(tmp_path, spark={"master": "yarn"})).finding
    assert finding.status is Status.SKIPPED and "spark-submit a stage" in finding.summary


def test_an_encoder_folder_that_is_not_there_is_a_problem_naming_kind_and_path(tmp_path):
    missing = tmp_path / "clip"
    cfg = config(tmp_path, embedding={"text": {"kind": "clip-text", "path": str(missing)}, "image": None})
    finding = run_check(CHECK["text encoder"], cfg).finding
    assert finding.status is Status.PROBLEM
    assert finding.summary == f"clip-text: {missing} is not a folder" and "embedding.text.path" in finding.fix
    assert run_check(CHECK["image encoder"], cfg).finding.status is Status.SKIPPED


def test_a_tracking_store_not_created_yet_is_fine_and_is_not_created(tmp_path):
    finding = run_check(CHECK["mlflow"], config(tmp_path)).finding
    assert finding.status is Status.OK and "the first `dmf train` creates it" in finding.summary
    assert not (tmp_path / "mlflow.db").exists()


def test_results_render_as_aligned_columns_and_a_problem_exits_1(tmp_path):
    lines: list[str] = []
    cfg = config(tmp_path, spark={"master": f"spark://127.0.0.1:{closed_port()}"})
    results = diagnose(cfg, lines.append, [CHECK["java"], CHECK["spark"], CHECK["lake"]])
    assert [r.finding.status for r in results] == [Status.OK, Status.PROBLEM, Status.PROBLEM]
    assert exit_code(results) == 1 and lines[-1] == "2 problem(s): spark, lake"
    header, *rows = "\n".join(lines[:-1]).splitlines()
    status_column, finding_column = header.index("status"), header.index("finding")
    for name, status in (("java", "OK"), ("spark", "PROBLEM"), ("lake", "PROBLEM")):
        row = next(r for r in rows if r.startswith(name + " "))
        assert row.index(status, len(name)) == status_column and row[finding_column - 2 : finding_column] == "  "
    fixes = [r for r in rows if r.lstrip().startswith("fix: ")]
    assert len(fixes) == 2 and all(r.index("fix: ") == finding_column for r in fixes)

    fine = diagnose(config(tmp_path, spark={"master": "yarn"}), lines.append, [CHECK["java"], CHECK["spark"]])
    assert exit_code(fine) == 0 and lines[-1] == "no problems (2 checks, 1 skipped)"


def test_a_check_that_hangs_or_crashes_is_a_problem_and_the_others_still_run(tmp_path):
    release = threading.Event()

    def hang(cfg: Config) -> Finding:
        release.wait(30)
        return Finding(Status.OK, "answered too late")

    hangs, crashes = Check("hangs", hang, 0.2, "look at X"), Check("crashes", lambda cfg: 1 / 0, 10, "look at Y")
    try:
        results = diagnose(config(tmp_path), lambda line: None, [hangs, crashes, CHECK["java"]])
    finally:
        release.set()
    assert [(r.finding.status, r.finding.summary, r.finding.fix) for r in results[:2]] == [
        (Status.PROBLEM, "no answer within 0.2 s", "look at X"),
        (Status.PROBLEM, "the check failed: ZeroDivisionError: division by zero", "look at Y"),
    ]
    assert results[2].finding.status is Status.OK and exit_code(results) == 1


@pytest.mark.e2e
def test_dmf_doctor_on_a_tiny_set_up_finds_no_problem(tmp_path):
    """The command itself: Spark on one core, a lake with a table, a store with a champion, the shipped
    encoders (nothing is downloaded), Airflow on the project's DAG folder."""
    from deltalake import write_deltalake
    from mlflow import MlflowClient

    path = tiny_config(tmp_path)
    write_deltalake(str(tmp_path / "lake" / "items"), pa.table({"item_id": [1, 2, 3]}))
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    client.create_experiment("doctor")
    client.create_registered_model("dmf")
    version = client.create_model_version("dmf", source=str(tmp_path / "model")).version
    client.set_registered_model_alias("dmf", "champion", version)

    result = subprocess.run(
        [sys.executable, "-m", "dmf_features.cli", "doctor", "--config", str(path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    rows = {line.split("  ")[0]: line for line in result.stdout.splitlines() if "  " in line}
    for name in CHECK:
        assert " OK " in rows[name], result.stdout
    assert "Spark 4" in rows["spark"] and f"{tmp_path / 'lake'}: 1 table(s)" in rows["lake"]
    assert "items" in result.stdout and "3 rows" in result.stdout
    assert "minilm-l6-v2@" in rows["text encoder"] and "efficientnet-lite0@" in rows["image encoder"]
    assert "experiment 'doctor' exists; model 'dmf': 1 version(s), @champion is version 1" in rows["mlflow"]
    assert "3 DAGs parse" in rows["airflow"]
    assert result.stdout.rstrip().endswith("no problems (7 checks, 0 skipped)")
