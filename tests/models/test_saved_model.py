"""A logged model's network is its state dict and the JSON of its kind and config (no Spark, no MLflow
run): it is built again from them, loads without unpickling code and scores exactly as before."""

from __future__ import annotations

import json

import pytest
import torch

from models.config import MODEL_CLASSES
from models.tracking import load_model, save_model
from tests.models.test_layers_and_serving import VARIANTS, build, random_batch


@pytest.mark.parametrize("name", VARIANTS)
def test_a_saved_model_loads_from_its_weights_and_config_and_scores_as_before(name, tmp_path):
    model = build(name)
    save_model(model, tmp_path)
    saved = json.loads((tmp_path / "model.json").read_text())
    assert MODEL_CLASSES[saved["kind"]] is type(model)
    loaded = load_model(tmp_path)  # the weights with torch.load(weights_only=True)
    assert type(loaded) is type(model) and loaded.cfg == model.cfg and not loaded.training
    batch = random_batch()
    torch.testing.assert_close(loaded(batch), model(batch), rtol=0, atol=0)


def test_a_model_logged_as_a_pickled_module_is_refused_with_what_to_do(tmp_path):
    torch.save(build("dmf_gate"), tmp_path / "model.pt")  # how earlier versions logged it
    with pytest.raises(LookupError, match="earlier version .* train it again"):
        load_model(tmp_path)
