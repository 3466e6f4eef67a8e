"""Load any model a train step writes as one callable: images -> class probabilities."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from digits.artifacts import CLASS_NAMES, MODEL_FILENAME, SKLEARN_MODEL_FILENAME
from digits.errors import ModelArtifactError

Predictor = Callable[[np.ndarray], np.ndarray]


def load_predictor(model_dir: Path, batch_size: int = 512) -> Predictor:
    """Return ``predict(images) -> probabilities`` for a Model artifact directory.

    Args:
        model_dir: holds ``model.keras`` (the CNN) or ``model.joblib`` (the scikit-learn baseline).
        batch_size: Keras prediction batch size.

    Returns:
        A function from float32 images (n, 28, 28, 1) in [0, 1] to probabilities (n, 10).
    """
    if (model_dir / MODEL_FILENAME).is_file():
        import keras

        model = keras.saving.load_model(model_dir / MODEL_FILENAME)
        return lambda images: model.predict(images, batch_size=batch_size, verbose=0)
    if (model_dir / SKLEARN_MODEL_FILENAME).is_file():
        import joblib

        classifier = joblib.load(model_dir / SKLEARN_MODEL_FILENAME)
        return lambda images: all_class_probabilities(classifier, images)
    raise ModelArtifactError(
        f"{model_dir}: holds neither {MODEL_FILENAME} nor {SKLEARN_MODEL_FILENAME}; pass the "
        "Model artifact directory that train_model or train_baseline wrote."
    )


def all_class_probabilities(classifier, images: np.ndarray) -> np.ndarray:
    """predict_proba on flattened pixels, spread over all 10 columns (a class absent from
    training gets 0)."""
    pixels = images.reshape(len(images), -1)
    known = classifier.predict_proba(pixels)
    probabilities = np.zeros((len(pixels), len(CLASS_NAMES)), dtype=known.dtype)
    probabilities[:, classifier.classes_.astype(int)] = known
    return probabilities
