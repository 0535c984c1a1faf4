"""The `dmf` command: help, configuration errors, and the lake maintenance commands on a real table."""

from __future__ import annotations

import argparse

import pytest

from dmf_features.cli import build_parser, main


def _commands(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every command path of the parser (`()`, `("train",)`, `("lake", "vacuum")`, ...), found from the parser
    itself so that a new command is covered without touching this test."""
    found = [prefix]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found += _commands(sub, (*prefix, name))
    return found


COMMANDS = _commands(build_parser())


def test_the_command_list_is_complete():
    assert {
        ("run",),
        ("ingest",),
        ("validate",),
        ("embed",),
        ("align",),
        ("features",),
        ("train",),
        ("compare",),
        ("tune",),
        ("similar",),
        ("recommend",),
        ("lake", "vacuum"),
    } <= set(COMMANDS)


@pytest.mark.parametrize("argv", COMMANDS, ids=lambda argv: " ".join(argv) or "dmf")
def test_every_command_explains_itself(argv, capsys):
    with pytest.raises(SystemExit) as done:
        main([*argv, "--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: dmf") and len(out.splitlines()) > 3
    if argv:  # each command names what it does beyond the usage line
        assert "--config" in out or "ACTION" in out


def test_every_command_has_a_handler():
    parser = build_parser()
    for argv in COMMANDS:
        sub = parser
        for name in argv:
            sub = next(a for a in sub._actions if isinstance(a, argparse._SubParsersAction)).choices[name]
        is_group = any(isinstance(a, argparse._SubParsersAction) for a in sub._actions)
        assert is_group or callable(sub.get_default("func")), argv


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
