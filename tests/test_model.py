"""The reference CNN's shape, and each recipe's optimizer and schedule."""

import numpy as np
import pytest

from digits.config import RECIPES, TrainConfig
from digits.model import build_model


def test_one_image_in_ten_probabilities_out():
    model = build_model(TrainConfig())
    probabilities = model.predict(np.zeros((1, 28, 28, 1), np.float32), verbose=0)
    assert probabilities.shape == (1, 10)
    assert np.isclose(probabilities.sum(), 1.0, atol=1e-5)


def test_layers_follow_the_reference_recipe():
    model = build_model(TrainConfig(augmentation="none"))
    summary = [(type(layer).__name__, layer.get_config()) for layer in model.layers[1:]]
    kinds = [name for name, _ in summary]
    assert kinds == [
        "Conv2D", "Conv2D", "MaxPooling2D", "Dropout",
        "Conv2D", "Conv2D", "MaxPooling2D", "Dropout",
        "Flatten", "Dense", "Dropout", "Dense",
    ]  # fmt: skip
    convs = [(c["filters"], tuple(c["kernel_size"])) for n, c in summary if n == "Conv2D"]
    assert convs == [(32, (5, 5)), (32, (5, 5)), (64, (3, 3)), (64, (3, 3))]
    assert [c["rate"] for n, c in summary if n == "Dropout"] == [0.25, 0.25, 0.5]
    assert [c["units"] for n, c in summary if n == "Dense"] == [256, 10]
    assert summary[-1][1]["activation"] == "softmax"


def test_rmsprop_with_the_reference_settings():
    import keras

    optimizer = build_model(TrainConfig()).optimizer
    config = optimizer.get_config()
    assert isinstance(optimizer, keras.optimizers.RMSprop)
    assert np.isclose(float(optimizer.learning_rate), 1e-3)
    assert (config["rho"], config["epsilon"]) == (0.9, 1e-8)


def test_augmentation_is_inactive_at_inference():
    model = build_model(TrainConfig(augmentation="layers"))
    image = np.random.default_rng(0).random((2, 28, 28, 1), dtype=np.float32)
    first = model.predict(image, verbose=0)
    assert np.allclose(first, model.predict(image, verbose=0))


def test_batch_norm_is_an_explicit_variant_of_the_same_network():
    plain = build_model(TrainConfig(augmentation="none"))
    normalized = build_model(TrainConfig(augmentation="none", batch_norm=True))
    kinds = [type(layer).__name__ for layer in normalized.layers]
    assert kinds.count("BatchNormalization") == 5
    assert [type(layer).__name__ for layer in plain.layers].count("BatchNormalization") == 0
    assert [layer.filters for layer in normalized.layers if hasattr(layer, "filters")] == [
        32, 32, 64, 64,
    ]  # fmt: skip


def test_one_cycle_warms_up_to_its_peak_then_anneals():
    import keras

    config = TrainConfig(
        epochs=10, optimizer="adamw", schedule="one_cycle", learning_rate=3e-3,
        warmup_fraction=0.2, weight_decay=1e-4,
    )  # fmt: skip
    optimizer = build_model(config, steps_per_epoch=10).optimizer
    assert isinstance(optimizer, keras.optimizers.AdamW)
    rate = optimizer._learning_rate  # the schedule itself
    rates = [float(rate(step)) for step in (0, 20, 60, 99)]
    assert rates[0] == pytest.approx(3e-3 / 25)
    assert rates[1] == pytest.approx(3e-3)
    assert rates[0] < rates[1] and rates[1] > rates[2] > rates[3]


def test_label_smoothing_and_one_hot_loss_of_the_fast_recipe():
    model = build_model(RECIPES["fast"], steps_per_epoch=4)
    assert model.loss.get_config()["label_smoothing"] == RECIPES["fast"].label_smoothing
