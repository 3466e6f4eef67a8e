"""Recipes as data: resolution, overrides, errors; the NumPy augmentation and keyed batches."""

import numpy as np
import pytest

from digits.augment import random_affine
from digits.config import DEFAULT_RECIPE, RECIPES, TrainConfig, resolve_recipe
from digits.errors import RecipeError


def test_reference_recipe_is_the_kernels():
    reference = RECIPES["reference"]
    assert (reference.optimizer, reference.learning_rate, reference.rho, reference.epsilon) == (
        "rmsprop", 1e-3, 0.9, 1e-8,
    )  # fmt: skip
    assert (reference.batch_size, reference.epochs, reference.schedule) == (64, 30, "plateau")
    assert (reference.lr_patience, reference.lr_factor, reference.min_learning_rate) == (
        3, 0.5, 1e-5,
    )  # fmt: skip
    assert reference.augmentation == "layers" and not reference.batch_norm


def test_default_is_a_known_recipe_other_than_the_reference():
    assert DEFAULT_RECIPE in RECIPES and DEFAULT_RECIPE != "reference"


def test_zero_keeps_the_recipes_own_epochs_and_batch_size():
    resolved = resolve_recipe(DEFAULT_RECIPE, seed=9)
    assert resolved == RECIPES[DEFAULT_RECIPE].__class__(
        **{**vars(RECIPES[DEFAULT_RECIPE]), "seed": 9}
    )


def test_overrides_replace_only_their_fields():
    resolved = resolve_recipe("reference", epochs=3, batch_size=16, seed=5)
    assert (resolved.epochs, resolved.batch_size, resolved.seed) == (3, 16, 5)
    assert resolved.learning_rate == RECIPES["reference"].learning_rate


def test_unknown_recipe_names_the_known_ones_on_one_line():
    with pytest.raises(RecipeError) as error:
        resolve_recipe("fastest")
    message = str(error.value)
    assert "'fastest'" in message and "\n" not in message
    assert all(name in message for name in RECIPES)


def test_unknown_setting_value_is_refused():
    with pytest.raises(RecipeError, match="optimizer='adam'.*rmsprop, adamw, sgd"):
        TrainConfig(optimizer="adam")


def test_zero_ranges_leave_images_unchanged():
    images = np.random.default_rng(0).random((3, 28, 28, 1), dtype=np.float32)
    same = random_affine(images, np.random.default_rng(1), rotation_degrees=0, zoom=0, shift=0)
    np.testing.assert_allclose(same, images, atol=1e-6)


def test_shift_moves_the_ink_and_fills_with_zeros():
    image = np.zeros((1, 28, 28, 1), np.float32)
    image[0, 12:16, 12:16] = 1.0
    moved = random_affine(
        np.repeat(image, 64, axis=0), np.random.default_rng(3),
        rotation_degrees=10, zoom=0.1, shift=0.1,
    )  # fmt: skip
    assert moved.dtype == np.float32 and moved.min() >= 0 and moved.max() <= 1.0 + 1e-6
    assert not np.allclose(moved, image)
    assert np.all(moved[:, 0, 0] == 0)  # far corners read from outside: zeros
    assert len({row.tobytes() for row in moved}) == 64  # each image its own transform


def test_batches_depend_only_on_seed_epoch_and_index():
    """A resumed fit at epoch 3 sees exactly the batches an uninterrupted one does."""
    from digits.fitting import TrainingBatches

    rng = np.random.default_rng(0)
    images = rng.random((100, 28, 28, 1), dtype=np.float32)
    labels = rng.integers(0, 10, 100)
    config = TrainConfig(batch_size=32, augmentation="pipeline", seed=4)

    uninterrupted = TrainingBatches(images, labels, config)
    for epoch in range(3):
        uninterrupted.set_epoch(epoch)
    resumed = TrainingBatches(images, labels, config)
    resumed.set_epoch(2)
    earlier = TrainingBatches(images, labels, config)
    earlier.set_epoch(1)

    assert len(resumed) == 4
    for index in range(len(resumed)):
        for ours, theirs in zip(resumed[index], uninterrupted[index], strict=True):
            np.testing.assert_array_equal(ours, theirs)
    assert not np.array_equal(resumed[0][0], earlier[0][0])
    x, y = resumed[3]
    assert x.shape == (4, 28, 28, 1) and y.shape == (4, 10)


def test_fit_fetches_every_batch_once_with_its_own_epoch():
    """The prefetching threads never serve a batch drawn for the previous epoch."""
    import keras

    from digits.fitting import TrainingBatches
    from digits.model import build_model

    fetched: list[tuple[int, int]] = []

    class Recorded(TrainingBatches):
        recording = False

        def __getitem__(self, index):
            if self.recording:
                fetched.append((self.epoch, index))
            return super().__getitem__(index)

    class StartRecording(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            batches.recording = True

    rng = np.random.default_rng(0)
    config = TrainConfig(batch_size=32, augmentation="pipeline", epochs=4)
    batches = Recorded(
        rng.random((100, 28, 28, 1), dtype=np.float32), rng.integers(0, 10, 100), config
    )
    model = build_model(config, len(batches))
    model.fit(
        batches, initial_epoch=1, epochs=4, verbose=0,
        callbacks=[batches.epoch_callback(), StartRecording()],
    )  # fmt: skip

    assert sorted(fetched) == [(epoch, index) for epoch in (1, 2, 3) for index in range(4)]
