"""Step 5: score a trained model (the CNN or the scikit-learn baseline) on the validation split."""

from pathlib import Path

from digits.artifacts import Evaluation


def evaluate_model(model_dir: Path, validation_path: Path, report_path: Path) -> Evaluation:
    """Accuracy, log loss, per-class precision/recall/F1 and the confusion matrix, as JSON too.

    ``model_dir`` is a Model artifact directory; its file (model.keras or model.joblib) tells
    the model's kind, so both are scored by the same code on the same rows.
    """
    from digits.evaluation import evaluate_model_dir

    evaluation = evaluate_model_dir(model_dir, validation_path)
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

        from digits.artifacts import CLASS_NAMES
        from digits.components.evaluate_model import evaluate_model as run

        evaluation = run(Path(model.path), Path(validation.path), Path(report.path))
        for name, value in evaluation.scalar_metrics().items():
            metrics.log_metric(name, value)
        classification_metrics.log_confusion_matrix(CLASS_NAMES, evaluation.confusion_matrix)

    return evaluate_model
