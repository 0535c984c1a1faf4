"""`dmf doctor`: is this machine ready to run the pipeline? One line per check (OK, PROBLEM or SKIPPED)
and, for each problem, what is wrong and how to fix it, so that a broken set-up shows in a minute
instead of halfway through a job.

A check is a small function of the config that returns a `Finding` or raises `Problem`. The runner
gives each one a deadline, so that a check that hangs (a JVM that never starts, a tracking server that
never answers) is a PROBLEM instead of a stuck command, and turns any other error into a PROBLEM too.
Heavy modules (pyspark, torch, MLflow) are imported inside the checks that need them; Airflow runs in
subprocesses with a throwaway home, so checking it leaves nothing behind.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dmf_features.infra.config import Config

SUPPORTED_JAVA = (17, 21)  # the Java versions Spark 4 runs on
_MESSAGE_CHARS = 300  # an error's first line is enough to act on; Java stack traces are not


class Status(StrEnum):
    OK = "OK"
    PROBLEM = "PROBLEM"
    SKIPPED = "SKIPPED"


@dataclass(frozen=True)
class Finding:
    """What a check found: one line, a fix when it is a problem, and extra lines (one per table, ...)."""

    status: Status
    summary: str
    fix: str = ""
    details: tuple[str, ...] = ()


class Problem(Exception):
    """Raised by a check: what is wrong and how to fix it."""

    def __init__(self, summary: str, fix: str, details: Sequence[str] = ()):
        super().__init__(summary)
        self.finding = Finding(Status.PROBLEM, summary, fix, tuple(details))


@dataclass(frozen=True)
class Check:
    """A named check, its deadline, and where to look when it fails without saying why (an unexpected
    error, or no answer before the deadline)."""

    name: str
    run: Callable[[Config], Finding]
    timeout_s: float
    hint: str


@dataclass(frozen=True)
class CheckResult:
    name: str
    finding: Finding
    seconds: float


# ------------------------------------------------------------------------------------------- the checks


def _check_java(cfg: Config) -> Finding:
    """The `java` Spark's launcher runs: `$JAVA_HOME/bin/java` when JAVA_HOME is set, else the one on PATH."""
    install = (
        f"install a JDK {' or '.join(map(str, SUPPORTED_JAVA))} (Debian/Ubuntu: apt-get install openjdk-17-jdk-headless) "
        "and put its bin/ on PATH, or set JAVA_HOME to it"
    )
    java_home = os.environ.get("JAVA_HOME")
    java = str(Path(java_home) / "bin" / "java") if java_home else shutil.which("java")
    if java is None:
        raise Problem("no `java` on PATH and JAVA_HOME is not set", install)
    try:
        result = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise Problem(f"{java} -version failed: {_first_line(e)}", install) from e
    match = re.search(r'version "((\d+)(?:\.(\d+))?[^"]*)"', result.stderr + result.stdout)
    if match is None:
        raise Problem(f"`{java} -version` printed no version: {_first_line(result.stderr or result.stdout)}", install)
    version, major = match[1], int(match[3] if match[2] == "1" else match[2])  # "1.8.0_392" is Java 8
    if major not in SUPPORTED_JAVA:
        raise Problem(f"{java} is Java {version}; Spark 4 runs on Java {' or '.join(map(str, SUPPORTED_JAVA))}", install)
    return Finding(Status.OK, f"Java {version} ({java})")


def _check_spark(cfg: Config) -> Finding:
    """A local master: start the session the jobs start and run a job on Python workers. A standalone
    master: does it accept connections. YARN and Kubernetes cannot be checked from here."""
    master = cfg.spark.master
    if master.startswith("spark://"):
        return _check_standalone_master(master)
    if not cfg.spark.is_local:
        return Finding(
            Status.SKIPPED,
            f"master {master!r} cannot be checked from here: spark-submit a stage to try it (e.g. jobs/validate.py)",
        )
    from dmf_features.infra.spark import get_spark

    try:
        spark = get_spark(cfg.spark)
    except Exception as e:
        raise Problem(
            f"Spark did not start: {_first_line(e)}",
            f"see the java line; spark.driver_memory ({cfg.spark.driver_memory}) must fit in free memory; "
            "check the spark.conf settings",
        ) from e
    start = time.monotonic()
    try:
        spark.sparkContext.parallelize(range(1, 5), 2).map(lambda x: x * x).sum()
    except Exception as e:
        raise Problem(
            f"a job on Python workers failed: {_first_line(e)}",
            f"the workers run {cfg.spark.python or sys.executable}: it must be a Python 3.11 with this project "
            "installed (spark.python)",
        ) from e
    return Finding(
        Status.OK,
        f"Spark {spark.version} on {master} ({spark.sparkContext.defaultParallelism} cores): "
        f"a job on Python workers ran in {time.monotonic() - start:.1f} s",
    )


