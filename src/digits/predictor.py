"""Load any model a train step writes as one callable: images -> class probabilities."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from digits.artifacts import CLASS_NAMES, MODEL_FILENAME, SKLEARN_MODEL_FILENAME
from digits.errors import ModelArtifactError

Predictor = Callable[[np.ndarray], np.ndarray]
# Images per Keras predict call. 128 against 512: the same rows/s on 2 CPU cores (700-840 either
# way, measured side by side), and a prediction process peaks ~160 MiB lower (~880 against
# ~1,040 MiB: activations of 512 images), which keeps a shard under 1 GiB.
PREDICT_BATCH_SIZE = 128


def load_predictor(model_dir: Path, batch_size: int = PREDICT_BATCH_SIZE) -> Predictor:
    """Return ``predict(images) -> probabilities`` for a Model artifact directory.

    Args:
        model_dir: holds ``model.keras`` (the CNN) or ``model.joblib`` (the scikit-learn baseline).
        batch_size: Keras prediction batch size.

    Returns:
        A function from float32 images (n, 28, 28, 1) in [0, 1] to probabilities (n, 10).
    """
    if (model_dir / MODEL_FILENAME).is_file():
        import keras

        return keras_predictor(keras.saving.load_model(model_dir / MODEL_FILENAME), batch_size)
    if (model_dir / SKLEARN_MODEL_FILENAME).is_file():
        import joblib

        classifier = joblib.load(model_dir / SKLEARN_MODEL_FILENAME)
        return lambda images: all_class_probabilities(classifier, images)
    raise ModelArtifactError(
        f"{model_dir}: holds neither {MODEL_FILENAME} nor {SKLEARN_MODEL_FILENAME}; pass the "
        "Model artifact directory that train_model or train_baseline wrote."
    )


def keras_predictor(model, batch_size: int = PREDICT_BATCH_SIZE) -> Predictor:
    """``model.predict`` without its per-call cost: no progress bar, data adapter or new graph.

    ``predict_on_batch`` runs the model's predict function, compiled once (Keras relaxes the batch
    dimension after a few sizes), on slices of ``batch_size`` images. It gives what
    ``model.predict(images, batch_size=batch_size)`` gives (the same slices, the same function),
    at ~2 ms instead of ~100 ms for one image on 2 CPU cores, so the batch step and `digits
    serve` share this one code path.
    """

    def predict(images: np.ndarray) -> np.ndarray:
        slices = [
            np.asarray(model.predict_on_batch(images[start : start + batch_size]))
            for start in range(0, len(images), batch_size)
        ]
        return np.concatenate(slices) if slices else np.zeros((0, len(CLASS_NAMES)), np.float32)

    return predict


def all_class_probabilities(classifier, images: np.ndarray) -> np.ndarray:
    """predict_proba on flattened pixels, spread over all 10 columns (a class absent from
    training gets 0)."""
    pixels = images.reshape(len(images), -1)
    known = classifier.predict_proba(pixels)
    probabilities = np.zeros((len(pixels), len(CLASS_NAMES)), dtype=known.dtype)
    probabilities[:, classifier.classes_.astype(int)] = known
    return probabilities
