"""The reference CNN, on the Keras 3 API alone so that any backend (TF, torch, JAX) runs it."""

from __future__ import annotations

from typing import TYPE_CHECKING

from digits.config import TrainConfig

if TYPE_CHECKING:
    import keras

IMAGE_SHAPE = (28, 28, 1)
NUM_CLASSES = 10
# one_cycle starts and ends this far below its peak rate.
ONE_CYCLE_START_DIVISOR = 25.0
ONE_CYCLE_END_FRACTION = 1e-3


def build_model(
    config: TrainConfig, steps_per_epoch: int = 1, jit_compile: bool | str = "auto"
) -> keras.Model:
    """Conv(32,5x5)x2 > pool > drop > Conv(64,3x3)x2 > pool > drop > Dense(256) > drop > softmax.

    Compiled with the recipe's optimizer, rate schedule and loss. Labels are one-hot (as in the
    kernel), which lets the loss smooth them. ``steps_per_epoch`` sizes the one_cycle and cosine
    schedules.
    """
    import keras
    from keras import layers

    inputs = keras.Input(shape=IMAGE_SHAPE, name="image")
    x = inputs
    if config.augmentation == "layers":
        # The reference kernel's ImageDataGenerator settings as layers: they only act during
        # fit, so the saved model serves unchanged.
        x = layers.RandomRotation(
            config.rotation_degrees / 360, fill_mode="constant", seed=config.seed
        )(x)
        x = layers.RandomZoom(config.zoom, fill_mode="constant", seed=config.seed)(x)
        x = layers.RandomTranslation(
            config.shift, config.shift, fill_mode="constant", seed=config.seed
        )(x)
    x = _conv(x, 32, 5, config.batch_norm)
    x = _conv(x, 32, 5, config.batch_norm)
    x = layers.MaxPooling2D(2)(x)
    x = layers.Dropout(0.25)(x)
    x = _conv(x, 64, 3, config.batch_norm)
    x = _conv(x, 64, 3, config.batch_norm)
    x = layers.MaxPooling2D(2, strides=2)(x)
    x = layers.Dropout(0.25)(x)
    x = layers.Flatten()(x)
    if config.batch_norm:
        x = layers.Dense(256, use_bias=False)(x)
        x = layers.BatchNormalization()(x)
        x = layers.Activation("relu")(x)
    else:
        x = layers.Dense(256, activation="relu")(x)
    x = layers.Dropout(0.5)(x)
    # float32 probabilities even under a mixed-precision policy.
    outputs = layers.Dense(
        NUM_CLASSES, activation="softmax", name="probabilities", dtype="float32"
    )(x)
    model = keras.Model(inputs, outputs, name="digits_cnn")
    model.compile(
        optimizer=build_optimizer(config, steps_per_epoch),
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=config.label_smoothing),
        metrics=["accuracy"],
        jit_compile=jit_compile,
    )
    return model


def _conv(x, filters: int, kernel_size: int, batch_norm: bool):
    from keras import layers

    if not batch_norm:
        return layers.Conv2D(filters, kernel_size, padding="same", activation="relu")(x)
    x = layers.Conv2D(filters, kernel_size, padding="same", use_bias=False)(x)
    x = layers.BatchNormalization()(x)
    return layers.Activation("relu")(x)


def build_optimizer(config: TrainConfig, steps_per_epoch: int) -> keras.optimizers.Optimizer:
    """The recipe's optimizer; its rate is a float (plateau) or a per-step schedule."""
    import keras
    from keras.optimizers import schedules

    total_steps = max(1, config.epochs * steps_per_epoch)
    if config.schedule == "one_cycle":
        # Linear warm-up to the peak, then cosine annealing: the one-cycle shape.
        warmup_steps = int(config.warmup_fraction * total_steps)
        rate = schedules.CosineDecay(
            initial_learning_rate=config.learning_rate / ONE_CYCLE_START_DIVISOR,
            warmup_target=config.learning_rate,
            warmup_steps=warmup_steps,
            decay_steps=max(1, total_steps - warmup_steps),
            alpha=ONE_CYCLE_END_FRACTION,
        )
    elif config.schedule == "cosine":
        rate = schedules.CosineDecay(
            config.learning_rate, decay_steps=total_steps, alpha=ONE_CYCLE_END_FRACTION
        )
    else:
        rate = config.learning_rate
    if config.optimizer == "adamw":
        return keras.optimizers.AdamW(learning_rate=rate, weight_decay=config.weight_decay)
    if config.optimizer == "sgd":
        return keras.optimizers.SGD(learning_rate=rate, momentum=config.momentum, nesterov=True)
    return keras.optimizers.RMSprop(learning_rate=rate, rho=config.rho, epsilon=config.epsilon)


def one_hot(labels, num_classes: int = NUM_CLASSES):
    """Integer labels (n,) -> float32 one-hot (n, num_classes)."""
    import numpy as np

    return np.eye(num_classes, dtype=np.float32)[labels]


def current_learning_rate(optimizer) -> float:
    """The rate the optimizer applies at its next step, schedule or not."""
    rate = optimizer.learning_rate  # Keras 3 evaluates a schedule at the current iteration
    return float(rate)
