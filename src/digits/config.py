"""Training recipes as data, resolved in one place.

A recipe is a :class:`TrainConfig`; :data:`RECIPES` names them and :func:`resolve_recipe` turns a
name plus the few overrides users set (epochs, batch size, seed) into the full config that the
train step runs and logs.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from digits.errors import RecipeError

OPTIMIZERS = ("rmsprop", "adamw", "sgd")
SCHEDULES = ("plateau", "one_cycle", "cosine")
# "layers": Keras random layers inside the model (on the accelerator when there is one);
# "pipeline": the same rotation/zoom/shift family applied to NumPy batches in the input pipeline.
AUGMENTATIONS = ("none", "layers", "pipeline")
# "float32" everywhere; "mixed": bfloat16 (float16 on GPUs without it) compute with float32
# weights, only where the hardware does it natively (see digits.model.compute_dtype_policy).
PRECISIONS = ("float32", "mixed")


@dataclass(frozen=True)
class TrainConfig:
    """Every setting of one training run; the defaults are the reference Kaggle kernel's."""

    epochs: int = 30
    batch_size: int = 64
    optimizer: str = "rmsprop"
    # Peak rate for the one_cycle and cosine schedules, starting rate for plateau.
    learning_rate: float = 1e-3
    rho: float = 0.9  # RMSprop
    epsilon: float = 1e-8  # RMSprop
    momentum: float = 0.9  # SGD
    weight_decay: float = 0.0  # AdamW
    schedule: str = "plateau"
    # ReduceLROnPlateau on val_accuracy (schedule "plateau").
    lr_patience: int = 3
    lr_factor: float = 0.5
    min_learning_rate: float = 1e-5
    # Share of the steps spent warming up (one_cycle).
    warmup_fraction: float = 0.0
    label_smoothing: float = 0.0
    augmentation: str = "layers"
    rotation_degrees: float = 10.0
    zoom: float = 0.1
    shift: float = 0.1
    # BatchNormalization after every conv and the dense layer: an explicit variant, off by default.
    batch_norm: bool = False
    precision: str = "float32"
    seed: int = 2

    def __post_init__(self) -> None:
        for field_name, value, allowed in (
            ("optimizer", self.optimizer, OPTIMIZERS),
            ("schedule", self.schedule, SCHEDULES),
            ("augmentation", self.augmentation, AUGMENTATIONS),
            ("precision", self.precision, PRECISIONS),
        ):
            if value not in allowed:
                raise RecipeError(
                    f"TrainConfig.{field_name}={value!r} is not one of {', '.join(allowed)}"
                )
        if self.epochs < 1 or self.batch_size < 1:
            raise RecipeError(
                f"epochs={self.epochs}, batch_size={self.batch_size}: both must be at least 1"
            )


RECIPES: dict[str, TrainConfig] = {
    # The Kaggle kernel exactly: RMSprop, batch 64, 30 epochs, ReduceLROnPlateau, random layers.
    "reference": TrainConfig(),
    # Chosen by measurement (bench/recipe_levers.py, bench/train_bench.py): same CNN, AdamW on
    # a one-cycle schedule (5% warm-up to 3e-3, cosine down), label smoothing, 14 epochs; the
    # kernel's augmentation done on NumPy batches by two prefetching threads instead of by the
    # Keras random layers (which cap a 2-core CPU at ~700 img/s); bfloat16 compute where the
    # hardware has it (twice the float32 images/s of oneDNN on an AVX512-BF16 CPU). Batch 64
    # over 128 and 256: with bfloat16 it costs under 10% images/s, and 128 reached 98.5%
    # held-out about as soon but ended lower, 256 was later and lower.
    "fast": TrainConfig(
        epochs=14,
        batch_size=64,
        optimizer="adamw",
        learning_rate=3e-3,
        weight_decay=1e-4,
        schedule="one_cycle",
        warmup_fraction=0.05,
        label_smoothing=0.1,
        augmentation="pipeline",
        precision="mixed",
    ),
}
DEFAULT_RECIPE = "fast"


def resolve_recipe(
    name: str, *, epochs: int = 0, batch_size: int = 0, seed: int = 2
) -> TrainConfig:
    """The named recipe with the user's overrides; 0 keeps the recipe's own epochs/batch size.

    Raises:
        RecipeError: ``name`` is not in :data:`RECIPES`.
    """
    if name not in RECIPES:
        raise RecipeError(
            f"unknown training recipe {name!r}: use one of {', '.join(sorted(RECIPES))}"
        )
    recipe = RECIPES[name]
    return replace(
        recipe,
        epochs=epochs or recipe.epochs,
        batch_size=batch_size or recipe.batch_size,
        seed=seed,
    )
