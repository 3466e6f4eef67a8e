"""Step 4: train_model (one real epoch on a small slice)."""

import json

import keras
import pytest
from kfp.dsl import Artifact, Dataset, Model

from digits.artifacts import MODEL_FILENAME, TRAINING_FILENAME
from digits.components import train_model


def test_saves_a_loadable_model_its_history_and_its_recipe(trained_model):
    model_dir, history_path = trained_model

    model = keras.saving.load_model(model_dir / MODEL_FILENAME)
    history = json.loads(history_path.read_text())
    training = json.loads((model_dir / TRAINING_FILENAME).read_text())

    assert model.output_shape == (None, 10)
    assert [record["epoch"] for record in history] == [1]
    assert {"loss", "accuracy", "val_loss", "val_accuracy", "learning_rate", "seconds"} <= set(
        history[0]
    )
    assert history[0]["learning_rate"] == pytest.approx(1e-3)
    assert training["config"]["epochs"] == 1 and training["config"]["batch_size"] == 32
    assert training["result"]["backend"] == keras.backend.backend()


def test_wrapper_maps_parameters_onto_the_recipe(tmp_path, split_sets):
    model = Model(name="model", uri=str(tmp_path / "model"))
    history = Artifact(name="history", uri=str(tmp_path / "history"))

    train_model.component("digits:test").python_func(
        train=Dataset(name="train", uri=str(split_sets[0])),
        validation=Dataset(name="validation", uri=str(split_sets[1])),
        epochs=2,
        batch_size=64,
        learning_rate=5e-4,
        rho=0.9,
        epsilon=1e-8,
        lr_patience=3,
        lr_factor=0.5,
        min_learning_rate=1e-5,
        augment=False,
        seed=7,
        model=model,
        history=history,
    )

    training = json.loads((tmp_path / "model" / TRAINING_FILENAME).read_text())
    assert (
        training["config"] | {"epochs": 2, "learning_rate": 5e-4, "augment": False}
        == training["config"]
    )
    assert model.metadata["epochs_run"] == 2
    assert len(json.loads((tmp_path / "history").read_text())) == 2
