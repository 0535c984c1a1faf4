"""Start-up of each stage's job: `spark-submit jobs/<stage>.py` on a day with no events, against a bare
`spark-submit` of a script that only starts and stops a Spark session, in the same run.

On an empty day a job does no real work, so its wall time is what every run of it pays before its
first row: the driver JVM, the session, the job's imports, its Python workers, its reads of the lake
and its commits. The ratio is each stage's wall time over the bare session's; the goal is at most 1.5
for every stage but embedding, whose encoder load is real work (reported separately, not in the
headline ratio). The lake the jobs run on is a small MovieLens-format folder run through the pipeline
once before anything is timed; each timed job runs from a copy of it, so every round starts alike.

Alongside the totals the benchmark records where a job's time goes, each measured on its own:
`python` (spark-submit of a script that starts no session: the launcher JVM and the Python driver),
`session` (the baseline), `python_task` (a session that runs one pandas UDF: Python workers started),
and per stage `imports` (a plain `python -c "import ..."` of the stage's entry points, no Spark).

    python -m bench.startup [--quick | --tiny] [--results-dir DIR]
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import final_line, parser, write_results
from dmf_features.infra.config import load_config
from dmf_features.infra.spark import SPARK_CONF_DIR, submit_options
from dmf_features.testing import movielens_files

NAME = "startup"
PROJECT = Path(__file__).resolve().parent.parent
EMPTY_DAY = "2001-01-01"  # before every event of the fixture: nothing to ingest or build
REPEATS = {"full": 3, "quick": 2, "tiny": 1}

# stage -> (its job's arguments, what `python -c` imports for it: the command line and the stage's entry point)
STAGES = {
    "ingest": (("jobs/ingest.py", "--date", EMPTY_DAY), "dmf_features.ingest.stage"),
    "validate": (("jobs/validate.py", "--table", "items", "--table", "events"), "dmf_features.quality.runner"),
    "embed": (("jobs/embed_items.py",), "dmf_features.embedding.stage"),
    "features": (("jobs/build_features.py", "--date", EMPTY_DAY), "dmf_features.features.stage"),
}
SEPARATE = {"embed"}  # its encoders' load is real work: not held to the goal

BARE = {
    "python": "print('no session')\n",
    "session": "from pyspark.sql import SparkSession\nSparkSession.builder.getOrCreate().stop()\n",
    "python_task": (
        "from pyspark.sql import SparkSession\n"
        "spark = SparkSession.builder.getOrCreate()\n"
        "spark.range(4, numPartitions=2).mapInPandas(lambda frames: frames, 'id long').collect()\n"
        "spark.stop()\n"
    ),
}


def _environment(folder: Path) -> dict[str, str]:
    bin_dir = Path(sys.executable).parent
    return os.environ | {
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "PYSPARK_PYTHON": sys.executable,
        "SPARK_LOCAL_IP": "127.0.0.1",
        "SPARK_CONF_DIR": str(SPARK_CONF_DIR),
        "TMPDIR": str(folder / "tmp"),
    }


def _submit(env: dict[str, str], config: Path, *arguments: str) -> float:
    """Wall seconds of one `spark-submit --master local[2] ...` run from the project folder, with the driver
    settings of `config` (`spark.short_jobs`) whatever it runs, the bare scripts too; it must succeed."""
    options = submit_options(load_config(config).spark)
    command = [str(Path(sys.executable).parent / "spark-submit"), "--master", "local[2]", *options, *arguments]
    start = time.perf_counter()
    done = subprocess.run(command, cwd=PROJECT, env=env, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(arguments)} failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return seconds


def _import_seconds(env: dict[str, str], module: str) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", f"import dmf_features.cli, {module}"], env=env, check=True, cwd=PROJECT)
    return time.perf_counter() - start


def _prepare(folder: Path) -> tuple[Path, Path]:
    """A MovieLens-format source, its config and a lake built once by the pipeline's own jobs."""
    data = movielens_files.write_movielens(folder / "movielens")
    day2 = movielens_files.DAY2.date()
    lake = folder / "built"
    config = folder / "startup.yaml"
    config.write_text(f"""
root: {folder}
spark: {{master: "local[2]", shuffle_partitions: 2, driver_memory: 1g, short_jobs: true}}
lake: {{uri: {folder / "lake"}}}
mlflow: {{tracking_uri: "sqlite:///{folder / "mlflow.db"}", experiment: startup}}
source: {{kind: movielens, movielens: {{path: {data}, posters: {data / "posters"}}}}}
ingest: {{max_quarantined_share: 0.5}}
embedding: {{batch_size: 8, items_per_task: 32}}
features:
  history_length: 4
  long_history_length: 8
  buckets: 4
  top_k: 2
  split: {{method: temporal, valid_from: {day2}, test_from: {day2 + dt.timedelta(days=1)}}}
quality: {{results_dir: {folder / "validation"}}}
""")
    _build(config)
    shutil.move(folder / "lake", lake)
    return config, lake


