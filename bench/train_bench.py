"""Does our train step beat the reference kernel? Both side by side, in one process.

    .venv/bin/python bench/train_bench.py                    # the bundled sample, CPU
    KERAS_BACKEND=torch python bench/train_bench.py --rows 42000 --precision mixed  # a GPU

(a) the reference code path as the Kaggle article writes it: plain ``model.fit`` on NumPy
arrays, batch 64, RMSprop, ReduceLROnPlateau, 30 epochs, no augmentation; (b) our train step
(``train_model``) with the default recipe. Same training rows (the sample after the pipeline's
10% validation split), each epoch scored on the 2,000 held-out sample digits, outside the timed
span. Prints images/s, seconds to first reach the target held-out accuracy, final held-out
accuracy, then the ratios R (time to accuracy) and T (throughput).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@dataclass
class PathScore:
    name: str
    epoch_seconds: list[float]
    held_out: list[float]
    images: int

    def images_per_second(self) -> float:
        return self.images * len(self.epoch_seconds) / sum(self.epoch_seconds)

    def seconds_to(self, target: float) -> float | None:
        elapsed = 0.0
        for seconds, accuracy in zip(self.epoch_seconds, self.held_out, strict=True):
            elapsed += seconds
            if accuracy >= target:
                return elapsed
        return None


def load_data(work: Path, rows: int):
    """(train.npz, validation.npz, held-out images, held-out labels) as the pipeline makes them."""
    import pandas as pd

    from digits.components.normalize_and_split import normalize_and_split
    from digits.data import PIXEL_COLUMNS, SOURCE_ROW_COLUMN, ImageSet, sample_data, to_image_set

    frame = _with_source_rows(pd.read_csv(sample_data("train.csv.gz")))
    frame.to_parquet(work / "valid.parquet")
    normalize_and_split(work / "valid.parquet", work / "train.npz", work / "validation.npz", 0.1, 2)
    if rows:
        train = ImageSet.load(work / "train.npz")
        repeat = -(-rows // len(train))
        ImageSet(
            np.tile(train.images, (repeat, 1, 1, 1))[:rows],
            np.tile(train.labels, repeat)[:rows],
            np.tile(train.source_rows, repeat)[:rows],
        ).save(work / "train.npz")
    test = _with_source_rows(pd.read_csv(sample_data("test.csv.gz")))
    labels = pd.read_csv(sample_data("test_labels.csv.gz"))["Label"].to_numpy()
    return (
        work / "train.npz",
        work / "validation.npz",
        to_image_set(test[[SOURCE_ROW_COLUMN, *PIXEL_COLUMNS]]).images,
        labels,
    )


def _with_source_rows(frame):
    """The frame with the 1-based ``source_row`` column the pipeline's ingest step adds."""
    import pandas as pd

    from digits.data import SOURCE_ROW_COLUMN

    rows = pd.DataFrame({SOURCE_ROW_COLUMN: np.arange(1, len(frame) + 1)}, index=frame.index)
    return pd.concat([rows, frame], axis=1)


