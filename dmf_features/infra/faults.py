"""Crash points: the places where the reliability tests kill a job, named in the code they interrupt.

With `DMF_CRASH_AT=<point>` in its environment, a job kills its whole process group with SIGKILL on
reaching that point, as a lost machine or the kernel's OOM killer would: no `finally`, no clean-up.
The tests start such a job in its own process group. Unset (always, outside those tests), a point
costs one environment lookup. Points: `written:<table>` (the tasks wrote the files, nothing is
committed), `committed:<table>` (that table's commit landed; the stage's other tables and its run
record have not), `writing:<table>` (Spark tasks are writing the files), `trained:<model>`.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

CRASH_AT = "DMF_CRASH_AT"


def crash_point(name: str) -> None:
    if os.environ.get(CRASH_AT) == name:
        _die()


@contextmanager
def crash_while(name: str, started: Callable[[], bool]) -> Iterator[None]:
    """Crash at `name` during the block, as soon as `started()` is true (polled every millisecond)."""
    if os.environ.get(CRASH_AT) != name:
        yield
        return

    def watch() -> None:
        while not started():
            time.sleep(0.001)
        _die()

    threading.Thread(target=watch, daemon=True).start()
    yield


def _die() -> None:
    print(f"dmf: {CRASH_AT}={os.environ[CRASH_AT]}: killing the process group", file=sys.stderr, flush=True)
    os.killpg(os.getpgid(0), signal.SIGKILL)
