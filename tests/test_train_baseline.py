"""Step 4b: train_baseline, and evaluate_model / load_predictor on its scikit-learn model."""

import json

import numpy as np
import pytest
from kfp.dsl import Artifact, Dataset, Model

from digits.artifacts import SKLEARN_MODEL_FILENAME, TRAINING_FILENAME, Evaluation
from digits.components import evaluate_model, train_baseline
from digits.data import ImageSet
from digits.errors import ModelArtifactError, SettingsError
from digits.evaluation import evaluate_probabilities
from digits.predictor import load_predictor


@pytest.fixture(scope="module")
def baseline(tmp_path_factory, split_sets):
    """(model dir, history path, result) of the default recipe on the small real slice."""
    work = tmp_path_factory.mktemp("baseline")
    result = train_baseline.train_baseline(split_sets[0], work / "model", work / "history.json")
    return work / "model", work / "history.json", result


def test_writes_the_model_training_record_and_an_empty_history(baseline, split_sets):
    model_dir, history_path, result = baseline

    assert (model_dir / SKLEARN_MODEL_FILENAME).is_file()
    assert json.loads(history_path.read_text()) == []
    training = json.loads((model_dir / TRAINING_FILENAME).read_text())
    assert training["recipe"] == train_baseline.DEFAULT_BASELINE_RECIPE
    assert training["config"] == {**train_baseline.BASELINE_RECIPES["pca-svc"], "seed": 2}
    assert training["fit_rows"] == len(ImageSet.load(split_sets[0]))  # under max_fit_rows: all
    assert training["result"]["backend"] == "scikit-learn"
    assert training["result"]["model_family"] == result.model_family == "scikit-learn"
    assert training["result"]["seconds"] == result.seconds > 0
    assert training["result"]["started_at_ms"] > 1_700_000_000_000
    # 300 real digits: an SVC fits its training rows almost perfectly.
    assert result.train_accuracy > 0.9


def test_predictor_gives_probabilities_for_images(baseline, split_sets):
    validation = ImageSet.load(split_sets[1])
    probabilities = load_predictor(baseline[0])(validation.images)

    assert probabilities.shape == (len(validation), 10)
    assert np.allclose(probabilities.sum(axis=1), 1.0)
    # Far better than chance (10 %) on unseen digits, even from 300 training rows.
    assert np.mean(probabilities.argmax(axis=1) == validation.labels) > 0.6


def test_same_seed_gives_the_same_model(tmp_path, baseline, split_sets):
    train_baseline.train_baseline(split_sets[0], tmp_path / "again", tmp_path / "history.json")
    images = ImageSet.load(split_sets[1]).images
    first, again = load_predictor(baseline[0]), load_predictor(tmp_path / "again")
    assert np.array_equal(first(images), again(images))


def test_unknown_recipe_is_refused_naming_the_choices(tmp_path, split_sets):
    with pytest.raises(SettingsError, match="pca-svc"):
        train_baseline.train_baseline(split_sets[0], tmp_path, tmp_path / "h.json", recipe="knn")


def test_evaluate_model_scores_a_scikit_learn_model_dir(tmp_path, baseline, split_sets):
    evaluation = evaluate_model.evaluate_model(baseline[0], split_sets[1], tmp_path / "r.json")

    validation = ImageSet.load(split_sets[1])
    expected = evaluate_probabilities(
        validation.labels, load_predictor(baseline[0])(validation.images)
    )
    assert evaluation == expected == Evaluation.read(tmp_path / "r.json")
    assert sum(evaluation.support) == len(validation)


def test_a_dir_without_a_model_is_refused_naming_both_files(tmp_path):
    with pytest.raises(ModelArtifactError, match="model.keras nor model.joblib"):
        load_predictor(tmp_path)


def test_wrapper_writes_the_model_dir_and_metadata(tmp_path, split_sets):
    model = Model(name="model", uri=str(tmp_path / "model"))
    history = Artifact(name="history", uri=str(tmp_path / "history"))

    train_baseline.component("digits:test").python_func(
        train=Dataset(name="train", uri=str(split_sets[0])), seed=3, model=model, history=history
    )

    assert (tmp_path / "model" / SKLEARN_MODEL_FILENAME).is_file()
    assert json.loads((tmp_path / "history").read_text()) == []
    assert model.metadata["framework"] == model.metadata["model_family"] == "scikit-learn"
    training = json.loads((tmp_path / "model" / TRAINING_FILENAME).read_text())
    assert training["config"]["seed"] == 3


def test_a_kernel_baseline_fits_a_stratified_subsample_beyond_its_row_limit():
    labels = np.repeat(np.arange(10), [300, 100, 100, 100, 100, 100, 100, 100, 100, 100])
    pixels = np.arange(len(labels) * 4, dtype=np.float32).reshape(len(labels), 4)

    kept_pixels, kept_labels = train_baseline.fit_rows(pixels, labels, 600, seed=2)

    assert len(kept_labels) == 600
    # Stratified: each digit keeps its share (300 of 1,200 rows are 0s, so 150 of 600).
    assert np.bincount(kept_labels).tolist() == [150] + [50] * 9
    # The rows kept are rows of the input, each with its own label.
    assert np.array_equal(labels[(kept_pixels[:, 0] // 4).astype(int)], kept_labels)
    assert train_baseline.fit_rows(pixels, labels, 0, seed=2)[1] is labels
    assert train_baseline.fit_rows(pixels, labels, 5_000, seed=2)[1] is labels
