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
# Training steps per compiled call on TensorFlow and JAX (torch allows only 1): fewer round
# trips from Python, about 4% more images/s at batch 64 on 2 CPU cores; the steps are the same.
STEPS_PER_EXECUTION = 8
# Where Linux lists the CPU's instruction-set flags.
CPUINFO = "/proc/cpuinfo"


def build_model(
    config: TrainConfig,
    steps_per_epoch: int = 1,
    jit_compile: bool | str = "auto",
    dtype_policy: str = "float32",
    steps_per_execution: int = 0,
) -> keras.Model:
    """Conv(32,5x5)x2 > pool > drop > Conv(64,3x3)x2 > pool > drop > Dense(256) > drop > softmax.

    Compiled with the recipe's optimizer, rate schedule and loss. Labels are one-hot (as in the
    kernel), which lets the loss smooth them. ``steps_per_epoch`` sizes the one_cycle and cosine
    schedules. ``dtype_policy`` (a Keras policy name, from :func:`compute_dtype_policy`) is set
    on each layer, not globally. ``steps_per_execution`` 0 picks the backend's best.
    """
    import keras
    from keras import layers

    policy = {"dtype": dtype_policy}
    inputs = keras.Input(shape=IMAGE_SHAPE, name="image")
    x = inputs
    if config.augmentation == "layers":
        # The reference kernel's ImageDataGenerator settings as layers: they only act during
        # fit, so the saved model serves unchanged.
        x = layers.RandomRotation(
            config.rotation_degrees / 360, fill_mode="constant", seed=config.seed, **policy
        )(x)
        x = layers.RandomZoom(config.zoom, fill_mode="constant", seed=config.seed, **policy)(x)
        x = layers.RandomTranslation(
            config.shift, config.shift, fill_mode="constant", seed=config.seed, **policy
        )(x)
    x = _conv(x, 32, 5, config.batch_norm, policy)
    x = _conv(x, 32, 5, config.batch_norm, policy)
    x = layers.MaxPooling2D(2, **policy)(x)
    x = layers.Dropout(0.25, **policy)(x)
    x = _conv(x, 64, 3, config.batch_norm, policy)
    x = _conv(x, 64, 3, config.batch_norm, policy)
    x = layers.MaxPooling2D(2, strides=2, **policy)(x)
    x = layers.Dropout(0.25, **policy)(x)
    x = layers.Flatten(**policy)(x)
    if config.batch_norm:
        x = layers.Dense(256, use_bias=False, **policy)(x)
        x = layers.BatchNormalization(**policy)(x)
        x = layers.Activation("relu", **policy)(x)
    else:
        x = layers.Dense(256, activation="relu", **policy)(x)
    x = layers.Dropout(0.5, **policy)(x)
    # float32 probabilities whatever the policy.
    outputs = layers.Dense(
        NUM_CLASSES, activation="softmax", name="probabilities", dtype="float32"
    )(x)
    model = keras.Model(inputs, outputs, name="digits_cnn")
    optimizer = build_optimizer(config, steps_per_epoch)
    if dtype_policy == "mixed_float16":
        # float16 gradients underflow without it; Keras only adds it for a global policy.
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    model.compile(
        optimizer=optimizer,
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=config.label_smoothing),
        metrics=["accuracy"],
        jit_compile=jit_compile,
        steps_per_execution=steps_per_execution
        or (1 if keras.backend.backend() == "torch" else STEPS_PER_EXECUTION),
    )
    return model


def _conv(x, filters: int, kernel_size: int, batch_norm: bool, policy: dict):
    from keras import layers

    if not batch_norm:
        return layers.Conv2D(filters, kernel_size, padding="same", activation="relu", **policy)(x)
    x = layers.Conv2D(filters, kernel_size, padding="same", use_bias=False, **policy)(x)
    x = layers.BatchNormalization(**policy)(x)
    return layers.Activation("relu", **policy)(x)


def compute_dtype_policy(precision: str) -> str:
    """The Keras dtype policy for a recipe's ``precision`` on this process's backend and device.

    "mixed" means bfloat16 compute where the device does bfloat16 natively (CUDA GPUs from
    Ampere on; CPUs with AVX512-BF16 or AMX, where oneDNN runs it about twice as fast as
    float32), float16 on older CUDA GPUs, and float32 elsewhere: emulated low precision is
    slower than float32, so a recipe asking for "mixed" never runs slower for it.
    """
    if precision == "float32":
        return "float32"
    gpu = _cuda_bf16_support()
    if gpu is not None:
        return "mixed_bfloat16" if gpu else "mixed_float16"
    return "mixed_bfloat16" if _cpu_has_native_bf16() else "float32"


def model_dtype_policy(model: keras.Model) -> str:
    """The policy name the model's convolutions compute with."""
    import keras

    return next(
        layer.dtype_policy.name for layer in model.layers if isinstance(layer, keras.layers.Conv2D)
    )


def _cuda_bf16_support() -> bool | None:
    """None without a CUDA GPU, else whether it computes in bfloat16 natively (Ampere on)."""
    import keras

    backend = keras.backend.backend()
    if backend == "torch":
        import torch

        return torch.cuda.is_bf16_supported() if torch.cuda.is_available() else None
    if backend == "tensorflow":
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
        if not gpus:
            return None
        capability = tf.config.experimental.get_device_details(gpus[0]).get(
            "compute_capability", (0, 0)
        )
        return tuple(capability) >= (8, 0)
    if backend == "jax":
        import jax

        if jax.default_backend() != "gpu":
            return None
        return float(getattr(jax.devices()[0], "compute_capability", "0")) >= 8.0
    return None


def _cpu_has_native_bf16() -> bool:
    try:
        with open(CPUINFO) as lines:
            flags = next((line for line in lines if line.startswith("flags")), "").split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


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
