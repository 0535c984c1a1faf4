"""The registered model as a server runs it: its signature asks only for what a request carries, its
predictions are the training forward pass, and `mlflow models serve` answers with them."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import torch

from models.config import load_model_spec
from models.data import PinnedTable, sample_columns, to_batch
from models.tracking import request_columns
from tests.models.conftest import evaluation

pytestmark = pytest.mark.e2e

STARTUP_TIMEOUT_S = 180  # a loaded CI machine may take long to import torch and MLflow twice


@pytest.fixture(scope="module")
def registered(tables, tmp_path_factory) -> tuple[str, str]:
    """A tiny DMF trained by `train_run`, registered in a temporary sqlite store: (store URI, model URI)."""
    from models.experiment import train_run, with_settings
    from models.tracking import Tracker

    lake, _, _ = tables
    store = f"sqlite:///{tmp_path_factory.mktemp('served') / 'mlflow.db'}"
    spec = with_settings(load_model_spec("dmf"), {"training.epochs": 1, "training.batch_size": 32})
    train_run(spec, 0, evaluation(lake), Tracker(store, "serve-experiment"), progress=lambda _: None)
    version = mlflow.tracking.MlflowClient(store).search_model_versions("name='dmf'")[0].version
    return store, f"models:/dmf/{version}"


def request_rows(tables, modalities: list[str], columns: list[str], rows: int = 6) -> tuple[pd.DataFrame, pa.RecordBatch]:
    """A few samples as a client holds them (Spark's rows, the signature's `columns` only) and as training
    reads them (the Delta table's record batch)."""
    lake, spark_rows, _ = tables
    records = next(PinnedTable.open(lake.uri("samples")).batches([*sample_columns(modalities), "sample_id"], rows))
    return spark_rows.loc[records.column("sample_id").to_pylist()].reset_index()[columns], records


def test_the_signature_asks_only_for_what_a_request_has_and_predict_is_the_training_forward_pass(tables, registered):
    store, model_uri = registered
    mlflow.set_tracking_uri(store)
    loaded = mlflow.pyfunc.load_model(model_uri)
    served = loaded.unwrap_python_model()
    columns = loaded.metadata.get_input_schema().input_names()
    assert columns == request_columns(served.modalities, context=True)  # dmf reads point-in-time statistics
    assert {"label", "split", "sample_id", "date"}.isdisjoint(columns) and "event_time" in columns
    request, records = request_rows(tables, served.modalities, columns)
    batch = to_batch(records, served.vocabulary, served.modalities, served.vectors, served.hist_vectors, served.prior_stats)
    with torch.inference_mode():
        trained = torch.sigmoid(served.model(batch)).numpy()
    np.testing.assert_allclose(loaded.predict(request), trained, rtol=0, atol=1e-6)
    # loaded from code and files: the logged model holds no pickle of the wrapper or of the network
    files = {p.name for p in Path(mlflow.artifacts.download_artifacts(model_uri)).rglob("*")}
    assert {"weights.pt", "model.json", "pyfunc_entry.py"} <= files and not any(f.endswith(".pkl") for f in files)


def test_mlflow_models_serve_answers_a_request_with_the_in_process_probabilities(tables, registered, tmp_path):
    store, model_uri = registered
    mlflow.set_tracking_uri(store)
    loaded = mlflow.pyfunc.load_model(model_uri)
    request, _ = request_rows(tables, loaded.unwrap_python_model().modalities, loaded.metadata.get_input_schema().input_names())
    payload = {"dataframe_split": json.loads(request.to_json(orient="split", index=False, date_format="iso"))}
    with mlflow_server(model_uri, store, tmp_path / "server.log") as url:
        status, body = post(f"{url}/invocations", payload)
    assert status == 200, body
    np.testing.assert_allclose(body["predictions"], loaded.predict(request), rtol=0, atol=1e-6)


@contextlib.contextmanager
def mlflow_server(model_uri: str, store: str, log: Path) -> Iterator[str]:
    """`mlflow models serve` of `model_uri` on a free local port; its URL once /ping answers. The server's
    process group is stopped on leaving, whatever happened."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with log.open("wb") as out:
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "mlflow",
                "models",
                "serve",
                "-m",
                model_uri,
                "--env-manager",
                "local",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--workers",
                "1",
            ],
            env={**os.environ, "MLFLOW_TRACKING_URI": store},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for_ping(url, server, log)
        yield url
    finally:
        stop(server)


def stop(server: subprocess.Popen) -> None:
    """SIGTERM to the server's process group (its workers too), SIGKILL to whatever is left after 30 s."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(server.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        server.wait(timeout=30)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(server.pid, signal.SIGKILL)
    server.wait()


def wait_for_ping(url: str, server: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"mlflow models serve exited with {server.returncode}:\n{log.read_text()[-4000:]}")
        with contextlib.suppress(OSError), urllib.request.urlopen(f"{url}/ping", timeout=5) as answer:
            if answer.status == 200:
                return
        time.sleep(0.5)
    pytest.fail(f"mlflow models serve gave no /ping in {STARTUP_TIMEOUT_S} s:\n{log.read_text()[-4000:]}")


def post(url: str, payload: dict) -> tuple[int, dict | str]:
    """(status, JSON body) of a POST; an error's body as text."""
    request = urllib.request.Request(url, json.dumps(payload).encode(), {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()
