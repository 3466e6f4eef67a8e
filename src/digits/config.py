"""Hyperparameters of the reference recipe, in one place."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TrainConfig:
    """The reference Keras CNN recipe; pipeline parameters map one-to-one onto these fields."""

    epochs: int = 30
    batch_size: int = 64
    learning_rate: float = 1e-3
    rho: float = 0.9
    epsilon: float = 1e-8
    lr_patience: int = 3
    lr_factor: float = 0.5
    min_learning_rate: float = 1e-5
    augment: bool = True
    seed: int = 2
