"""Heavy imports done in the background while a job waits for its Spark session.

A job spends its first seconds waiting for Spark (the driver JVM, the py4j gateway, the SparkContext),
with its own Python thread idle. The libraries its stage needs later, Great Expectations for the gates
and MLflow for the accounting (several seconds each), import on a daemon thread in that time. Python's
per-module import locks make the stage's own `import` of the same module wait for the thread instead of
importing it twice, and a failed import here is simply raised again where the stage imports it.
"""

from __future__ import annotations

import atexit
import importlib
import threading

# the modules a stage imports after its session starts (the accounting's MLflow client opens its store
# through SQLAlchemy, imported on first use)
MLFLOW = ("mlflow", "mlflow.store.tracking.sqlalchemy_store")
GREAT_EXPECTATIONS = ("great_expectations",)

_started: list[threading.Thread] = []


def preload(modules: tuple[str, ...]) -> None:
    """Start importing `modules` on a daemon thread; returns at once."""
    thread = threading.Thread(target=_import_all, args=(modules,), name="dmf-preload", daemon=True)
    thread.start()
    _started.append(thread)


def _import_all(modules: tuple[str, ...]) -> None:
    for name in modules:
        try:
            importlib.import_module(name)
        except Exception:  # the stage's own import raises it, with its traceback, where it matters
            return


@atexit.register
def _finish() -> None:
    """An interpreter must not exit in the middle of an import (a job that failed early): wait for it."""
    for thread in _started:
        thread.join(timeout=60)
