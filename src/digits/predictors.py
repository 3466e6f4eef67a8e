"""Load a model, from a pipeline artifact or the MLflow registry, as images -> probabilities."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from digits.artifacts import MODEL_FILENAME, SKLEARN_MODEL_FILENAME

if TYPE_CHECKING:
    import numpy as np

Predictor = Callable[["np.ndarray"], "np.ndarray"]


def load_predictor(model_dir: Path, batch_size: int = 512) -> Predictor:
    """A model artifact directory (Keras ``model.keras`` or scikit-learn ``model.joblib``)."""
    if (model_dir / MODEL_FILENAME).is_file():
        import keras

        return _keras_predictor(keras.saving.load_model(model_dir / MODEL_FILENAME), batch_size)
    if (model_dir / SKLEARN_MODEL_FILENAME).is_file():
        import joblib

        return _sklearn_predictor(joblib.load(model_dir / SKLEARN_MODEL_FILENAME))
    raise FileNotFoundError(
        f"{model_dir}: neither {MODEL_FILENAME} nor {SKLEARN_MODEL_FILENAME}; "
        "pass the model artifact of the train or baseline step"
    )


def load_logged_predictor(model_uri: str, batch_size: int = 512) -> Predictor:
    """An MLflow model URI (``models:/name@alias``, ``models:/name/3``, ``runs:/...``)."""
    from mlflow.models import Model

    flavors = Model.load(model_uri).flavors
    if "keras" in flavors:
        import mlflow.keras

        return _keras_predictor(mlflow.keras.load_model(model_uri), batch_size)
    if "sklearn" in flavors:
        import mlflow.sklearn

        return _sklearn_predictor(mlflow.sklearn.load_model(model_uri))
    raise ValueError(f"{model_uri}: flavors {sorted(flavors)}; expected keras or sklearn")


def _keras_predictor(model, batch_size: int) -> Predictor:
    return lambda images: model.predict(images, batch_size=batch_size, verbose=0)


def _sklearn_predictor(model) -> Predictor:
    return lambda images: model.predict_proba(images.reshape(len(images), -1))
