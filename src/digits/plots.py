"""Figures logged to every MLflow run at the same artifact paths, so runs compare side by side."""

from __future__ import annotations

from typing import TYPE_CHECKING

from digits.artifacts import Evaluation

if TYPE_CHECKING:
    import numpy as np
    from matplotlib.figure import Figure

# Artifact paths inside the MLflow run: the compare view lines up same-path artifacts.
CONFUSION_MATRIX_PNG = "plots/confusion_matrix.png"
TRAINING_CURVES_PNG = "plots/training_curves.png"
MISCLASSIFIED_PNG = "plots/misclassified.png"


def confusion_figure(evaluation: Evaluation) -> Figure:
    """The validation confusion matrix."""
    import numpy as np
    from matplotlib.figure import Figure
    from sklearn.metrics import ConfusionMatrixDisplay

    figure = Figure(figsize=(6, 6), layout="constrained")
    axes = figure.subplots()
    ConfusionMatrixDisplay(np.array(evaluation.confusion_matrix)).plot(ax=axes, colorbar=False)
    axes.set_title(f"validation accuracy {evaluation.accuracy:.4f}")
    return figure


def training_curves_figure(history: list[dict[str, float]]) -> Figure:
    """Loss, accuracy (train and validation) and learning rate per epoch."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(12, 3.6), layout="constrained")
    loss_axes, accuracy_axes, rate_axes = figure.subplots(1, 3)
    epochs = [record["epoch"] for record in history]
    for axes, name in ((loss_axes, "loss"), (accuracy_axes, "accuracy")):
        for prefix, label in (("", "train"), ("val_", "validation")):
            values = [record.get(prefix + name) for record in history]
            if epochs and all(value is not None for value in values):
                axes.plot(epochs, values, marker=".", label=label)
        axes.set_title(name)
        axes.set_xlabel("epoch")
        if axes.lines:
            axes.legend()
    rates = [record.get("learning_rate") for record in history]
    if epochs and all(rate is not None for rate in rates):
        rate_axes.plot(epochs, rates, marker=".")
        rate_axes.set_yscale("log")
    rate_axes.set_title("learning rate")
    rate_axes.set_xlabel("epoch")
    if not epochs:
        figure.suptitle("no epochs: this model is not trained by gradient descent")
    return figure


def misclassified_figure(
    images: np.ndarray, labels: np.ndarray, predicted: np.ndarray, limit: int = 40
) -> Figure:
    """A grid of wrongly classified validation images, titled true -> predicted."""
    import numpy as np
    from matplotlib.figure import Figure

    wrong = np.flatnonzero(labels != predicted)[:limit]
    columns = 10
    rows = max(1, -(-len(wrong) // columns))
    figure = Figure(figsize=(columns * 1.1, rows * 1.3 + 0.5), layout="constrained")
    grid = figure.subplots(rows, columns, squeeze=False)
    for axes in grid.flat:
        axes.set_axis_off()
    for axes, index in zip(grid.flat, wrong, strict=False):
        axes.imshow(images[index].reshape(images.shape[1], images.shape[2]), cmap="gray_r")
        axes.set_title(f"{labels[index]} → {predicted[index]}", fontsize=9)
    total = int((labels != predicted).sum())
    figure.suptitle(
        f"misclassified validation images: {total} of {len(labels)}"
        + (f" (first {len(wrong)})" if total > len(wrong) else "")
        + "; title: true → predicted"
    )
    return figure
