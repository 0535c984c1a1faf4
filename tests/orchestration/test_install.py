"""The Airflow extra brings pyspark-client, which installs into the same `pyspark/` folder as pyspark:
the venv must still hold the full pyspark (jars, spark-submit) at the pinned version."""

import os
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def pinned() -> dict[str, str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    specs = project["dependencies"] + [s for extra in project["optional-dependencies"].values() for s in extra]
    return dict(spec.split("==") for spec in specs)


def test_airflow_and_its_spark_provider_are_installed_at_the_pinned_versions():
    versions = pinned()
    for package in ("apache-airflow", "apache-airflow-providers-apache-spark", "pyspark-client", "pyspark"):
        assert metadata.version(package) == versions[package], package


def test_pyspark_is_still_the_full_distribution_with_its_jars():
    import pyspark

    folder = Path(pyspark.__file__).parent
    assert pyspark.__version__ == pinned()["pyspark"]
    assert len(list((folder / "jars").glob("spark-core_*.jar"))) == 1
    assert pyspark.__version__ == metadata.version("pyspark-client")  # same files, same version: none clobbers the other
    venv_bin = Path(sys.executable).parent  # on PATH, as make and the Airflow services put it
    env = {**os.environ, "PATH": f"{venv_bin}:{os.environ['PATH']}"}
    submit = subprocess.run([str(venv_bin / "spark-submit"), "--version"], capture_output=True, text=True, env=env, timeout=120)
    assert submit.returncode == 0 and f"version {pyspark.__version__}" in submit.stdout + submit.stderr
