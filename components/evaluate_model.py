"""Step 5: score the trained model on the validation split."""

from pathlib import Path

from digits.artifacts import CLASS_NAMES, Evaluation
from digits.data import ImageSet


def evaluate_model(model_path: Path, validation_path: Path, report_path: Path) -> Evaluation:
    """Accuracy, log loss, per-class precision/recall/F1 and the confusion matrix, as JSON too."""
    import keras
    import numpy as np
    from sklearn.metrics import confusion_matrix, log_loss, precision_recall_fscore_support

    validation = ImageSet.load(validation_path)
    model = keras.saving.load_model(model_path)
    probabilities = model.predict(validation.images, batch_size=512, verbose=0)
    predicted = probabilities.argmax(axis=1)
    labels = list(range(len(CLASS_NAMES)))
    precision, recall, f1, support = precision_recall_fscore_support(
        validation.labels, predicted, labels=labels, zero_division=0
    )
    evaluation = Evaluation(
        accuracy=float(np.mean(predicted == validation.labels)),
        loss=float(log_loss(validation.labels, probabilities, labels=labels)),
        macro_f1=float(np.mean(f1)),
        precision=precision.tolist(),
        recall=recall.tolist(),
        f1=f1.tolist(),
        support=support.tolist(),
        confusion_matrix=confusion_matrix(validation.labels, predicted, labels=labels).tolist(),
    )
    evaluation.write(report_path)
    return evaluation


def component(image: str):
    """Build the KFP component that runs :func:`evaluate_model` in ``image``."""
    from kfp import dsl
    from kfp.dsl import Artifact, ClassificationMetrics, Dataset, Input, Metrics, Model, Output

    @dsl.component(base_image=image, install_kfp_package=False)
    def evaluate_model(
        model: Input[Model],
        validation: Input[Dataset],
        metrics: Output[Metrics],
        classification_metrics: Output[ClassificationMetrics],
        report: Output[Artifact],
    ):
        """Validation accuracy, loss, per-class P/R/F1 and confusion matrix for the KFP UI."""
        from pathlib import Path

        from digits.artifacts import CLASS_NAMES, MODEL_FILENAME
        from digits.components.evaluate_model import evaluate_model as run

        evaluation = run(
            Path(model.path) / MODEL_FILENAME, Path(validation.path), Path(report.path)
        )
        for name, value in evaluation.scalar_metrics().items():
            metrics.log_metric(name, value)
        classification_metrics.log_confusion_matrix(CLASS_NAMES, evaluation.confusion_matrix)

    return evaluate_model
