"""A real Spark standalone cluster on the loopback, started from the venv's pyspark (its wheel has no
sbin scripts): a master and workers, each in its own process group, folder, local dirs and TMPDIR.

A job submitted to it runs as on a cluster: the driver and each executor are separate JVMs with
separate Python workers, and they share nothing but the file system, so code that only worked because
everything ran in one process or one temp folder fails here. Each worker also advertises one GPU
(address "0", from a discovery script, no CUDA needed), so tasks that ask for `spark.gpu` resources
are scheduled the way a GPU cluster schedules them.

    with StandaloneCluster(tmp_path / "cluster") as cluster:
        subprocess.run(["spark-submit", "--master", cluster.url, ...])
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pyspark

from dmf_features.infra.spark import SHORT_JOB_JVM_OPTIONS, SPARK_CONF_DIR

SPARK_HOME = Path(pyspark.__file__).parent
MASTER = "org.apache.spark.deploy.master.Master"
WORKER = "org.apache.spark.deploy.worker.Worker"
GPU_DISCOVERY = '#!/bin/sh\necho \'{"name": "gpu", "addresses": ["0"]}\'\n'


class StandaloneCluster:
    """A master and `workers` workers of `cores` cores, `memory` for executors and one GPU each.

    Daemon logs are in `folder/logs`; each executor's stdout and stderr (where its Python workers
    print) in `folder/worker-N/work/<app id>/<executor id>/`. Everything is stopped on exit, also when
    starting fails.
    """

    def __init__(self, folder: Path, workers: int = 2, cores: int = 1, memory: str = "1500m", timeout: float = 120):
        self.folder, self.workers, self.cores, self.memory, self.timeout = Path(folder), workers, cores, memory, timeout
        self.url = ""  # spark://127.0.0.1:<port>, once started
        self._status = ""  # the master's JSON status page
        self._processes: dict[str, subprocess.Popen] = {}

    def __enter__(self) -> StandaloneCluster:
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def executor_logs(self) -> list[Path]:
        """The stdout and stderr files of every executor the workers have run, in order of their paths."""
        return sorted(p for p in self.folder.glob("worker-*/work/*/*/std*") if p.is_file())

    def stop(self, timeout: float = 20) -> None:
        """SIGTERM to each process group (a worker's executors and their Python workers are in it), then
        SIGKILL to whatever is left."""
        groups = [p.pid for p in self._processes.values()]
        for group in groups:
            _signal_group(group, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for process in self._processes.values():
            try:
                process.wait(max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                pass
        for group in groups:  # also children that outlived their daemon
            _signal_group(group, signal.SIGKILL)
        for process in self._processes.values():
            process.wait()
        self._processes.clear()

    # ---------------------------------------------------------------------------------- internals

    def _start(self) -> None:
        logs = self.folder / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        discovery = self.folder / "gpu-discovery.sh"
        discovery.write_text(GPU_DISCOVERY)
        discovery.chmod(0o755)
        port, webui = _free_port(), _free_port()
        self.url, self._status = f"spark://127.0.0.1:{port}", f"http://127.0.0.1:{webui}/json/"
        self._launch("master", [MASTER, "--host", "127.0.0.1", "--port", str(port), "--webui-port", str(webui)], {})
        self._wait(lambda status: status.get("status") == "ALIVE", "the master to start")
        for i in range(self.workers):
            folder = self.folder / f"worker-{i}"
            for sub in ("work", "local", "tmp"):
                (folder / sub).mkdir(parents=True, exist_ok=True)
            options = ["--host", "127.0.0.1", "--webui-port", str(_free_port()), "--cores", str(self.cores)]
            env = {
                "SPARK_LOCAL_DIRS": str(folder / "local"),  # shuffle and block files of its executors
                "TMPDIR": str(folder / "tmp"),  # Python's tempfile in its executors' Python workers
                "SPARK_WORKER_OPTS": "-Dspark.worker.resource.gpu.amount=1 "
                f"-Dspark.worker.resource.gpu.discoveryScript={discovery}",
            }
            self._launch(
                f"worker-{i}",
                [WORKER, self.url, *options, "--memory", self.memory, "--work-dir", str(folder / "work")],
                env,
                cwd=folder,
            )
        self._wait(lambda status: status.get("aliveworkers") == self.workers, f"{self.workers} workers to register")

    def _launch(self, name: str, arguments: list[str], env: dict[str, str], cwd: Path | None = None) -> None:
        base = {
            "SPARK_HOME": str(SPARK_HOME),
            "SPARK_CONF_DIR": str(SPARK_CONF_DIR),
            "SPARK_LOCAL_IP": "127.0.0.1",
            "SPARK_DAEMON_MEMORY": "256m",  # master and worker heaps; executors get --memory
            "SPARK_DAEMON_JAVA_OPTS": SHORT_JOB_JVM_OPTIONS,  # they idle: JIT and GC threads only cost
        }
        with open(self.folder / "logs" / f"{name}.log", "ab") as log:  # the child keeps its own handle
            self._processes[name] = subprocess.Popen(
                [str(SPARK_HOME / "bin" / "spark-class"), *arguments],
                env={**os.environ, **base, **env},
                cwd=cwd or self.folder,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: stop() reaches its executors too
            )

    def _wait(self, ready: Callable[[dict], bool], what: str) -> None:
        """Poll the master's JSON status until `ready(status)`; fail early when a daemon has died."""
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            for name, process in self._processes.items():
                if process.poll() is not None:
                    raise RuntimeError(f"spark {name} exited with {process.returncode}; see {self.folder / 'logs' / name}.log")
            try:
                with urllib.request.urlopen(self._status, timeout=5) as response:
                    if ready(json.load(response)):
                        return
            except OSError:
                pass
            time.sleep(0.5)
        raise TimeoutError(f"waited {self.timeout:.0f} s for {what}; see the logs in {self.folder / 'logs'}")


def _signal_group(group: int, sig: signal.Signals) -> None:
    try:
        os.killpg(group, sig)
    except ProcessLookupError:  # the whole group has exited
        pass


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
