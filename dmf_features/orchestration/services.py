"""Airflow 3's services for local use and the tests: the API server (UI and the task execution API),
scheduler, DAG processor and triggerer, as separate processes on 127.0.0.1.

`airflow standalone` would be one command, but its scheduler and triggerer serve logs on every
interface; run separately with `--skip-serve-logs` (the API server reads the log files itself with
the LocalExecutor) nothing listens beyond the loopback."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from dmf_features.orchestration.environment import SPARK_POOL, SPARK_POOL_SLOTS

COMPONENTS: dict[str, list[str]] = {
    "api-server": ["api-server", "--workers", "1"],  # host and port from AIRFLOW__API__HOST / _PORT
    "scheduler": ["scheduler", "--skip-serve-logs"],
    "dag-processor": ["dag-processor"],
    "triggerer": ["triggerer", "--skip-serve-logs"],
}


def airflow(env: dict[str, str], *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """One `airflow` CLI command in `env` (added to this process's environment); raises with its output on failure."""
    result = subprocess.run(
        ["airflow", *args], env={**os.environ, **env}, capture_output=True, text=True, timeout=timeout, check=False
    )
    if result.returncode:
        raise RuntimeError(
            f"airflow {' '.join(args)} failed ({result.returncode}):\n{result.stdout[-2000:]}{result.stderr[-4000:]}"
        )
    return result


def prepare(env: dict[str, str]) -> None:
    """Create or upgrade the metadata database and the Spark pool the DAGs' Spark stages share."""
    Path(env["AIRFLOW_HOME"]).mkdir(parents=True, exist_ok=True)
    airflow(env, "db", "migrate")
    airflow(env, "pools", "set", SPARK_POOL, str(SPARK_POOL_SLOTS), "dmf-features Spark stages: one at a time per machine")


@dataclass
class Services:
    env: dict[str, str]
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return self.env["AIRFLOW__API__BASE_URL"]

    @property
    def log_folder(self) -> Path:
        return Path(self.env["AIRFLOW_HOME"]) / "logs" / "services"

    def start(self, components: tuple[str, ...] = tuple(COMPONENTS)) -> Services:
        self.log_folder.mkdir(parents=True, exist_ok=True)
        for name in components:
            log = open(self.log_folder / f"{name}.log", "ab")  # noqa: SIM115 - the child process owns it
            self.processes[name] = subprocess.Popen(
                ["airflow", *COMPONENTS[name]],
                env={**os.environ, **self.env},
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C reaches us, and we stop each service in order
            )
        return self

    def wait_until_healthy(self, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.raise_if_exited()
            try:
                with urllib.request.urlopen(f"{self.url}/api/v2/monitor/health", timeout=5) as response:
                    health = json.load(response)
                if all(health.get(part, {}).get("status") == "healthy" for part in ("metadatabase", "scheduler")):
                    return
            except OSError:
                pass
            time.sleep(2)
        raise TimeoutError(f"Airflow was not healthy after {timeout:.0f} s; see {self.log_folder}")

    def raise_if_exited(self) -> None:
        for name, process in self.processes.items():
            if process.poll() is not None:
                raise RuntimeError(f"airflow {name} exited with {process.returncode}; see {self.log_folder / name}.log")

    def stop(self, timeout: float = 30) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for process in self.processes.values():
            try:
                process.wait(max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()

    def login(self) -> str:
        """The Simple auth manager's generated password for the admin user."""
        passwords = Path(self.env["AIRFLOW_HOME"]) / "simple_auth_manager_passwords.json.generated"
        return json.loads(passwords.read_text()).get("admin", "?") if passwords.exists() else "?"


def serve(env: dict[str, str], say: Callable[[str], None] = print) -> int:
    """`dmf airflow start`: prepare, start every service, print where and how to log in, and keep them
    running until Ctrl-C or SIGTERM (or until one of them dies), then stop them all."""
    prepare(env)

    def interrupt(signum, frame):  # also when started in the background, where SIGINT is ignored
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, interrupt)
    signal.signal(signal.SIGTERM, interrupt)
    services = Services(env).start()
    try:
        services.wait_until_healthy()
        say(f"Airflow 3 is up: {services.url}  (user admin, password {services.login()})")
        say(f"DAGs from {env['AIRFLOW__CORE__DAGS_FOLDER']}; service logs in {services.log_folder}; Ctrl-C stops everything")
        while True:
            services.raise_if_exited()
            time.sleep(2)
    except KeyboardInterrupt:
        say("stopping Airflow")
        return 0
    except (RuntimeError, TimeoutError) as e:
        say(f"dmf airflow: {e}")
        return 1
    finally:
        services.stop()
