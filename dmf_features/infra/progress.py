"""Progress of a long Spark action: items done and items per second, printed while it runs.

Spark reports progress per task, not per row, so items done are estimated as the finished share of
the action's tasks times the items it processes; work is split into tasks of about
`embedding.items_per_task` posters' worth, which keeps the estimate close. The estimate never goes back:
an action that starts another stage adds tasks to the total, and the share shown holds until the
new tasks catch up.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable

from pyspark.sql import SparkSession


class SparkProgress:
    """`with SparkProgress(spark, items, "embedding images", print): df.count()`"""

    def __init__(
        self,
        spark: SparkSession,
        items: int,
        label: str,
        report: Callable[[str], None],
        every_seconds: float = 10.0,
        unit: str = "items",
    ):
        self.spark, self.items, self.label, self.report, self.every = spark, items, label, report, every_seconds
        self.unit, self._shown = unit, 0
        self.group = f"dmf-{uuid.uuid4().hex[:8]}"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def __enter__(self) -> SparkProgress:
        self.start = time.monotonic()
        self.spark.sparkContext.setJobGroup(self.group, self.label)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.spark.sparkContext.setLocalProperty("spark.jobGroup.id", None)
        elapsed = time.monotonic() - self.start
        rate = self.items / max(elapsed, 1e-9)
        self.report(f"{self.label}: {self.items:,} {self.unit} in {elapsed:.1f}s ({rate:,.1f} {self.unit}/s)")

    def done_fraction(self) -> float:
        tracker = self.spark.sparkContext.statusTracker()
        done = total = 0
        for job_id in tracker.getJobIdsForGroup(self.group):
            job = tracker.getJobInfo(job_id)
            for stage_id in job.stageIds if job else ():
                stage = tracker.getStageInfo(stage_id)
                if stage and stage.numTasks:
                    done, total = done + stage.numCompletedTasks, total + stage.numTasks
        return done / total if total else 0.0

    def _watch(self) -> None:
        while not self._stop.wait(self.every):
            self._shown = max(self._shown, int(self.items * self.done_fraction()))
            rate = self._shown / (time.monotonic() - self.start)
            self.report(f"{self.label}: {self._shown:,} / {self.items:,} {self.unit} ({rate:,.1f} {self.unit}/s)")
