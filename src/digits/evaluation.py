"""Scoring shared by every model kind: the CNN and the baseline get the same numbers."""

from __future__ import annotations

import numpy as np

from digits.artifacts import CLASS_NAMES, Evaluation


def evaluate_probabilities(labels: np.ndarray, probabilities: np.ndarray) -> Evaluation:
    """Accuracy, log loss, macro F1, per-class P/R/F1, support and confusion matrix.

    Args:
        labels: true classes, shape (n,).
        probabilities: predicted class probabilities, shape (n, 10), rows summing to 1.
    """
    from sklearn.metrics import confusion_matrix, log_loss, precision_recall_fscore_support

    predicted = probabilities.argmax(axis=1)
    classes = list(range(len(CLASS_NAMES)))
    precision, recall, f1, support = precision_recall_fscore_support(
        labels, predicted, labels=classes, zero_division=0
    )
    return Evaluation(
        accuracy=float(np.mean(predicted == labels)),
        loss=float(log_loss(labels, probabilities, labels=classes)),
        macro_f1=float(np.mean(f1)),
        precision=precision.tolist(),
        recall=recall.tolist(),
        f1=f1.tolist(),
        support=support.tolist(),
        confusion_matrix=confusion_matrix(labels, predicted, labels=classes).tolist(),
        predicted=predicted.tolist(),
    )


def evaluate_model_dir(model_dir, validation_path) -> Evaluation:
    """Score the Model artifact in ``model_dir`` (CNN or scikit-learn) on a validation split."""
    from digits.data import ImageSet
    from digits.predictor import load_predictor

    validation = ImageSet.load(validation_path)
    return evaluate_probabilities(validation.labels, load_predictor(model_dir)(validation.images))


def held_out_accuracy(submission_path, labels_path) -> float:
    """Share of submission rows whose Label matches the held-out ``ImageId,Label`` file."""
    import pandas as pd

    submission = pd.read_csv(submission_path)
    labels = pd.read_csv(labels_path)
    joined = labels.merge(submission, on="ImageId", how="left", suffixes=("_true", "_pred"))
    # A row missing from the submission counts as wrong, as Kaggle would score it.
    return float((joined["Label_true"] == joined["Label_pred"]).mean())
