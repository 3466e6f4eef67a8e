"""Step 7: promote_model, the champion/challenger gate, against a real `mlflow server`.

The models are scripted (each answers chosen validation rows wrong), so every rule of the gate is
exercised with exact, known accuracies and per-digit recalls.
"""

import json

import joblib
import numpy as np
import pytest
import scripted_models
from kfp.dsl import Artifact, Dataset, Markdown
from mlflow import MlflowClient

from digits.components import promote_model
from digits.data import ImageSet
from digits.evaluation import evaluate_probabilities
from digits.predictor import all_class_probabilities
from digits.promotion import CHALLENGER, CHAMPION, decide


@pytest.fixture(scope="module")
def validation(split_sets) -> ImageSet:
    return ImageSet.load(split_sets[1])


def _wrong_rows(labels: np.ndarray, digit: int | None = None, count: int = 1, skip=()) -> list:
    rows = [i for i in range(len(labels)) if (digit is None or labels[i] == digit)]
    return [i for i in rows if i not in skip][:count]


def test_the_gate_promotes_only_a_model_that_wins_overall_and_on_every_digit(
    mlflow_server, experiment_name, validation, split_sets, tmp_path
):
    client = MlflowClient(mlflow_server)
    experiment_id = client.create_experiment(experiment_name)
    model_name = f"{experiment_name}-model"
    client.create_registered_model(model_name)
    labels = validation.labels
    spread = list(range(0, len(labels), 5))  # every 5th row: all digits touched

    def candidate(name: str, wrong: list[int]):
        """Registers a scripted model; returns its evaluation on the split, and its version."""
        classifier = scripted_models.ScriptedClassifier(
            validation.images, scripted_models.scripted(labels, wrong)
        )
        model_dir = scripted_models.save(classifier, tmp_path / name)
        version = scripted_models.register(
            client, model_name, joblib.load(model_dir / "model.joblib"), experiment_id
        )
        evaluation_path = tmp_path / f"{name}.json"
        evaluate_probabilities(
            labels, all_class_probabilities(classifier, validation.images)
        ).write(evaluation_path)
        return evaluation_path, version

    def gate(evaluation_path, version):
        return promote_model.promote_model(
            evaluation_path, split_sets[1], mlflow_server, model_name, version, timeout_s=60
        )

    def champion():
        return client.get_model_version_by_alias(model_name, CHAMPION).version

    first = gate(*candidate("first", spread[:10]))  # 10 wrong
    assert first.alias == CHAMPION and "first version" in first.reason
    assert champion() == "1"

    worse = gate(*candidate("worse", spread[:15]))  # 15 wrong: clearly worse
    assert worse.alias == CHALLENGER and worse.champion_version == "1"
    assert (
        champion() == "1"
        and client.get_model_version_by_alias(model_name, CHALLENGER).version == "2"
    )
    assert worse.champion_accuracy == pytest.approx(1 - 10 / len(labels))

    better = gate(*candidate("better", spread[:4]))  # a subset of v1's mistakes
    assert better.alias == CHAMPION and champion() == "3"
    assert all(delta >= 0 for delta in better.recall_deltas.values())

    # Better overall (3 wrong < 4), but all three mistakes on one digit that v3 got right.
    digit = int(labels[[i for i in range(len(labels)) if i not in spread[:4]][0]])
    lopsided_wrong = _wrong_rows(labels, digit=digit, count=3, skip=spread[:4])
    lopsided_scores, lopsided_version = candidate("lopsided", lopsided_wrong)
    lopsided = gate(lopsided_scores, lopsided_version)
    assert lopsided.candidate_accuracy > lopsided.champion_accuracy
    assert lopsided.alias == CHALLENGER and f"recall of digit {digit} drops" in lopsided.reason
    assert champion() == "3"

    version = client.get_model_version(model_name, lopsided_version)
    assert version.tags["promotion.decision"] == CHALLENGER
    assert float(version.tags[f"promotion.recall_delta_{digit}"]) < -0.005
    assert version.tags["promotion.compared_with"] == "3"

    # A retried task re-applies the recorded decision; nothing moves.
    again = gate(lopsided_scores, lopsided_version)
    assert again == lopsided and champion() == "3"


def test_decide_rules_margin_and_recall_guard():
    recall = [0.9] * 10
    assert decide(0.95, recall, 0.95, recall, 0.0, 0.005)[0]  # ties go to the newcomer
    assert not decide(0.955, recall, 0.95, recall, 0.01, 0.005)[0]  # margin not met
    dipped = [*recall[:3], 0.894, *recall[4:]]
    assert decide(0.96, dipped, 0.95, recall, 0.0, 0.01)[0]  # within tolerance
    promote, reason, deltas = decide(0.96, dipped, 0.95, recall, 0.0, 0.005)
    assert not promote and "digit 3" in reason and deltas["3"] == pytest.approx(-0.006)


def test_wrapper_writes_the_decision_as_markdown(
    mlflow_server, experiment_name, validation, split_sets, tmp_path
):
    client = MlflowClient(mlflow_server)
    experiment_id = client.create_experiment(experiment_name)
    model_name = f"{experiment_name}-model"
    client.create_registered_model(model_name)
    classifier = scripted_models.ScriptedClassifier(validation.images, validation.labels)
    model_dir = scripted_models.save(classifier, tmp_path / "m")
    version = scripted_models.register(
        client, model_name, joblib.load(model_dir / "model.joblib"), experiment_id
    )
    evaluation_path = tmp_path / "evaluation.json"
    evaluate_probabilities(
        validation.labels, all_class_probabilities(classifier, validation.images)
    ).write(evaluation_path)
    report = Markdown(name="decision_report", uri=str(tmp_path / "decision.md"))

    outputs = promote_model.component("digits:test").python_func(
        evaluation=Artifact(name="report", uri=str(evaluation_path)),
        validation=Dataset(name="validation", uri=str(split_sets[1])),
        mlflow_tracking_uri=mlflow_server,
        registered_model_name=model_name,
        model_version=version,
        mlflow_run_id="abc",
        mlflow_experiment_id=experiment_id,
        promotion_margin=0.0,
        max_recall_drop=0.005,
        mlflow_timeout_s=60.0,
        decision_report=report,
    )

    assert (outputs.decision, outputs.champion_version) == (CHAMPION, version)
    text = (tmp_path / "decision.md").read_text()
    assert text.startswith(f"# {model_name} v{version}: promoted to `champion`")
    assert f"{mlflow_server}/#/experiments/{experiment_id}/runs/abc" in text
    recorded = json.loads(client.get_model_version(model_name, version).tags["digits.promotion"])
    assert recorded["alias"] == CHAMPION