def _check_standalone_master(master: str) -> Finding:
    """`spark://host:port[,host2:port2]` (standby masters of a high-availability set-up listen too)."""
    unanswered = []
    for address in master.removeprefix("spark://").split(","):
        host, _, port = address.rpartition(":")
        try:
            with socket.create_connection((host, int(port)), timeout=5):
                return Finding(Status.OK, f"{master}: the master at {address} accepts connections (workers not checked)")
        except (OSError, ValueError) as e:
            unanswered.append(f"{address} ({e})")
    raise Problem(
        f"{master}: nothing answers at {', '.join(unanswered)}",
        "start the master ($SPARK_HOME/sbin/start-master.sh) or correct spark.master: the master's own port "
        "(7077 by default), not its web UI's (8080)",
    )


def _check_lake(cfg: Config) -> Finding:
    """The lake's root can be listed (a local one also written to), and each table's version and rows."""
    from dmf_features.infra.lake import Lake

    root = cfg.lake.uri
    if "://" not in root:
        if not Path(root).is_dir():
            raise Problem(f"{root} does not exist", "`dmf ingest` creates it; or point lake.uri at the lake")
        if not os.access(root, os.R_OK | os.W_OK | os.X_OK):
            raise Problem(
                f"{root} is not readable and writable by this user",
                "fix its permissions, or point lake.uri at a lake this user can write",
            )
    try:
        lake = Lake(cfg.lake)
        tables = lake.tables()
    except Exception as e:
        raise Problem(
            f"{root} cannot be listed: {_first_line(e)}",
            "check that the bucket or prefix exists and lake.storage_options (credentials, region)",
        ) from e
    if not tables:
        return Finding(Status.OK, f"{root}: no tables yet (`dmf run` writes them)")
    width = max(map(len, tables)) + 2
    lines, unreadable = [], []
    for table in tables:
        try:
            rows = lake.row_count(table)
            lines.append(f"{table:<{width}}v{lake.version(table):<6}{rows:>14,} row{'' if rows == 1 else 's'}")
        except Exception as e:
            unreadable.append(table)
            lines.append(f"{table:<{width}}unreadable: {_first_line(e)}")
    if unreadable:
        raise Problem(
            f"{root}: {len(unreadable)} of {len(tables)} tables cannot be read ({', '.join(unreadable)})",
            f"`dmf lake history {unreadable[0]}` shows its commits; restore its _delta_log or rebuild the table",
            lines,
        )
    runs, unfinished = _last_runs(cfg)
    if unfinished:
        raise Problem(
            f"{root}: the last {', '.join(unfinished)} run(s) did not finish; readers keep the last complete run's versions",
            f"run `dmf {unfinished[0]}` again (it finishes the job; `dmf lake vacuum` removes the killed run's files)",
            lines + runs,
        )
    from dmf_features.alignment.manifest import read_manifest

    manifest = read_manifest(lake.root)
    aligned = [f"aligned vectors ({m}): {e['version']}" for m, e in (manifest or {}).get("modalities", {}).items()]
    return Finding(Status.OK, f"{root}: {len(tables)} table(s)", details=tuple(lines + runs + aligned))


def _last_runs(cfg: Config) -> tuple[list[str], list[str]]:
    """A line per stage on its last complete run, and the stages whose latest run did not complete."""
    from dmf_features.infra.runs import COMPLETE, stage_runs

    runs = stage_runs(cfg.lake.uri, dict(cfg.lake.storage_options) or None)
    completed = {r.run_id for r in runs if r.status == COMPLETE}
    lines, unfinished = [], []
    for stage in dict.fromkeys(r.stage for r in runs):
        mine = [r for r in runs if r.stage == stage]
        done = [r for r in mine if r.status == COMPLETE]
        if mine[-1].run_id not in completed:
            unfinished.append(stage)
        last = f"{done[-1].at:%Y-%m-%d %H:%M} UTC ({done[-1].scope})" if done else "never completed"
        lines.append(f"last complete {stage} run: {last}")
    return lines, unfinished


