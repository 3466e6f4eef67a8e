"""Does a sweep find a better model than the default recipe? Both from one process.

    .venv/bin/python bench/sweep_bench.py

Runs the pipeline's own sweep steps in-process (plan_trials → train_trial → evaluate_trial →
select_best, without MLflow): 8 trials of the default search space (``lr-schedule``, engine TPE;
with no earlier sweeps to learn from, that is TPE's seeded random start-up) over the default
recipe, on the bundled sample's 7,200 training rows, each scored on the pipeline's validation
split (800 rows, stratified, seed 2), the best chosen on it. The default recipe is trained the
same way beside them. Then, once each, the winner and the default are scored on the 2,000
held-out test digits, which played no part in the choice. Prints every trial, then the two
side by side (validation, held-out, training seconds).

Long: 9 trainings of 14 epochs (about 90 s each on 2 idle cores, more on busy ones).
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from train_bench import load_data  # noqa: E402

from digits.config import DEFAULT_RECIPE, DEFAULT_SEARCH_SPACE, resolve_recipe  # noqa: E402

TRIALS = 8
SWEEP_SEED = 0
SEED = 2


def main() -> None:
    import numpy as np

    from digits.components.evaluate_trial import evaluate_trial
    from digits.components.plan_trials import plan_trials
    from digits.components.select_best import select_best
    from digits.components.train_trial import train_trial
    from digits.data import ImageSet
    from digits.evaluation import evaluate_probabilities
    from digits.predictor import load_predictor
    from digits.training import train_model

    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        train_path, validation_path, held_out_images, held_out_labels = load_data(work, 0)
        validation = ImageSet.load(validation_path)
        print(
            f"sweep {DEFAULT_SEARCH_SPACE!r}, {TRIALS} trials (seed {SWEEP_SEED}) over recipe "
            f"{DEFAULT_RECIPE!r}; {len(ImageSet.load(train_path))} training rows, "
            f"{len(validation)} validation, {len(held_out_labels)} held-out",
            flush=True,
        )
        records, model_dirs = [], []
        plan = plan_trials(DEFAULT_SEARCH_SPACE, TRIALS, SWEEP_SEED, DEFAULT_RECIPE, seed=SEED)
        for trial in plan:
            out = work / trial["trial_name"]
            train_trial(
                train_path, validation_path, out / "model", out / "history.json",
                trial["trial_id"], json.loads(trial["overrides"]), DEFAULT_RECIPE, seed=SEED,
            )  # fmt: skip
            record = evaluate_trial(out / "model", validation_path, out / "trial.json")
            records.append(record)
            model_dirs.append(out / "model")
            outcome = f"{record.val_accuracy:.4f}" if record.succeeded else record.error
            print(f"  {record.name}  {trial['overrides']}  {outcome}  {record.seconds:.0f} s")
        selection = select_best(
            records, model_dirs, work / "best", work / "best.json", work / "best-eval.json"
        )
        print("\n" + selection.table)

        default_dir = work / "default"
        default = train_model(
            train_path, validation_path, default_dir, work / "default-history.json",
            resolve_recipe(DEFAULT_RECIPE, seed=SEED), recipe=DEFAULT_RECIPE,
        )  # fmt: skip
        default_val = evaluate_probabilities(
            validation.labels, load_predictor(default_dir)(validation.images)
        ).accuracy

        def held_out(model_dir: Path) -> float:  # scored once per model
            predicted = load_predictor(model_dir)(held_out_images).argmax(axis=1)
            return float(np.mean(predicted == held_out_labels))

        best = selection.best
        rows = [
            (f"default recipe ({DEFAULT_RECIPE})", default_val, held_out(default_dir),
             default.seconds),
            (f"sweep winner ({best.name})", best.val_accuracy, held_out(work / "best"),
             best.seconds),
        ]  # fmt: skip
    print(f"{'model':<28} {'validation':>10} {'held-out':>9} {'train s':>8}")
    for name, val, test, seconds in rows:
        print(f"{name:<28} {val:>10.4f} {test:>9.4f} {seconds:>8.1f}")
    print(f"the winner's settings: {json.dumps(best.overrides, sort_keys=True)}")
    gain = rows[1][2] - rows[0][2]
    print(
        f"held-out gain of the winner over the default: {gain:+.4f} "
        f"({gain * len(held_out_labels):+.0f} of {len(held_out_labels)} digits); "
        f"{time.perf_counter() - started:.0f} s in all"
    )


if __name__ == "__main__":
    main()
