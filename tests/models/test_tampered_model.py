"""A model file replaced by a pickle that runs code when loaded (here: it creates a marker file) is
refused with an error that says so, and the code never runs: for `load_model` on a saved folder and
for a logged model loaded through `mlflow.pyfunc.load_model`, whose artifacts hold no pickle at all."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch
import yaml

from models.tracking import UnsafeModelError, load_model, save_model
from tests.models.test_layers_and_serving import build

PYFUNC_ENTRY = Path(__file__).resolve().parents[2] / "models" / "pyfunc_entry.py"


class CreatesFile:
    """Unpickling this calls `open(path, "w")`: the side effect a malicious file would have."""

    def __init__(self, path: Path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def write_as_torch_save(payload: CreatesFile, file: Path) -> None:
    torch.save(payload, file)


def write_as_plain_pickle(payload: CreatesFile, file: Path) -> None:
    with file.open("wb") as out:
        pickle.dump(payload, out, protocol=2)


def unsafe_torch_load(file: Path):
    return torch.load(file, weights_only=False)


def unsafe_unpickle(file: Path):
    return pickle.loads(file.read_bytes())


FORMATS = {"torch.save": (write_as_torch_save, unsafe_torch_load), "pickle": (write_as_plain_pickle, unsafe_unpickle)}


@pytest.mark.parametrize(("write", "unsafe_load"), FORMATS.values(), ids=FORMATS)
def test_load_model_refuses_a_weights_file_that_would_run_code(write, unsafe_load, tmp_path):
    folder, marker = tmp_path / "model", tmp_path / "marker"
    folder.mkdir()
    save_model(build("dmf_gate"), folder)
    write(CreatesFile(marker), folder / "weights.pt")

    with pytest.raises(UnsafeModelError, match=r"weights\.pt was refused: .*it calls io\.open.*train the model again"):
        load_model(folder)
    assert not marker.exists()

    unsafe_load(folder / "weights.pt").close()  # what it unpickles to: the file its payload opened
    assert marker.exists()  # the payload is real: an unsafe load would have run it


def save_pyfunc(folder: Path) -> Path:
    """A model saved the way `RunLogger.log_model` logs it (from code, `pyfunc_entry.py`), without a run."""
    files = folder / "files"
    files.mkdir(parents=True)
    model = build("dmf_ids_only")
    save_model(model, files)
    np.save(files / "vocabulary.npy", np.arange(model.cfg.vocab_size))
    (files / "meta.json").write_text(json.dumps({"modalities": list(model.cfg.modalities), "hist_vectors": False}))
    logged = folder / "pyfunc"
    mlflow.pyfunc.save_model(str(logged), python_model=str(PYFUNC_ENTRY), artifacts={"folder": str(files)}, pip_requirements=[])
    return logged


def test_a_logged_model_holds_no_pickle_and_refuses_tampered_weights(tmp_path):
    logged, marker = save_pyfunc(tmp_path), tmp_path / "marker"
    flavor = yaml.safe_load((logged / "MLmodel").read_text())["flavors"]["python_function"]
    assert "model_code_path" in flavor and "python_model" not in flavor  # built from code, not unpickled
    assert not list(logged.rglob("*.pkl"))
    assert mlflow.pyfunc.load_model(str(logged)).unwrap_python_model().model is not None

    weights = next(logged.rglob("weights.pt"))
    write_as_torch_save(CreatesFile(marker), weights)
    with pytest.raises(UnsafeModelError, match="it calls io.open"):
        mlflow.pyfunc.load_model(str(logged))
    assert not marker.exists()


def test_a_logged_model_refuses_a_vocabulary_that_holds_objects(tmp_path):
    """The wrapper's other files are numpy arrays, loaded without pickle (`allow_pickle` is off)."""
    logged, marker = save_pyfunc(tmp_path), tmp_path / "marker"
    np.save(next(logged.rglob("vocabulary.npy")), np.array([CreatesFile(marker)], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="allow_pickle=False"):
        mlflow.pyfunc.load_model(str(logged))
    assert not marker.exists()
