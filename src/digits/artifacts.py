"""Contracts of the artifacts passed between steps: file names inside them and their JSON shapes.

Components share these instead of importing each other, so every component depends only on
``digits.*``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

# Inside a Model artifact (a directory): exactly one of these two, which tells the model's kind.
# The train step's Keras model, taking images (n, 28, 28, 1).
MODEL_FILENAME = "model.keras"
# The baseline's scikit-learn classifier (joblib), taking flattened pixels (n, 784) in [0, 1].
SKLEARN_MODEL_FILENAME = "model.joblib"
# Beside the model: the fully resolved recipe and the fit's result (logged to MLflow as params).
TRAINING_FILENAME = "training.json"
CLASS_NAMES = [str(digit) for digit in range(10)]


@dataclass(frozen=True)
class Evaluation:
    """Scores of one model on one labeled split; per-class lists are indexed by digit."""

    accuracy: float
    loss: float
    macro_f1: float
    precision: list[float]
    recall: list[float]
    f1: list[float]
    support: list[int]
    confusion_matrix: list[list[int]]

    def scalar_metrics(self) -> dict[str, float]:
        """Flat name -> value map, the shape KFP Metrics and MLflow both take."""
        metrics = {"accuracy": self.accuracy, "loss": self.loss, "macro_f1": self.macro_f1}
        for name in ("precision", "recall", "f1"):
            for digit, value in enumerate(getattr(self, name)):
                metrics[f"{name}_{digit}"] = value
        return metrics

    def write(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=2))

    @classmethod
    def read(cls, path: Path) -> Evaluation:
        return cls(**json.loads(path.read_text()))
