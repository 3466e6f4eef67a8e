"""Models whose mistakes a test chooses, to drive the promotion gate through each of its rules."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np


def image_key(image: np.ndarray) -> str:
    return hashlib.sha1(np.ascontiguousarray(image, dtype=np.float32).tobytes()).hexdigest()


class ScriptedClassifier:
    """A scikit-learn-style classifier that answers each known image as scripted."""

    def __init__(self, images: np.ndarray, answers: np.ndarray):
        pairs = zip(images, answers, strict=True)
        self.answers = {image_key(image): int(answer) for image, answer in pairs}
        self.classes_ = np.arange(10)

    def predict_proba(self, pixels: np.ndarray) -> np.ndarray:
        images = pixels.reshape(len(pixels), 28, 28, 1)
        probabilities = np.zeros((len(pixels), 10))
        for row, image in enumerate(images):
            probabilities[row, self.answers.get(image_key(image), 0)] = 1.0
        return probabilities

    def predict(self, pixels: np.ndarray) -> np.ndarray:
        return self.predict_proba(pixels).argmax(axis=1)


def scripted(labels: np.ndarray, wrong: list[int]) -> np.ndarray:
    """The true labels, except rows ``wrong`` answered with the next digit."""
    answers = labels.copy()
    answers[wrong] = (answers[wrong] + 1) % 10
    return answers


def save(classifier: ScriptedClassifier, model_dir: Path) -> Path:
    import joblib

    from digits.artifacts import SKLEARN_MODEL_FILENAME

    model_dir.mkdir(parents=True, exist_ok=True)
    joblib.dump(classifier, model_dir / SKLEARN_MODEL_FILENAME)
    return model_dir


def register(client, model_name: str, classifier, experiment_id: str) -> str:
    """Log ``classifier`` as an MLflow sklearn model in a new run and register it as a version of
    ``model_name``; returns the version."""
    import mlflow

    run = client.create_run(experiment_id)
    mlflow.set_tracking_uri(client.tracking_uri)
    info = mlflow.sklearn.log_model(
        classifier, name="model", run_id=run.info.run_id, serialization_format="cloudpickle"
    )
    version = client.create_model_version(
        model_name, source=info.model_uri, run_id=run.info.run_id, model_id=info.model_id
    )
    return str(version.version)
