"""Training the CNN with a recipe: one fit, checkpointed every epoch so a restarted call resumes.

The train step (``components/train_model.py``) and each trial of a sweep
(``components/train_trial.py``) call :func:`train_model`; the benchmarks call it too.
"""

import time
from collections.abc import Sequence
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
    # Training time over all attempts (sum of the epochs' seconds), checkpoint writes excluded.
    seconds: float
    images_per_second: float
    backend: str
    # The Keras dtype policy training computed in (the saved model computes in float32).
    compute_dtype: str
    # Unix ms when the first attempt started training (the MLflow run's start time).
    started_at_ms: int
    # Epochs restored from a checkpoint by this attempt (0: trained from scratch).
    resumed_after_epoch: int


def train_model(
    train_path: Path,
    validation_path: Path,
    model_dir: Path,
    history_path: Path,
    config: TrainConfig,
    recipe: str = "custom",
    checkpoint_uri: str = "",
    jit_compile: bool | str = "auto",
    observers: Sequence = (),
) -> TrainResult:
    """Fit the CNN per ``config``; save it, its per-epoch history and the resolved recipe.

    The model lands in ``model_dir/model.keras`` and ``model_dir/training.json`` holds
    ``{"recipe", "config", "result"}``. ``history_path`` is rewritten after every epoch (one
    record per epoch: loss, accuracy, val_loss, val_accuracy, learning_rate, seconds). With a
    ``checkpoint_uri`` (fsspec URI or path) every epoch is checkpointed there, and a restarted
    call resumes after the last completed epoch. ``jit_compile`` goes to ``Model.compile``;
    ``observers`` are extra Keras callbacks run after each epoch is recorded (the benchmark
    scores held-out data there, outside the recorded epoch time).

    Raises:
        CheckpointError: the checkpoint is unreadable, or was written for other data or
            another recipe.
    """
    import tempfile

    import keras

    from digits.checkpoint import (
        CheckpointStore,
        TrainingState,
        check_belongs,
        data_digest,
        recipe_digest,
    )
    from digits.fitting import (
        EpochRecorder,
        TrainingBatches,
        restore_seed_states,
        write_json_atomically,
    )
    from digits.model import build_model, compute_dtype_policy, model_dtype_policy, one_hot

    train, validation = ImageSet.load(train_path), ImageSet.load(validation_path)
    keras.utils.set_random_seed(config.seed)
    store = CheckpointStore(checkpoint_uri) if checkpoint_uri else None
    state = TrainingState(
        recipe=recipe,
        config=asdict(config),
        epochs_done=0,
        started_at_ms=_now_ms(),
        data_digest=data_digest(train_path, validation_path) if store else "",
        recipe_digest=recipe_digest(asdict(config)),
    )
    with tempfile.TemporaryDirectory() as work_dir:
        restored = store.latest(Path(work_dir)) if store else None
        if restored:
            check_belongs(restored[0], checkpoint_uri, state.data_digest, state.recipe_digest)
            state, model_path = restored
            model = keras.saving.load_model(model_path)
            restore_seed_states(model, state.seed_states)
            print(f"resuming after epoch {state.epochs_done} from {checkpoint_uri}", flush=True)
        else:
            steps_per_epoch = -(-len(train) // config.batch_size)
            model = build_model(
                config,
                steps_per_epoch,
                jit_compile=jit_compile,
                dtype_policy=compute_dtype_policy(config.precision),
            )
    resumed_after = state.epochs_done
    # Read back from the model: a resumed fit keeps the policy it started with.
    compute_dtype = model_dtype_policy(model)

    plateau = (
        keras.callbacks.ReduceLROnPlateau(
            monitor="val_accuracy",
            patience=config.lr_patience,
            factor=config.lr_factor,
            min_lr=config.min_learning_rate,
        )
        if config.schedule == "plateau"
        else None
    )
    recorder = EpochRecorder(
        state, history_path, store, plateau, print_line=lambda line: print(line, flush=True)
    )
    if state.epochs_done < config.epochs:
        batches = TrainingBatches(train.images, train.labels, config)
        model.fit(
            batches,
            validation_data=(validation.images, one_hot(validation.labels)),
            initial_epoch=state.epochs_done,
            epochs=config.epochs,
            shuffle=False,  # TrainingBatches shuffles, keyed by seed and epoch
            verbose=0,
            callbacks=[
                c
                for c in (batches.epoch_callback(), plateau, recorder, *observers)
                if c is not None
            ],
        )
    history = state.history
    write_json_atomically(history_path, history)
    model_dir.mkdir(parents=True, exist_ok=True)
    _float32_copy(model).save(model_dir / MODEL_FILENAME)
    val_accuracy = [record["val_accuracy"] for record in history]
    seconds = sum(record["seconds"] for record in history)
    result = TrainResult(
        epochs_run=len(history),
        best_val_accuracy=max(val_accuracy),
        final_val_accuracy=val_accuracy[-1],
        seconds=round(seconds, 2),
        images_per_second=round(len(train) * len(history) / seconds, 1),
        backend=keras.backend.backend(),
        compute_dtype=compute_dtype,
        started_at_ms=state.started_at_ms,
        resumed_after_epoch=resumed_after,
    )
    training = {"recipe": recipe, "config": asdict(config), "result": asdict(result)}
    write_json_atomically(model_dir / TRAINING_FILENAME, training)
    return result


def _float32_copy(model):
    """``model`` itself if it computes in float32, else its layers and weights in float32.

    A mixed-precision model keeps float32 weights, so the copy is exact; it serves at full
    speed on hardware without bfloat16 and predicts the same on every backend. The copy is
    not compiled: it is for prediction (training state lives in the checkpoints).
    """
    import keras

    from digits.model import model_dtype_policy

    if model_dtype_policy(model) == "float32":
        return model
    serving = keras.models.clone_model(
        model,
        clone_function=lambda layer: layer.__class__.from_config(
            {**layer.get_config(), "dtype": "float32"}
        ),
    )
    serving.set_weights(model.get_weights())
    return serving


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


# A trial whose validation accuracy is still under twice chance after this many epochs has
# stopped learning (a "dead" network: every ReLU off, the loss stuck at ln 10 = 2.30). A learning
# CNN is far above it after one epoch, even on a few hundred rows.
STALL_EPOCHS = 3
STALL_ACCURACY_OVER_CHANCE = 2.0


def divergence_guard():
    """A Keras callback that stops a fit that can no longer learn, raising
    :class:`~digits.errors.TrainingError` at once instead of finishing its epochs: a loss that
    became NaN or infinite (a learning rate too high, say), or a validation accuracy still under
    twice chance after ``STALL_EPOCHS`` epochs (the network died: measured in a sweep, a trial
    at learning rate 9.5e-3 sat at 11.25 % for all 14 epochs)."""
    import math

    import keras

    from digits.artifacts import CLASS_NAMES
    from digits.errors import TrainingError

    stall_accuracy = STALL_ACCURACY_OVER_CHANCE / len(CLASS_NAMES)

    class DivergenceGuard(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.epoch = 0

        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch + 1

        def on_train_batch_end(self, batch, logs=None):
            loss = (logs or {}).get("loss")
            if loss is not None and not math.isfinite(float(loss)):
                raise TrainingError(
                    f"training diverged: the loss became {float(loss)} in epoch {self.epoch}; "
                    "lower the learning rate (or raise the batch size)"
                )

        def on_epoch_end(self, epoch, logs=None):
            accuracy = (logs or {}).get("val_accuracy")
            if epoch + 1 == STALL_EPOCHS and accuracy is not None and accuracy < stall_accuracy:
                raise TrainingError(
                    f"training stalled: validation accuracy {accuracy:.2%} after "
                    f"{STALL_EPOCHS} epochs (chance is {1 / len(CLASS_NAMES):.0%}), loss "
                    f"{(logs or {}).get('loss', float('nan')):.2f}; the network stopped "
                    "learning: lower the learning rate or lengthen the warm-up"
                )

    return DivergenceGuard()
