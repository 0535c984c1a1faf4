"""The one place a SparkSession is made: Python for workers, UTC, Arrow, local IP, GPU resources.

Imports pyspark only to start a session: the DAGs read `launch_conf` while planning a run."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from dmf_features.infra.config import SparkConfig

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

SPARK_CONF_DIR = Path(__file__).parent / "spark_conf"  # log4j2.properties: warnings only

# Settings every job relies on; a user's `spark.conf` entries override them.
_BASE_CONF = {
    "spark.sql.session.timeZone": "UTC",
    "spark.sql.execution.arrow.pyspark.enabled": "true",
    "spark.sql.execution.arrow.pyspark.fallback.enabled": "false",
    # Delta readers expect INT64 timestamps, not Spark's legacy INT96.
    "spark.sql.parquet.outputTimestampType": "TIMESTAMP_MICROS",
    # The lake layer lists what a write produced: no _SUCCESS markers, no .crc side files.
    "spark.hadoop.mapreduce.fileoutputcommitter.marksuccessfuljobs": "false",
    "spark.hadoop.fs.file.impl": "org.apache.hadoop.fs.RawLocalFileSystem",
    "spark.sql.adaptive.enabled": "true",
    "spark.ui.showConsoleProgress": "false",
}

# What the driver sets for loading models (offline, quietly: `cli.main`) that Spark's Python workers need
# too. They inherit the environment of the JVM that starts them, which is the driver's only when the driver
# started it: not under spark-submit, never on a cluster's executors.
WORKER_ENV = ("HF_HUB_OFFLINE", "HF_HUB_DISABLE_PROGRESS_BARS", "TRANSFORMERS_VERBOSITY")

# What the driver JVM reads as it starts. Under spark-submit it has started before the job reads its
# config, so these settings must be given to spark-submit itself (the DAGs pass them as --conf).
LAUNCH_KEYS = (
    "spark.driver.memory",
    "spark.driver.extraJavaOptions",
    "spark.driver.extraClassPath",
    "spark.driver.extraLibraryPath",
)


def spark_conf(cfg: SparkConfig) -> dict[str, str]:
    """The full Spark configuration a job runs with (without starting anything), `WORKER_ENV` included."""
    conf = dict(_BASE_CONF)
    conf["spark.app.name"] = cfg.app_name
    conf["spark.master"] = cfg.master
    conf["spark.driver.memory"] = cfg.driver_memory
    conf["spark.sql.shuffle.partitions"] = str(cfg.shuffle_partitions)
    conf["spark.pyspark.python"] = cfg.python or sys.executable
    if cfg.is_local:
        conf["spark.driver.host"] = "127.0.0.1"
        conf["spark.driver.bindAddress"] = "127.0.0.1"
        # The lake hands Spark exact file lists; on a local disk the driver stats thousands of
        # files faster than a distributed listing job starts (4x faster planning on 4,110 files).
        conf["spark.sql.sources.parallelPartitionDiscovery.threshold"] = "100000"
    if cfg.gpu is not None:  # validated: never with a local master, where Spark hangs on GPU requests
        conf["spark.executor.resource.gpu.amount"] = str(cfg.gpu.executor_amount)
        conf["spark.task.resource.gpu.amount"] = str(cfg.gpu.task_amount)
        if cfg.gpu.discovery_script:
            conf["spark.executor.resource.gpu.discoveryScript"] = cfg.gpu.discovery_script
    conf.update({f"spark.executorEnv.{key}": os.environ[key] for key in WORKER_ENV if key in os.environ})
    conf.update(cfg.conf)
    if cfg.short_jobs:  # before the user's own options, so that theirs win where they differ
        java_options = f"{SHORT_JOB_JVM_OPTIONS} {conf.get('spark.driver.extraJavaOptions', '')}"
        conf["spark.driver.extraJavaOptions"] = java_options.strip()
    return conf


# `spark.short_jobs`: a JVM that lives seconds spends much of its CPU in the optimising JIT compiler and
# the parallel collector's threads; on 2 cores these flags cut a bare session's start-up CPU by about 40%
SHORT_JOB_JVM_OPTIONS = "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC"


def launch_conf(cfg: SparkConfig) -> dict[str, str]:
    """The settings of `spark_conf` that spark-submit must be given (`LAUNCH_KEYS`)."""
    return {key: value for key, value in spark_conf(cfg).items() if key in LAUNCH_KEYS}


def submit_options(cfg: SparkConfig) -> list[str]:
    """`launch_conf` as spark-submit options (`--conf key=value ...`), for scripts that submit jobs."""
    return [arg for key, value in launch_conf(cfg).items() for arg in ("--conf", f"{key}={value}")]


def get_spark(cfg: SparkConfig) -> SparkSession:
    """Start (or reuse) the session for `cfg`; workers run the same Python as the driver."""
    from pyspark.sql import SparkSession

    python = cfg.python or sys.executable
    os.environ.setdefault("PYSPARK_PYTHON", python)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", python)
    if cfg.is_local:
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    os.environ.setdefault("SPARK_CONF_DIR", str(SPARK_CONF_DIR))  # read when the JVM starts
    builder = SparkSession.builder
    for key, value in spark_conf(cfg).items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    _warn_if_heap_smaller(spark, cfg.driver_memory)
    return spark


@contextmanager
def session_conf(spark: SparkSession, key: str, value: str) -> Iterator[None]:
    """Set a SQL setting for the actions run inside the block, then restore it."""
    previous = spark.conf.get(key, None)
    spark.conf.set(key, value)
    try:
        yield
    finally:
        if previous is None:
            spark.conf.unset(key)
        else:
            spark.conf.set(key, previous)


_UNITS = {"k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}


def _warn_if_heap_smaller(spark: SparkSession, wanted: str) -> None:
    """spark-submit starts the driver JVM before the job reads its config, so `driver_memory` only
    applies when the job starts Spark itself; say so instead of failing later with an OOM."""
    heap = spark.sparkContext._jvm.java.lang.Runtime.getRuntime().maxMemory()
    unit = wanted[-1].lower()
    wanted_bytes = int(float(wanted[:-1]) * _UNITS[unit]) if unit in _UNITS else int(wanted)
    if heap < 0.8 * wanted_bytes:
        print(
            f"dmf: warning: the Spark driver has a {heap / 2**30:.1f} GiB heap but the config asks for "
            f"driver_memory {wanted}; with spark-submit pass --driver-memory {wanted}",
            file=sys.stderr,
        )
