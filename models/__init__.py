"""The PyTorch trainer: CTR models over the lake's samples, tracked in MLflow.

MLflow unpickles a model's `python_model.pkl` when its MLmodel names one (allowed by default). Ours
are logged from code and hold no pickle, so nothing is lost by refusing: an MLmodel edited to point at
a pickle then fails to load instead of running its code."""

import os

os.environ.setdefault("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "false")
