"""Config loading and validation, and the Spark settings derived from it (no Spark started)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from dmf_features.infra.config import ConfigError, load_config
from dmf_features.infra.spark import spark_conf

ROOT = Path(__file__).resolve().parents[2]
LOCAL = ROOT / "conf" / "local.yaml"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


MINIMAL = "lake: {{uri: lake}}\nsource: {{kind: movielens, movielens: {{path: {data}}}}}\n"


def test_the_shipped_default_resolves_paths_against_the_project(tmp_path):
    cfg = load_config(LOCAL, [f"source.movielens.path={tmp_path}", f"source.movielens.posters={tmp_path}"])
    assert cfg.lake.uri == str(ROOT / "lake")
    assert cfg.spark.master == "local[*]" and cfg.mlflow.tracking_uri.startswith("sqlite:///")
    assert cfg.quality.results_dir == ROOT / "reports" / "validation"


def test_overrides_are_typed_and_applied(tmp_path):
    cfg = load_config(
        write(tmp_path, MINIMAL.format(data=tmp_path)),
        ["spark.master=local[1]", "spark.shuffle_partitions=3", "ingest.strict=true"],
    )
    assert (cfg.spark.master, cfg.spark.shuffle_partitions, cfg.ingest.strict) == ("local[1]", 3, True)
    assert cfg.lake.uri == str(tmp_path / "lake")  # relative to the file's folder when root is not set


@pytest.mark.parametrize(
    "override, message",
    [
        ("spark.mastr=local[1]", r"spark\.mastr: unknown key \(did you mean 'master'\?\)"),
        ("spark.shuffle_partitions=many", r"spark\.shuffle_partitions: Input should be a valid integer"),
        ("source.kind=kafka", r"source\.kind: Input should be 'movielens' or 'synthetic'"),
        ("source.kind=synthetic", r"kind is 'synthetic' but the section source\.synthetic is missing"),
        ("spark.gpu.executor_amount=1", r"Spark hangs on GPU requests"),
        ("ingest.rating_min=9", r"rating_min must not exceed rating_max"),
        ("spark.master", r"expected KEY\.PATH=VALUE"),
    ],
)
def test_bad_configs_name_the_key_and_the_file(tmp_path, override, message):
    path = write(tmp_path, MINIMAL.format(data=tmp_path))
    with pytest.raises(ConfigError, match=message) as error:
        load_config(path, [override])
    assert str(path) in str(error.value) or "--set" in str(error.value)


def test_missing_input_path_and_missing_section_are_errors(tmp_path):
    with pytest.raises(ConfigError, match=r"source\.movielens\.path: .*/nowhere does not exist"):
        load_config(write(tmp_path, MINIMAL.format(data=tmp_path / "nowhere")))
    with pytest.raises(ConfigError, match=r"lake: required key is missing"):
        load_config(write(tmp_path, f"source: {{kind: movielens, movielens: {{path: {tmp_path}}}}}\n"))
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "absent.yaml")


def test_gpu_settings_reach_cluster_masters_only(tmp_path):
    cluster = load_config(
        ROOT / "conf" / "cluster.example.yaml", [f"source.movielens.path={tmp_path}", f"source.movielens.posters={tmp_path}"]
    )
    conf = spark_conf(cluster.spark)
    assert conf["spark.executor.resource.gpu.amount"] == "1" and conf["spark.task.resource.gpu.amount"] == "1.0"
    assert conf["spark.sql.execution.arrow.maxRecordsPerBatch"] == "512"
    local = spark_conf(load_config(LOCAL, [f"source.movielens.path={tmp_path}", f"source.movielens.posters={tmp_path}"]).spark)
    assert not any("resource.gpu" in key for key in local)
    assert local["spark.sql.session.timeZone"] == "UTC" and local["spark.driver.host"] == "127.0.0.1"


def test_the_drivers_model_loading_environment_reaches_the_python_workers(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("TRANSFORMERS_VERBOSITY", raising=False)
    conf = spark_conf(load_config(write(tmp_path, MINIMAL.format(data=tmp_path))).spark)
    assert conf["spark.executorEnv.HF_HUB_OFFLINE"] == "1" and "spark.executorEnv.TRANSFORMERS_VERBOSITY" not in conf


GPU = ["spark.gpu.executor_amount=1", "spark.gpu.task_amount=1"]


@pytest.mark.parametrize("master", ["spark://127.0.0.1:7077", "yarn", "k8s://https://api:6443"])
def test_gpu_settings_are_accepted_with_a_cluster_master(tmp_path, master):
    conf = spark_conf(load_config(write(tmp_path, MINIMAL.format(data=tmp_path)), [f"spark.master={master}", *GPU]).spark)
    assert conf["spark.master"] == master and conf["spark.executor.resource.gpu.amount"] == "1"


@pytest.mark.parametrize("master", ["local", "local[2]", "local[*]"])
def test_gpu_settings_are_refused_with_a_local_master(tmp_path, master):
    with pytest.raises(ConfigError, match=rf"spark: gpu: .* Spark hangs on GPU requests with master {re.escape(repr(master))}"):
        load_config(write(tmp_path, MINIMAL.format(data=tmp_path)), [f"spark.master={master}", *GPU])


def test_synthetic_config_is_valid():
    cfg = load_config(ROOT / "conf" / "synthetic.yaml")
    assert cfg.source.kind == "synthetic" and cfg.source.synthetic.output == ROOT / "data" / "synthetic"
