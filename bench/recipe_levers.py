"""Which levers of the fast recipe earn their place? Each variant trained in one process.

    .venv/bin/python bench/recipe_levers.py [--epochs N] [--only NAME ...]

Every variant is the default recipe with one lever changed back (or one option added), on the
sample's 7,200 training rows, scored each epoch on the 2,000 held-out digits outside the timed
span. Prints img/s, seconds to 98.5 % held-out, final and best held-out accuracy and the epoch
of the best (what early stopping with best-weights restore could have kept).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from train_bench import PathScore, held_out_scorer, load_data  # noqa: E402

from digits.config import DEFAULT_RECIPE, resolve_recipe  # noqa: E402


def variants(base):
    return {
        "default": base,
        "batch 256, lr 3e-3": replace(base, batch_size=256, learning_rate=3e-3),
        "no augmentation": replace(base, augmentation="none"),
        "no label smoothing": replace(base, label_smoothing=0.0),
        "sgd momentum .9, lr 5e-2": replace(base, optimizer="sgd", learning_rate=5e-2),
        "cosine, no warm-up": replace(base, schedule="cosine"),
        "batch norm variant": replace(base, batch_norm=True),
        "rmsprop plateau (ref optimizer)": replace(
            base, optimizer="rmsprop", schedule="plateau", learning_rate=1e-3
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=0)
    parser.add_argument("--only", nargs="*", help="variant names to run")
    args = parser.parse_args()

    from digits.components.train_model import train_model

    base = resolve_recipe(DEFAULT_RECIPE, epochs=args.epochs)
    chosen = {k: v for k, v in variants(base).items() if not args.only or k in args.only}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        train_path, validation_path, *held_out = load_data(work, 0)
        for name, config in chosen.items():
            scores: list[float] = []
            train_model(
                train_path, validation_path, work / "m", work / "h.json", config,
                recipe=name, observers=[held_out_scorer(*held_out, scores)],
            )  # fmt: skip
            history = json.loads((work / "h.json").read_text())
            score = PathScore(name, [r["seconds"] for r in history], scores, 7200)
            reach = score.seconds_to(0.985)
            best = max(range(len(scores)), key=scores.__getitem__)
            print(
                f"LEVER {name:<34} {score.images_per_second():5.0f} img/s  to 98.5%: "
                f"{'never' if reach is None else f'{reach:5.0f} s'}  total "
                f"{sum(score.epoch_seconds):5.0f} s  final {scores[-1]:.2%}  best "
                f"{scores[best]:.2%} at epoch {best + 1}/{len(scores)}",
                flush=True,
            )


if __name__ == "__main__":
    main()
