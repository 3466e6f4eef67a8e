"""Step 5: evaluate_model."""

import numpy as np
from kfp.dsl import Artifact, ClassificationMetrics, Dataset, Metrics, Model
from sklearn.metrics import log_loss

from digits.artifacts import MODEL_FILENAME, Evaluation
from digits.components import evaluate_model
from digits.data import ImageSet


def test_scores_agree_with_the_model_predictions(tmp_path, trained_model, split_sets):
    import keras

    model_dir, _ = trained_model
    evaluation = evaluate_model.evaluate_model(model_dir, split_sets[1], tmp_path / "report.json")

    validation = ImageSet.load(split_sets[1])
    model = keras.saving.load_model(model_dir / MODEL_FILENAME)
    probabilities = model.predict(validation.images, verbose=0)
    predicted = probabilities.argmax(axis=1)
    assert np.isclose(evaluation.accuracy, np.mean(predicted == validation.labels))
    assert np.isclose(evaluation.loss, log_loss(validation.labels, probabilities, labels=range(10)))
    matrix = np.array(evaluation.confusion_matrix)
    assert matrix.shape == (10, 10) and matrix.sum() == len(validation)
    assert np.trace(matrix) == int(round(evaluation.accuracy * len(validation)))
    assert evaluation.support == np.bincount(validation.labels, minlength=10).tolist()
    assert Evaluation.read(tmp_path / "report.json") == evaluation


def test_wrapper_fills_kfp_metrics_and_confusion_matrix(tmp_path, trained_model, split_sets):
    metrics = Metrics(name="metrics", uri=str(tmp_path / "metrics"))
    confusion = ClassificationMetrics(name="cm", uri=str(tmp_path / "cm"))
    report = Artifact(name="report", uri=str(tmp_path / "report"))

    evaluate_model.component("digits:test").python_func(
        model=Model(name="model", uri=str(trained_model[0])),
        validation=Dataset(name="validation", uri=str(split_sets[1])),
        metrics=metrics,
        classification_metrics=confusion,
        report=report,
    )

    assert {"accuracy", "loss", "macro_f1", "precision_0", "recall_9", "f1_5"} <= set(
        metrics.metadata
    )
    matrix = confusion.metadata["confusionMatrix"]
    assert [c["displayName"] for c in matrix["annotationSpecs"]] == [str(d) for d in range(10)]
    assert sum(map(sum, (row["row"] for row in matrix["rows"]))) == 100
