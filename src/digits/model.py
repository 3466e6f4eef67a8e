"""The reference CNN, on the Keras 3 API alone so that any backend (TF, torch, JAX) runs it."""

from __future__ import annotations

from typing import TYPE_CHECKING

from digits.config import TrainConfig

if TYPE_CHECKING:
    import keras

IMAGE_SHAPE = (28, 28, 1)
NUM_CLASSES = 10


def build_model(config: TrainConfig) -> keras.Model:
    """Conv(32,5x5)x2 > pool > drop > Conv(64,3x3)x2 > pool > drop > Dense(256) > drop > softmax."""
    import keras
    from keras import layers

    inputs = keras.Input(shape=IMAGE_SHAPE, name="image")
    x = inputs
    if config.augment:
        # The reference kernel's ImageDataGenerator settings (rotation 10 deg, zoom and shifts
        # 10%), as layers: they only act during fit, so the saved model serves unchanged.
        x = layers.RandomRotation(10 / 360, fill_mode="constant", seed=config.seed)(x)
        x = layers.RandomZoom(0.1, fill_mode="constant", seed=config.seed)(x)
        x = layers.RandomTranslation(0.1, 0.1, fill_mode="constant", seed=config.seed)(x)
    x = layers.Conv2D(32, 5, padding="same", activation="relu")(x)
    x = layers.Conv2D(32, 5, padding="same", activation="relu")(x)
    x = layers.MaxPooling2D(2)(x)
    x = layers.Dropout(0.25)(x)
    x = layers.Conv2D(64, 3, padding="same", activation="relu")(x)
    x = layers.Conv2D(64, 3, padding="same", activation="relu")(x)
    x = layers.MaxPooling2D(2, strides=2)(x)
    x = layers.Dropout(0.25)(x)
    x = layers.Flatten()(x)
    x = layers.Dense(256, activation="relu")(x)
    x = layers.Dropout(0.5)(x)
    outputs = layers.Dense(NUM_CLASSES, activation="softmax", name="probabilities")(x)
    model = keras.Model(inputs, outputs, name="digits_cnn")
    model.compile(
        optimizer=keras.optimizers.RMSprop(
            learning_rate=config.learning_rate, rho=config.rho, epsilon=config.epsilon
        ),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    return model
