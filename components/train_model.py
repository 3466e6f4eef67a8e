"""Step 4: train the reference CNN (on a GPU in the cluster, on the CPU locally)."""

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from digits.artifacts import MODEL_FILENAME, TRAINING_FILENAME
from digits.config import TrainConfig
from digits.data import ImageSet


@dataclass(frozen=True)
class TrainResult:
    epochs_run: int
    best_val_accuracy: float
    final_val_accuracy: float
    seconds: float
    backend: str


def train_model(
    train_path: Path,
    validation_path: Path,
    model_dir: Path,
    history_path: Path,
    config: TrainConfig,
) -> TrainResult:
    """Fit the CNN with RMSprop and ReduceLROnPlateau(val_accuracy); save it and its history.

    The model lands in ``model_dir/model.keras``; ``history_path`` gets one JSON record per
    epoch (loss, accuracy, val_loss, val_accuracy, learning_rate, seconds).
    """
    import keras

    from digits.model import build_model

    train, validation = ImageSet.load(train_path), ImageSet.load(validation_path)
    keras.utils.set_random_seed(config.seed)
    model = build_model(config)
    history: list[dict[str, float]] = []
    epoch_start: dict[str, float] = {}

    def start_epoch(epoch: int, logs: dict | None) -> None:
        epoch_start["time"] = time.perf_counter()
        epoch_start["learning_rate"] = float(model.optimizer.learning_rate)

    def end_epoch(epoch: int, logs: dict | None) -> None:
        history.append(
            {
                "epoch": epoch + 1,
                **{name: float(value) for name, value in (logs or {}).items()},
                # The rate the epoch ran with: Keras logs it after ReduceLROnPlateau has acted.
                "learning_rate": epoch_start["learning_rate"],
                "seconds": round(time.perf_counter() - epoch_start["time"], 3),
            }
        )

    started = time.perf_counter()
    model.fit(
        train.images,
        train.labels,
        validation_data=(validation.images, validation.labels),
        epochs=config.epochs,
        batch_size=config.batch_size,
        verbose=2,
        callbacks=[
            keras.callbacks.ReduceLROnPlateau(
                monitor="val_accuracy",
                patience=config.lr_patience,
                factor=config.lr_factor,
                min_lr=config.min_learning_rate,
                verbose=1,
            ),
            keras.callbacks.LambdaCallback(on_epoch_begin=start_epoch, on_epoch_end=end_epoch),
        ],
    )
    seconds = time.perf_counter() - started
    model_dir.mkdir(parents=True, exist_ok=True)
    model.save(model_dir / MODEL_FILENAME)
    history_path.write_text(json.dumps(history, indent=2))
    val_accuracy = [record["val_accuracy"] for record in history]
    result = TrainResult(
        epochs_run=len(val_accuracy),
        best_val_accuracy=max(val_accuracy),
        final_val_accuracy=val_accuracy[-1],
        seconds=round(seconds, 2),
        backend=keras.backend.backend(),
    )
    training = {"config": asdict(config), "result": asdict(result)}
    (model_dir / TRAINING_FILENAME).write_text(json.dumps(training, indent=2))
    return result


def component(image: str):
    """Build the KFP component that runs :func:`train_model` in ``image``."""
    from kfp import dsl
    from kfp.dsl import Artifact, Dataset, Input, Model, Output

    @dsl.component(base_image=image, install_kfp_package=False)
    def train_model(
        train: Input[Dataset],
        validation: Input[Dataset],
        epochs: int,
        batch_size: int,
        learning_rate: float,
        rho: float,
        epsilon: float,
        lr_patience: int,
        lr_factor: float,
        min_learning_rate: float,
        augment: bool,
        seed: int,
        model: Output[Model],
        history: Output[Artifact],
    ):
        """Fit the reference CNN; the model directory holds model.keras."""
        from pathlib import Path

        from digits.components.train_model import train_model as run
        from digits.config import TrainConfig

        config = TrainConfig(
            epochs=epochs,
            batch_size=batch_size,
            learning_rate=learning_rate,
            rho=rho,
            epsilon=epsilon,
            lr_patience=lr_patience,
            lr_factor=lr_factor,
            min_learning_rate=min_learning_rate,
            augment=augment,
            seed=seed,
        )
        result = run(
            Path(train.path), Path(validation.path), Path(model.path), Path(history.path), config
        )
        model.metadata.update({**vars(result), "framework": "keras"})

    return train_model
