"""The reference CNN's shape and recipe."""

import numpy as np

from digits.config import TrainConfig
from digits.model import build_model


def test_one_image_in_ten_probabilities_out():
    model = build_model(TrainConfig())
    probabilities = model.predict(np.zeros((1, 28, 28, 1), np.float32), verbose=0)
    assert probabilities.shape == (1, 10)
    assert np.isclose(probabilities.sum(), 1.0, atol=1e-5)


def test_layers_follow_the_reference_recipe():
    model = build_model(TrainConfig(augment=False))
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
    model = build_model(TrainConfig(augment=True))
    image = np.random.default_rng(0).random((2, 28, 28, 1), dtype=np.float32)
    first = model.predict(image, verbose=0)
    assert np.allclose(first, model.predict(image, verbose=0))