def _check_encoder(cfg: Config, modality: str) -> Finding:
    """The configured encoder loads without the network (as Spark tasks load it) and embeds one item."""
    encoder_cfg = getattr(cfg.embedding, modality)
    if encoder_cfg is None:
        return Finding(Status.SKIPPED, f"embedding.{modality} is not configured")
    kind, path = encoder_cfg.kind, encoder_cfg.path
    where = path or "the weights shipped in its package"
    if path:
        fix = (
            "put the model in a folder (`hf download <id> --local-dir <folder>` where there is network, then copy "
            f"it here) and point embedding.{modality}.path at that folder"
        )
        if path.startswith(("/", ".", "~")) and not Path(path).expanduser().is_dir():  # a folder, not a hub id
            raise Problem(f"{kind}: {path} is not a folder", fix)
    else:
        fix = "reinstall the project's pinned packages (`make` builds .venv; or pip install -e .)"
    import numpy as np

    # read by huggingface_hub and transformers when first imported, which in `dmf doctor` is here
    with _environment(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1"):
        try:
            from dmf_features.embedding.encoders import EncoderSpec, load_encoder

            spec = EncoderSpec(kind=kind, path=path, max_tokens=encoder_cfg.max_tokens, batch_size=1)
            encoder = load_encoder(spec, device="cpu")  # as the driver loads it for its version and width
            vectors = encoder.embed([_dummy_item(modality)])
        except Exception as e:
            raise Problem(f"{kind} from {where} does not load offline: {_first_line(e)}", fix) from e
    if vectors.shape != (1, encoder.dim) or not np.isfinite(vectors).all():
        raise Problem(f"{encoder.version} embedded a dummy {modality} as {vectors.shape}, not (1, {encoder.dim}) finite", fix)
    return Finding(Status.OK, f"{encoder.version} from {where}: {encoder.dim}-d, loads offline, embeds on cpu")


def _dummy_item(modality: str):
    if modality == "text":
        return "Toy Story"
    from PIL import Image

    return Image.new("RGB", (64, 64), "gray")


def _check_mlflow(cfg: Config) -> Finding:
    """The tracking store answers; the experiment, and the promotion model with its champion alias, if any."""
    uri, name = cfg.mlflow.tracking_uri, cfg.mlflow.experiment
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).exists():
        database = Path(uri.removeprefix("sqlite:///")).resolve()
        return Finding(Status.OK, f"{uri}: no store yet at {database} (the first `dmf train` creates it)")
    from mlflow import MlflowClient

    # an unreachable server: one short try, not MLflow's default minutes of retries
    with _environment(MLFLOW_HTTP_REQUEST_MAX_RETRIES="0", MLFLOW_HTTP_REQUEST_TIMEOUT="20"):
        try:
            client = MlflowClient(uri)
            client.search_experiments(max_results=1)
            experiment = client.get_experiment_by_name(name)
            model = _registered_model(client, cfg.promotion.model, cfg.promotion.alias)
        except Exception as e:
            if uri.startswith(("http://", "https://")):
                fix = "start the tracking server, or correct mlflow.tracking_uri"
            else:
                fix = f"correct mlflow.tracking_uri; a store whose schema is out of date needs `mlflow db upgrade {uri}`"
            raise Problem(f"{uri} does not answer: {_first_line(e)}", fix) from e
    created = "exists" if experiment else "not created yet (the first `dmf train` creates it)"
    return Finding(Status.OK, f"{uri}: experiment {name!r} {created}; {model}")


def _registered_model(client, name: str, alias: str) -> str:
    from mlflow.exceptions import MlflowException

    try:
        model = client.get_registered_model(name)
    except MlflowException as e:
        if e.error_code == "RESOURCE_DOES_NOT_EXIST":
            return f"no registered model {name!r} yet (`dmf train --model {name}`)"
        raise
    versions = len(client.search_model_versions(f"name = '{name}'"))
    champion = model.aliases.get(alias)
    state = f"@{alias} is version {champion}" if champion else f"no @{alias} yet (`dmf promote`)"
    return f"model {name!r}: {versions} version(s), {state}"


_PARSE_DAGS = """
import json, sys
from airflow.dag_processing.dagbag import DagBag
bag = DagBag(sys.argv[1])
print(json.dumps({"dags": sorted(bag.dags), "errors": bag.import_errors}))
"""


def _check_airflow(cfg: Config) -> Finding:
    """`airflow version` and the DAG folder parsed as the DAG processor does, in the environment
    `dmf airflow start` gives Airflow; in a throwaway home, so that nothing is left behind."""
    if importlib.util.find_spec("airflow") is None:
        return Finding(Status.SKIPPED, "Airflow is not installed (for the DAGs: pip install -e '.[airflow]')")
    from dmf_features.orchestration.environment import DAGS_FOLDER, airflow_environment

    reinstall = "reinstall it: pip install -e '.[airflow]'"
    with tempfile.TemporaryDirectory(prefix="dmf-doctor-airflow-") as home:
        env = {**os.environ, **airflow_environment(cfg, Path(home))}
        version = _run(["airflow", "version"], env, "`airflow version`", reinstall).strip().splitlines()[-1]
        parsed = _run([sys.executable, "-c", _PARSE_DAGS, str(DAGS_FOLDER)], env, "parsing the DAGs", reinstall)
    bag = json.loads(parsed.strip().splitlines()[-1])
    if bag["errors"]:
        files = sorted(bag["errors"])
        raise Problem(
            f"{len(files)} DAG file(s) in {DAGS_FOLDER} do not import: {', '.join(Path(f).name for f in files)}",
            f"`python {files[0]}` shows the traceback",
            [f"{Path(f).name}: {_last_line(bag['errors'][f])}" for f in files],
        )
    return Finding(Status.OK, f"Airflow {version}: {len(bag['dags'])} DAGs parse ({', '.join(bag['dags'])})")