def _build(config: Path) -> None:
    """Ingest, embed and features in this process (one JVM: the build is not timed), and the MLflow store
    created, so that no timed job pays for creating it."""
    import mlflow

    from dmf_features.embedding import embed_items
    from dmf_features.features import build_features
    from dmf_features.infra.lake import Lake
    from dmf_features.infra.spark import get_spark
    from dmf_features.ingest import ingest

    cfg = load_config(config)
    spark, lake = get_spark(cfg.spark), Lake(cfg.lake)
    for stage in (ingest, embed_items, build_features):
        stage(spark, cfg, lake, progress=lambda _: None)
    spark.stop()
    mlflow.MlflowClient(cfg.mlflow.tracking_uri).search_experiments()


def _fresh_lake(built: Path, folder: Path) -> None:
    shutil.rmtree(folder / "lake", ignore_errors=True)
    shutil.copytree(built, folder / "lake")


def main(argv: list[str] | None = None) -> int:
    args = parser(
        NAME, __doc__, quick="2 rounds instead of 3", tiny="1 round, the bare session and the feature stage only"
    ).parse_args(argv)
    repeats = REPEATS[args.size]
    # --tiny: the bare session and one stage, each once (the test that keeps the benchmark working)
    bare = BARE if args.size != "tiny" else {"session": BARE["session"]}
    stages = STAGES if args.size != "tiny" else {"features": STAGES["features"]}
    with tempfile.TemporaryDirectory(prefix="dmf-bench-startup-") as tmp:
        folder = Path(tmp)
        (folder / "tmp").mkdir()
        env = _environment(folder)
        print(f"building the lake the jobs start on (in {folder})", flush=True)
        config, built = _prepare(folder)
        scripts = {}
        for name, code in bare.items():
            scripts[name] = folder / f"bare_{name}.py"
            scripts[name].write_text(code)

        seconds: dict[str, list[float]] = {name: [] for name in (*bare, *stages)}
        imports: dict[str, list[float]] = {stage: [] for stage in stages}
        for round_ in range(repeats):
            order = [*bare, *stages] if round_ % 2 == 0 else [*bare, *stages][::-1]
            for name in order:
                if name in bare:
                    seconds[name].append(_submit(env, config, str(scripts[name])))
                else:
                    job, *options = stages[name][0]
                    _fresh_lake(built, folder)
                    seconds[name].append(_submit(env, config, job, "--config", str(config), *options))
                    imports[name].append(_import_seconds(env, stages[name][1]))
                print(f"round {round_ + 1}/{repeats}: {name} {seconds[name][-1]:.1f} s", flush=True)

    median = {name: statistics.median(values) for name, values in seconds.items()}
    baseline = median["session"]
    ratios = {stage: median[stage] / baseline for stage in stages}
    held = [stage for stage in stages if stage not in SEPARATE]
    worst = max(held, key=ratios.get)
    figures = {
        "ratio": round(ratios[worst], 3),
        "worst_stage": worst,
        "bare_session_s": round(baseline, 2),
        **{f"{stage}_ratio": round(ratios[stage], 3) for stage in stages},
        **{f"{name}_s": round(median[name], 2) for name in (*bare, *stages)},
        **{f"{stage}_imports_s": round(statistics.median(values), 2) for stage, values in imports.items()},
        "goal": "<= 1.5 for every stage but embed",
        "seconds": {name: [round(v, 2) for v in values] for name, values in seconds.items()},
    }
    settings = {"repeats": repeats, "master": "local[2]", "empty_day": EMPTY_DAY, "source": "testing.movielens_files"}
    path = write_results(NAME, figures, settings, ["pyspark", "torch"], args)
    print(f"results: {path}")
    shown = {k: v for k, v in figures.items() if k != "seconds" and k != "goal" and k != "ratio"}
    print(final_line(NAME, ratios[worst], shown))
    return 0


if __name__ == "__main__":
    sys.exit(main())
