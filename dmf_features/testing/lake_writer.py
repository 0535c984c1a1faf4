"""A separate process writing to a lake table, for the concurrency and crash tests.

usage: python -m dmf_features.testing.lake_writer LAKE_URI TABLE TAG COUNT [--crash-before-commit]
"""

from __future__ import annotations

import os
import sys

from dmf_features.infra.config import LakeConfig, SparkConfig
from dmf_features.infra.lake import Lake
from dmf_features.infra.spark import get_spark


def main(uri: str, table: str, tag: str, count: int, crash: bool) -> None:
    spark = get_spark(
        SparkConfig(master="local[1]", shuffle_partitions=1, driver_memory="1g", conf={"spark.ui.enabled": "false"})
    )
    lake = Lake(LakeConfig(uri=uri, commit_retries=20))
    if crash:  # die the hardest way right after the tasks wrote their files, before the commit
        lake._commit = lambda *a, **k: os.kill(os.getpid(), 9)
    for i in range(count):
        df = spark.range(100).selectExpr("id", f"'{tag}' as tag", f"{i} as batch")
        lake.write(df, table, mode="append")
    print("done", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), "--crash-before-commit" in sys.argv)
