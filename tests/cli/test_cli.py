"""The `dmf` command: help, configuration errors, and the lake maintenance commands on a real table."""

from __future__ import annotations

import pytest

from dmf_features.cli import main


@pytest.mark.parametrize("argv", [[], ["run"], ["ingest"], ["validate"], ["train"], ["compare"], ["tune"], ["recommend"],
                                  ["lake"], ["lake", "vacuum"]])
def test_every_command_explains_itself(argv, capsys):
    with pytest.raises(SystemExit) as done:
        main([*argv, "--help"])
    assert done.value.code == 0
    assert "usage: dmf" in capsys.readouterr().out


def test_a_bad_config_exits_2_with_the_key_named(tmp_path, capsys):
    assert main(["lake", "list", "--config", str(tmp_path / "missing.yaml")]) == 2
    assert "config file not found" in capsys.readouterr().err
    config = tmp_path / "c.yaml"
    config.write_text(f"lake: {{uri: {tmp_path}}}\nsource: {{kind: movielens, movielens: {{path: {tmp_path}}}}}\n")
    assert main(["lake", "list", "--config", str(config), "--set", "lake.retries=3"]) == 2
    assert "lake.retries: unknown key (did you mean 'commit_retries'?)" in capsys.readouterr().err


def test_a_bad_tuning_grid_or_baseline_is_a_clear_error(tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text(f"lake: {{uri: {tmp_path}}}\nsource: {{kind: movielens, movielens: {{path: {tmp_path}}}}}\n")
    assert main(["tune", "--grid", "architecture.dropout", "--config", str(config)]) == 1
    assert "write KEY=V1,V2" in capsys.readouterr().err
    assert main(["compare", "--baseline", "xgboost", "--config", str(config)]) == 1
    assert "unknown baseline(s) ['xgboost']" in capsys.readouterr().err


@pytest.mark.e2e
def test_lake_commands_list_history_optimize_vacuum(spark, lake, tmp_path, capsys):
    for i in range(3):
        lake.write(spark.range(10).selectExpr("id", f"{i} as batch").coalesce(1), "numbers")
    config = tmp_path / "c.yaml"
    config.write_text(f"lake: {{uri: {lake.root}}}\nsource: {{kind: movielens, movielens: {{path: {tmp_path}}}}}\n")
    args = ["--config", str(config)]

    assert main(["lake", "list", *args]) == 0
    assert "numbers" in capsys.readouterr().out
    assert main(["lake", "optimize", "numbers", *args]) == 0
    assert "3 files compacted into 1" in capsys.readouterr().out
    assert main(["lake", "history", "numbers", *args]) == 0
    history = capsys.readouterr().out.splitlines()
    assert history[0].startswith("v3") and "OPTIMIZE" in history[0] and len(history) == 4
    assert main(["lake", "vacuum", "numbers", "--retention-hours", "0", "--dry-run", *args]) == 0
    assert "would delete 3 files" in capsys.readouterr().out
    assert main(["lake", "vacuum", "numbers", "--retention-hours", "0", *args]) == 0
    assert "deleted 3 files" in capsys.readouterr().out
    assert lake.read(spark, "numbers").count() == 30
    assert main(["lake", "history", "absent", *args]) == 1
    assert "does not exist" in capsys.readouterr().err
