"""What MLflow runs to load a logged model ("models from code"): the pyfunc wrapper is built here,
by this code, instead of being unpickled, so loading a registered model runs no pickled code."""

import mlflow

from models.tracking import SamplesModel

mlflow.models.set_model(SamplesModel())
