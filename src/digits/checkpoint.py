"""Per-epoch training checkpoints in a folder that outlives the pod (fsspec URI or path).

Layout under the run's checkpoint folder::

    epoch-0003/model.keras   weights, optimizer state (its step count drives the rate schedule)
    epoch-0003/state.json    epochs done, history so far, ReduceLROnPlateau state, start time
    latest.json              {"epoch_dir": "epoch-0003"}: written last, so it names only
                             a checkpoint whose files are complete

A kill at any moment leaves either the previous ``latest.json`` or the new one, and each names
a whole checkpoint. Older epoch folders are deleted once the pointer has moved on.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import fsspec

from digits.errors import CheckpointError

LATEST = "latest.json"
MODEL_FILE = "model.keras"
STATE_FILE = "state.json"


def checkpoint_location(checkpoint_dir: str, checkpoint_root: str, pipeline_run_id: str) -> str:
    """Where this run keeps its checkpoints; "" for none.

    ``checkpoint_dir`` is the folder itself (a local run, or resuming a given run on purpose);
    otherwise ``checkpoint_root`` gets one subfolder per pipeline run, so a retried task of the
    same run finds its checkpoints and another run never does.
    """
    if checkpoint_dir:
        return checkpoint_dir
    if checkpoint_root:
        return f"{checkpoint_root.rstrip('/')}/{pipeline_run_id}"
    return ""


@dataclass
class TrainingState:
    """What a resumed fit needs besides the model and optimizer."""

    recipe: str
    config: dict[str, Any]
    epochs_done: int
    started_at_ms: int
    history: list[dict[str, float]] = field(default_factory=list)
    # ReduceLROnPlateau's counters (wait, best, cooldown_counter); empty without that schedule.
    plateau: dict[str, float] = field(default_factory=dict)
    # States of the model's random layers (dropout, Keras augmentation): model.save omits them.
    seed_states: list[list[int]] = field(default_factory=list)
    # What the checkpoint was trained on and with: a resume must match both.
    data_digest: str = ""
    recipe_digest: str = ""


def data_digest(*paths: Path) -> str:
    """sha256 over the bytes of the split files, in order (first 16 hex digits)."""
    import hashlib

    digest = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as handle:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
    return digest.hexdigest()[:16]


def recipe_digest(config: dict[str, Any]) -> str:
    """sha256 of the resolved recipe's settings (first 16 hex digits)."""
    import hashlib

    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16]


def check_belongs(state: TrainingState, uri: str, data: str, recipe: str) -> None:
    """Refuse a checkpoint written for other data or another recipe; never reuse or delete it.

    Raises:
        CheckpointError: naming both digests and the fix.
    """
    if (state.data_digest, state.recipe_digest) == (data, recipe):
        return
    raise CheckpointError(
        f"{uri}: the checkpoint was trained on data {state.data_digest or 'unrecorded'} with "
        f"recipe {state.recipe_digest or 'unrecorded'} ({state.recipe!r}), this run has data "
        f"{data} and recipe {recipe}; resume only with the same split and settings, or pass "
        "another checkpoint location (the old one is left as it is)"
    )


class CheckpointStore:
    """Reads and writes the checkpoints of one run under ``uri`` (any fsspec URI or a path)."""

    def __init__(self, uri: str) -> None:
        self.uri = uri
        self._fs, self._root = fsspec.core.url_to_fs(uri)

    def _path(self, *parts: str) -> str:
        return "/".join([self._root.rstrip("/"), *parts])

    def latest(self, work_dir: Path) -> tuple[TrainingState, Path] | None:
        """(state, local copy of the model) of the newest complete checkpoint, or None."""
        if not self._fs.exists(self._path(LATEST)):
            return None
        try:
            epoch_dir = json.loads(self._fs.cat_file(self._path(LATEST)))["epoch_dir"]
            state = TrainingState(
                **json.loads(self._fs.cat_file(self._path(epoch_dir, STATE_FILE)))
            )
            model_path = work_dir / MODEL_FILE
            self._fs.get_file(self._path(epoch_dir, MODEL_FILE), str(model_path))
        except (OSError, KeyError, TypeError, ValueError) as error:
            raise CheckpointError(
                f"{self.uri}: checkpoint unreadable ({error}); delete the folder or use "
                "another checkpoint location to train from scratch"
            ) from error
        return state, model_path

    def save(self, state: TrainingState, model) -> None:
        """Write the checkpoint after ``state.epochs_done`` epochs, then point ``latest`` at it."""
        epoch_dir = f"epoch-{state.epochs_done:04d}"
        self._fs.makedirs(self._path(epoch_dir), exist_ok=True)
        with tempfile.TemporaryDirectory() as tmp:
            local_model = Path(tmp) / MODEL_FILE
            model.save(local_model)
            self._fs.put_file(str(local_model), self._path(epoch_dir, MODEL_FILE))
        self._fs.pipe_file(self._path(epoch_dir, STATE_FILE), json.dumps(asdict(state)).encode())
        # The pointer moves by rename (atomic on a local or mounted disk; on object stores the
        # copy of one small object is all or nothing).
        self._fs.pipe_file(
            self._path(LATEST + ".tmp"), json.dumps({"epoch_dir": epoch_dir}).encode()
        )
        self._fs.mv(self._path(LATEST + ".tmp"), self._path(LATEST))
        for old in self._fs.glob(self._path("epoch-*")):
            if old.rstrip("/").rsplit("/", 1)[-1] != epoch_dir:
                self._fs.rm(old, recursive=True)
