"""Pieces of a fit: the training batches and the per-epoch recorder that checkpoints.

``TrainingBatches`` is a ``keras.utils.PyDataset`` (shuffled, optionally augmented, one-hot).
Every epoch's order and every batch's augmentation come from a generator keyed by
``(seed, epoch, batch)``, not from one running stream: a resumed fit that starts at epoch ``e``
sees exactly the batches an uninterrupted fit would, and prefetching threads cannot reorder the
random draws. The augmentation RNG state to checkpoint is therefore just the epoch number.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path

import keras
import numpy as np

from digits.augment import random_affine
from digits.checkpoint import CheckpointStore, TrainingState
from digits.config import TrainConfig
from digits.model import current_learning_rate, one_hot

PLATEAU_COUNTERS = ("wait", "best", "cooldown_counter")


class TrainingBatches(keras.utils.PyDataset):
    """Shuffled batches of ``(images, one-hot labels)``; augmented when the recipe says so.

    Two worker threads prepare batches ahead of the step. With one, Keras feeds the batches
    through ``tf.data.Dataset.from_generator``, whose first batch of an epoch stalled for
    ~5 s in about every other epoch on a 2-core CPU; with two, its own ordered thread pool
    feeds them without stalls. That pool starts fetching before ``PyDataset.on_epoch_begin``
    runs, so the epoch is set by :meth:`epoch_callback`, which Keras calls before the pool
    starts, from the epoch number ``fit`` itself counts.
    """

    def __init__(self, images: np.ndarray, labels: np.ndarray, config: TrainConfig) -> None:
        super().__init__(workers=2, use_multiprocessing=False)
        self.images, self.targets, self.config = images, one_hot(labels), config
        self.set_epoch(0)

    def __len__(self) -> int:
        return -(-len(self.images) // self.config.batch_size)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self._order = self._permutation(epoch)

    def epoch_callback(self) -> keras.callbacks.Callback:
        """A callback for ``fit`` that points these batches at each epoch as it begins."""
        batches = self

        class SetEpoch(keras.callbacks.Callback):
            def on_epoch_begin(self, epoch: int, logs=None) -> None:
                batches.set_epoch(epoch)

        return SetEpoch()

    def _permutation(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.config.seed, epoch]).permutation(len(self.images))

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        size = self.config.batch_size
        rows = self._order[index * size : (index + 1) * size]
        images = self.images[rows]
        if self.config.augmentation == "pipeline":
            rng = np.random.default_rng([self.config.seed, self.epoch, index])
            images = random_affine(
                images,
                rng,
                rotation_degrees=self.config.rotation_degrees,
                zoom=self.config.zoom,
                shift=self.config.shift,
            )
        return images, self.targets[rows]


class EpochRecorder(keras.callbacks.Callback):
    """After each epoch: append to the history, rewrite ``history_path``, print, checkpoint.

    It must come after ReduceLROnPlateau in the callback list, so that the checkpoint holds
    the plateau counters and rate of the epoch just ended; on a resume it puts the counters
    back after ReduceLROnPlateau's ``on_train_begin`` has reset them.
    """

    def __init__(
        self,
        state: TrainingState,
        history_path: Path,
        store: CheckpointStore | None,
        plateau: keras.callbacks.ReduceLROnPlateau | None,
        print_line: Callable[[str], None] = print,
    ) -> None:
        super().__init__()
        self.state, self.history_path, self.store, self.plateau = (
            state,
            history_path,
            store,
            plateau,
        )
        self.print_line = print_line
        self._epoch_started = 0.0
        self._epoch_rate = 0.0

    def on_train_begin(self, logs=None) -> None:
        if self.plateau is not None:
            for name, value in self.state.plateau.items():
                setattr(self.plateau, name, value)

    def on_epoch_begin(self, epoch: int, logs=None) -> None:
        self._epoch_started = time.perf_counter()
        # The rate the epoch starts with: Keras logs it after ReduceLROnPlateau has acted.
        self._epoch_rate = current_learning_rate(self.model.optimizer)

    def on_epoch_end(self, epoch: int, logs=None) -> None:
        metrics = {
            name: float(value) for name, value in (logs or {}).items() if name != "learning_rate"
        }
        record = {
            "epoch": epoch + 1,
            **metrics,
            "learning_rate": self._epoch_rate,
            "seconds": round(time.perf_counter() - self._epoch_started, 3),
        }
        self.state.history.append(record)
        self.state.epochs_done = epoch + 1
        write_json_atomically(self.history_path, self.state.history)
        total = self.state.config["epochs"]
        self.print_line(
            f"epoch {epoch + 1}/{total}  loss {record.get('loss', float('nan')):.4f}  "
            f"accuracy {record.get('accuracy', float('nan')):.4f}  "
            f"val_loss {record.get('val_loss', float('nan')):.4f}  "
            f"val_accuracy {record.get('val_accuracy', float('nan')):.4f}  "
            f"lr {record['learning_rate']:.2e}  {record['seconds']:.1f} s"
        )
        if self.store is not None:
            if self.plateau is not None:
                self.state.plateau = {
                    name: float(getattr(self.plateau, name)) for name in PLATEAU_COUNTERS
                }
            self.state.seed_states = [
                keras.ops.convert_to_numpy(variable).tolist()
                for variable in seed_variables(self.model)
            ]
            self.store.save(self.state, self.model)


def seed_variables(model: keras.Model) -> list:
    """The random layers' seed states, in a fixed order for one architecture."""
    return [variable for variable in model.variables if variable.name == "seed_generator_state"]


def restore_seed_states(model: keras.Model, states: list[list[int]]) -> None:
    """Put back the seed states a checkpoint recorded, so dropout masks continue the stream."""
    for variable, state in zip(seed_variables(model), states, strict=True):
        variable.assign(np.asarray(state, dtype=variable.dtype))


def write_json_atomically(path: Path, value) -> None:
    """Readers polling ``path`` see the old or the new content, never half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".tmp")
    partial.write_text(json.dumps(value, indent=2))
    os.replace(partial, path)
