"""Which levers of the default recipe earn their place? Each variant trained in one process.

    .venv/bin/python bench/recipe_levers.py                       # each lever changed back
    .venv/bin/python bench/recipe_levers.py "batch_size=128,learning_rate=2e-3" epochs=10

Every variant is the default recipe with some settings changed (``key=value`` pairs of
``TrainConfig``, comma-separated), trained on the sample's 7,200 training rows and scored after
each epoch on the pipeline's validation split (800 of the 8,000 labelled rows, stratified, seed
2), which the train step scores anyway. The 2,000 held-out test digits are never used here:
they are scored once, for the chosen recipe, by the README's `digits run`. Prints img/s,
seconds to 98.5 % validation accuracy, final and best validation accuracy, the epoch of the best
(what early stopping with best-weights restore could have kept) and the validation curve.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from dataclasses import fields, replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from train_bench import PathScore, load_data  # noqa: E402

from digits.config import DEFAULT_RECIPE, TrainConfig, resolve_recipe  # noqa: E402

# Each lever of the default recipe, changed back (or an option added).
LEVERS = (
    "",  # the default itself
    "precision=float32",
    "batch_size=128",
    "batch_size=256",
    "warmup_fraction=0.2",
    "label_smoothing=0",
    "augmentation=none",
    "schedule=cosine",
    "optimizer=sgd,learning_rate=5e-2",
    "optimizer=rmsprop,schedule=plateau,learning_rate=1e-3",
    "batch_norm=true",
)


def apply(base: TrainConfig, spec: str) -> TrainConfig:
    """``base`` with the ``key=value`` pairs of ``spec`` (comma-separated) applied."""
    kinds = {field.name: field.type for field in fields(TrainConfig)}
    changes = {}
    for pair in filter(None, spec.split(",")):
        key, _, text = pair.partition("=")
        if key not in kinds:
            raise SystemExit(f"recipe_levers: {key!r} is not a TrainConfig setting")
        kind = kinds[key]
        changes[key] = (
            text.lower() in {"1", "true", "yes"} if kind == "bool"
            else int(text) if kind == "int"
            else float(text) if kind == "float"
            else text
        )  # fmt: skip
    return replace(base, **changes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("variants", nargs="*", help="key=value[,key=value...] (default: LEVERS)")
    parser.add_argument("--target", type=float, default=0.985)
    args = parser.parse_args()

    from digits.components.train_model import train_model
    from digits.data import ImageSet

    base = resolve_recipe(DEFAULT_RECIPE)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        train_path, validation_path, *_held_out = load_data(work, 0)  # held-out: not used
        train_rows = len(ImageSet.load(train_path))
        for spec in args.variants or LEVERS:
            config = apply(base, spec)
            train_model(
                train_path, validation_path, work / "m", work / "h.json", config,
                recipe=spec or DEFAULT_RECIPE,
            )  # fmt: skip
            history = json.loads((work / "h.json").read_text())
            scores = [record["val_accuracy"] for record in history]
            score = PathScore(spec, [r["seconds"] for r in history], scores, train_rows)
            reach = score.seconds_to(args.target)
            best = max(range(len(scores)), key=scores.__getitem__)
            print(
                f"LEVER {spec or DEFAULT_RECIPE:<40} {score.images_per_second():5.0f} img/s  "
                f"to {args.target:.1%}: {'never' if reach is None else f'{reach:5.1f} s'}  "
                f"total {sum(score.epoch_seconds):5.0f} s  final {scores[-1]:.2%}  best "
                f"{scores[best]:.2%} at epoch {best + 1}/{len(scores)}  curve "
                + " ".join(f"{100 * s:.2f}" for s in scores),
                flush=True,
            )


if __name__ == "__main__":
    main()