def held_out_scorer(images: np.ndarray, labels: np.ndarray, scores: list[float]):
    """A callback that appends the held-out accuracy after every epoch."""
    import keras

    class ScoreHeldOut(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            probabilities = self.model.predict(images, batch_size=1000, verbose=0)
            scores.append(float((probabilities.argmax(axis=1) == labels).mean()))
            print(f"  held-out after epoch {epoch + 1}: {scores[-1]:.2%}", flush=True)

    return ScoreHeldOut()


def epoch_timer(seconds: list[float]):
    import keras

    class TimeEpochs(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.started = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            seconds.append(time.perf_counter() - self.started)

    return TimeEpochs()


def run_reference(train_path: Path, validation_path: Path, held_out, epochs: int) -> PathScore:
    """The article's code path: NumPy arrays straight into fit, no augmentation."""
    import keras

    from digits.config import RECIPES
    from digits.data import ImageSet
    from digits.model import build_model, one_hot

    train, validation = ImageSet.load(train_path), ImageSet.load(validation_path)
    config = replace(RECIPES["reference"], augmentation="none", epochs=epochs)
    keras.utils.set_random_seed(config.seed)
    model = build_model(config, steps_per_execution=1)  # one step per call, as the article
    seconds: list[float] = []
    scores: list[float] = []
    model.fit(
        train.images,
        one_hot(train.labels),
        batch_size=config.batch_size,
        epochs=config.epochs,
        validation_data=(validation.images, one_hot(validation.labels)),
        verbose=0,
        callbacks=[
            epoch_timer(seconds),  # first: its epoch end comes before the scoring
            keras.callbacks.ReduceLROnPlateau(
                monitor="val_accuracy",
                patience=config.lr_patience,
                factor=config.lr_factor,
                min_lr=config.min_learning_rate,
            ),
            held_out_scorer(*held_out, scores),
        ],
    )
    return PathScore("reference", seconds, scores, len(train))


def run_ours(train_path, validation_path, held_out, recipe: str, args, work: Path) -> PathScore:
    """Our train step, as the pipeline runs it, with the recipe (and any flags) applied."""
    from digits.components.train_model import train_model
    from digits.config import resolve_recipe
    from digits.data import ImageSet

    config = resolve_recipe(recipe, epochs=args.epochs)
    if args.augmentation:
        config = replace(config, augmentation=args.augmentation)
    if args.precision:
        config = replace(config, precision=args.precision)
    scores: list[float] = []
    train_model(
        train_path,
        validation_path,
        work / "model",
        work / "history.json",
        config,
        recipe=recipe,
        jit_compile=True if args.jit_compile else "auto",
        observers=[held_out_scorer(*held_out, scores)],
    )
    import json

    history = json.loads((work / "history.json").read_text())
    return PathScore(
        recipe, [r["seconds"] for r in history], scores, len(ImageSet.load(train_path))
    )


def main(argv: list[str] | None = None) -> None:
    from digits.config import DEFAULT_RECIPE

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=0, help="tile the training rows to this many")
    parser.add_argument("--recipe", default=DEFAULT_RECIPE, help="recipe of path (b)")
    parser.add_argument("--epochs", type=int, default=0, help="epochs of (b); 0: the recipe's")
    parser.add_argument("--reference-epochs", type=int, default=30)
    parser.add_argument("--target", type=float, default=0.985, help="held-out accuracy to reach")
    parser.add_argument(
        "--precision",
        choices=["float32", "mixed"],
        help="(b): override the recipe's precision (mixed: bfloat16/float16 where native)",
    )
    parser.add_argument("--jit-compile", action="store_true", help="(b): XLA / torch.compile")
    parser.add_argument(
        "--augmentation",
        choices=["none", "layers", "pipeline"],
        help="(b): override the recipe's augmentation (layers: on the accelerator)",
    )
    parser.add_argument("--skip-reference", action="store_true", help="run (b) only")
    parser.add_argument("--summary-json", type=Path, help="also write the figures here as JSON")
    args = parser.parse_args(argv)

    import keras

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        train_path, validation_path, *held_out = load_data(work, args.rows)
        devices = _devices()
        print(
            f"backend {keras.backend.backend()}, devices {devices}, training rows "
            f"{args.rows or 'sample'}, held-out {len(held_out[1])}; (b) computes in "
            f"{_compute_dtype(args)}",
            flush=True,
        )
        paths = []
        if not args.skip_reference:
            paths.append(
                run_reference(train_path, validation_path, held_out, args.reference_epochs)
            )
        paths.append(run_ours(train_path, validation_path, held_out, args.recipe, args, work))

    for path in paths:
        reach = path.seconds_to(args.target)
        print(
            f"{path.name:<10} {len(path.epoch_seconds)} epochs"
            f"  {path.images_per_second():7.0f} img/s"
            f"  to {args.target:.1%}: {'never' if reach is None else f'{reach:6.1f} s'}"
            f"  total {sum(path.epoch_seconds):6.1f} s  final held-out {path.held_out[-1]:.2%}"
            f"  best {max(path.held_out):.2%}"
        )
    if len(paths) == 2:
        reference, ours = paths
        ref_reach, our_reach = reference.seconds_to(args.target), ours.seconds_to(args.target)
        ratio = "n/a" if ref_reach is None or our_reach is None else f"{ref_reach / our_reach:.2f}"
        print(f"time-to-accuracy ratio R {ratio}")
        print(f"throughput ratio T {ours.images_per_second() / reference.images_per_second():.2f}")
    if args.summary_json:
        _write_summary(args, keras.backend.backend(), devices, paths)


def _write_summary(args, backend: str, devices: str, paths: list[PathScore]) -> None:
    """The printed figures as JSON: {"backend", "devices", ..., "paths": {"reference"|"ours"}}."""
    import json

    def figures(path: PathScore) -> dict:
        return {
            "name": path.name,
            "epochs": len(path.epoch_seconds),
            "images_per_second": path.images_per_second(),
            "seconds_to_target": path.seconds_to(args.target),
            "total_seconds": sum(path.epoch_seconds),
            "final_held_out": path.held_out[-1],
            "best_held_out": max(path.held_out),
        }

    names = ["ours"] if len(paths) == 1 else ["reference", "ours"]
    summary = {
        "backend": backend,
        "devices": devices,
        "rows": args.rows,
        "recipe": args.recipe,
        "compute_dtype": _compute_dtype(args),
        "target": args.target,
        "paths": {name: figures(path) for name, path in zip(names, paths, strict=True)},
    }
    if len(paths) == 2:
        reference, ours = paths
        ref_reach, our_reach = reference.seconds_to(args.target), ours.seconds_to(args.target)
        summary["R"] = None if ref_reach is None or our_reach is None else ref_reach / our_reach
        summary["T"] = ours.images_per_second() / reference.images_per_second()
    args.summary_json.parent.mkdir(parents=True, exist_ok=True)
    args.summary_json.write_text(json.dumps(summary, indent=2))


def _compute_dtype(args) -> str:
    """The dtype policy path (b) trains with here: its recipe's precision, or the override."""
    from digits.config import resolve_recipe
    from digits.model import compute_dtype_policy

    return compute_dtype_policy(args.precision or resolve_recipe(args.recipe).precision)


def _devices() -> str:
    import keras

    if keras.backend.backend() == "torch":
        import torch

        return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        return ",".join(d.device_type for d in tf.config.list_physical_devices()) or "cpu"
    return "default"


if __name__ == "__main__":
    sys.exit(main())