def _run(command: list[str], env: dict[str, str], what: str, fix: str, timeout_s: float = 150) -> str:
    try:
        result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout_s, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise Problem(f"{what} failed: {_first_line(e)}", fix) from e
    if result.returncode:
        raise Problem(f"{what} failed ({result.returncode}): {_last_line(result.stderr or result.stdout)}", fix)
    return result.stdout


CHECKS: tuple[Check, ...] = (
    Check("java", _check_java, 60, "`java -version` should answer at once"),
    Check("spark", _check_spark, 300, "Spark's own messages above say why; free memory and CPU for the driver"),
    Check("lake", _check_lake, 120, "the lake's storage (a slow or hung mount, an object store's network)"),
    Check("text encoder", functools.partial(_check_encoder, modality="text"), 300, "embedding.text in the config"),
    Check("image encoder", functools.partial(_check_encoder, modality="image"), 300, "embedding.image in the config"),
    Check("mlflow", _check_mlflow, 90, "the tracking server (mlflow.tracking_uri) and the network to it"),
    Check("airflow", _check_airflow, 330, "`airflow version` and `python dags/<file>.py` by hand"),
)


# ------------------------------------------------------------------------------------------- running


def run_check(check: Check, cfg: Config) -> CheckResult:
    """Run one check within its deadline. A check still running after it is left behind in a daemon thread
    (it cannot be interrupted safely; the process exits soon after anyway)."""
    found: list[Finding] = []
    start = time.monotonic()
    thread = threading.Thread(target=lambda: found.append(_finding(check, cfg)), name=f"doctor-{check.name}", daemon=True)
    thread.start()
    thread.join(check.timeout_s)
    if found:
        finding = found[0]
    else:
        finding = Finding(Status.PROBLEM, f"no answer within {check.timeout_s:g} s", check.hint)
    return CheckResult(check.name, finding, time.monotonic() - start)


def _finding(check: Check, cfg: Config) -> Finding:
    try:
        return check.run(cfg)
    except Problem as problem:
        return problem.finding
    except Exception as e:  # a check reports; it never stops the others
        return Finding(Status.PROBLEM, f"the check failed: {type(e).__name__}: {_first_line(e)}", check.hint)


def diagnose(cfg: Config, say: Callable[[str], None] = print, checks: Sequence[Check] = CHECKS) -> list[CheckResult]:
    """Run `checks` in order, saying each one's lines as it finishes, then a summary."""
    width = max(len(c.name) for c in checks) + 2
    say(f"{'check':<{width}}{'status':<9}{'time':>7}  finding")
    results = []
    for check in checks:
        results.append(run_check(check, cfg))
        say(render(results[-1], width))
    say(summary(results))
    return results


def render(result: CheckResult, width: int) -> str:
    """`name  STATUS  time  summary`, then the details and the fix indented under the summary."""
    finding = result.finding
    indent = " " * (width + 9 + 7 + 2)
    lines = [f"{result.name:<{width}}{finding.status:<9}{result.seconds:>6.1f}s  {finding.summary}"]
    lines += [indent + detail for detail in finding.details]
    if finding.fix:
        lines.append(f"{indent}fix: {finding.fix}")
    return "\n".join(lines)


def summary(results: Sequence[CheckResult]) -> str:
    problems = [r.name for r in results if r.finding.status is Status.PROBLEM]
    skipped = sum(r.finding.status is Status.SKIPPED for r in results)
    if problems:
        return f"{len(problems)} problem(s): {', '.join(problems)}"
    return f"no problems ({len(results)} checks, {skipped} skipped)"


def exit_code(results: Sequence[CheckResult]) -> int:
    return 1 if any(r.finding.status is Status.PROBLEM for r in results) else 0


# ------------------------------------------------------------------------------------------- helpers


@contextmanager
def _environment(**values: str) -> Iterator[None]:
    """Set environment variables for the block, then restore them."""
    before = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in before.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _first_line(error: object) -> str:
    """An error's first non-empty line, short: enough to act on (Java and Python tracebacks are not)."""
    text = str(error).strip()
    line = text.splitlines()[0] if text else type(error).__name__
    return line[:_MESSAGE_CHARS]


def _last_line(text: str) -> str:
    """A traceback's last non-empty line: the error itself."""
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:_MESSAGE_CHARS] if lines else "(no output)"
