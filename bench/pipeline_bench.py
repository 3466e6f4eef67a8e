"""Where a `digits run` spends its time: each step's seconds and share, and wall / train.

    .venv/bin/python bench/pipeline_bench.py               # README run, timed imports, 42,000 rows
    .venv/bin/python bench/pipeline_bench.py --sizes readme --no-import-floor

Runs of the real `digits run` (kfp.local, one process per task, the embedded MLflow store),
each into its own folder:

- ``readme``: the README's command as it is (the bundled sample, default recipe, the baseline).
- ``42000``: Kaggle's train.csv size. The sample holds 8,000 real labeled digits, so the other
  34,000 rows are copies of them, each moved by the recipe's own augmentation (rotation, zoom and
  shift drawn once per copy, seed 0). The validation split therefore holds near-copies of
  training digits and its accuracy reads high; the held-out score uses the sample's 2,000 test
  digits, which no copy comes from.
- ``imports`` (``--import-floor``, on by default): the README run again with
  ``PYTHONPROFILEIMPORTTIME=1``, so Python times every import of every task into the task's log.
  Summing each step's top-level imports gives the seconds it spends before doing any work, and
  (train + the other steps' imports) / train is the lowest wall / train that one process per
  step allows with these libraries, however little the steps themselves did. Timing the imports
  slows them slightly, so that floor is a little high; it is printed beside this run's own ratio.

Goals (issue "A run whose time goes to training"): README run wall <= 1.25 x the train step;
at 42,000 rows no step besides training over 10 % of the train step's seconds. kfp.local runs
one task at a time, so the steps add up to the wall time (on a cluster, parallel branches
overlap).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

WALL_OVER_TRAIN_GOAL = 1.25
OTHER_STEP_SHARE_GOAL = 0.10
KAGGLE_ROWS = 42_000
# `-X importtime` lines as the task logs hold them; a top-level import has one space before its
# name (nested ones are indented, and counted inside their parent's cumulative time).
TOP_LEVEL_IMPORT = re.compile(
    r"\s*import time:\s+\d+ \|\s+(?P<microseconds>\d+) \| (?P<module>\S+)$"
)
SHOWN_IMPORT_SECONDS = 0.3


def tiled_train_csv(path: Path, rows: int, seed: int = 0) -> Path:
    """The sample's training rows, then augmented copies of them up to ``rows`` rows."""
    import numpy as np
    import pandas as pd

    from digits.augment import random_affine
    from digits.config import TrainConfig
    from digits.data import sample_data

    sample = pd.read_csv(sample_data("train.csv.gz"))
    labels = sample.pop("label").to_numpy()
    images = sample.to_numpy(np.float32).reshape(-1, 28, 28, 1)
    recipe, rng = TrainConfig(), np.random.default_rng(seed)
    parts, part_labels, have = [images], [labels], len(labels)
    while have < rows:
        take = min(len(labels), rows - have)
        parts.append(
            random_affine(
                images[:take],
                rng,
                rotation_degrees=recipe.rotation_degrees,
                zoom=recipe.zoom,
                shift=recipe.shift,
            )
        )
        part_labels.append(labels[:take])
        have += take
    pixels = np.clip(np.rint(np.concatenate(parts)), 0, 255).astype(np.uint8).reshape(rows, -1)
    frame = pd.DataFrame(pixels, columns=sample.columns)
    frame.insert(0, "label", np.concatenate(part_labels))
    frame.to_csv(path, index=False)
    return path


def run(work: Path, *options: str, time_imports: bool = False) -> dict:
    """One `digits run` into ``work``; its summary JSON."""
    digits = Path(sys.executable).with_name("digits")
    summary = work / "summary.json"
    command = [str(digits), "run", "--output-dir", str(work), "--summary-json", str(summary)]
    env = dict(os.environ, PYTHONPROFILEIMPORTTIME="1") if time_imports else None
    prefix = "PYTHONPROFILEIMPORTTIME=1 " if time_imports else ""
    print("$", prefix + " ".join(command + list(options)), flush=True)
    # With imports timed, `digits run` itself writes thousands of lines to stderr: keep them
    # out of the way unless it fails.
    stderr = subprocess.PIPE if time_imports else None
    result = subprocess.run(
        command + list(options), stdout=subprocess.DEVNULL, stderr=stderr, env=env, text=True
    )
    if result.returncode:
        if result.stderr:
            print(result.stderr[-4000:], file=sys.stderr)
        raise SystemExit(f"digits run failed (exit {result.returncode}); see above")
    return json.loads(summary.read_text())


def imports_of(log: Path) -> dict[str, float]:
    """Seconds a task spent importing each top-level package, from its log (written with
    PYTHONPROFILEIMPORTTIME). A package's first import is charged to it whichever of its modules
    came first (``mlflow.exceptions`` pulls in all of ``mlflow``)."""
    seconds: dict[str, float] = {}
    for line in log.read_text(errors="replace").splitlines():
        if match := TOP_LEVEL_IMPORT.match(line):
            package = match["module"].split(".")[0]
            seconds[package] = seconds.get(package, 0.0) + int(match["microseconds"]) / 1e6
    return seconds


def report_imports(summary: dict) -> None:
    """Print each step's seconds beside its import seconds, and the import floor of
    wall / train: (train + the other steps' imports) / train."""
    wall, train = summary["seconds"], summary["train_seconds"]
    logs = Path(summary["logs_dir"])
    steps = sorted(summary["step_seconds"].items(), key=lambda item: -item[1])
    print(
        f"\nimports: wall {wall:.0f} s, train step {train:.0f} s, wall / train {wall / train:.2f}"
    )
    print(f"  {'step':<28} {'seconds':>8} {'imports':>8}  heaviest imports")
    other_seconds = other_imports = 0.0
    for task, seconds in steps:
        log = logs / f"{task}.log"
        modules = imports_of(log) if log.exists() else {}
        imported = sum(modules.values())
        heavy = sorted(
            (item for item in modules.items() if item[1] >= SHOWN_IMPORT_SECONDS),
            key=lambda item: -item[1],
        )
        shown = ", ".join(f"{module} {module_seconds:.1f}" for module, module_seconds in heavy)
        print(f"  {task:<28} {seconds:>8.1f} {imported:>8.1f}  {shown}")
        if task != "train-model":
            other_seconds += seconds
            other_imports += imported
    floor = (train + other_imports) / train
    print(
        f"  steps besides training: {other_seconds:.1f} s, of which importing {other_imports:.1f} s"
        f" ({other_imports / other_seconds:.0%})"
    )
    print(
        f"  import floor of wall / train: (train + their imports) / train = {floor:.2f}"
        f" (goal <= {WALL_OVER_TRAIN_GOAL}); this run {wall / train:.2f}"
    )


def report(name: str, summary: dict) -> bool:
    """Print the per-step table; whether the size's goal is met."""
    wall, train = summary["seconds"], summary["train_seconds"]
    steps = sorted(summary["step_seconds"].items(), key=lambda item: -item[1])
    print(f"\n{name}: wall {wall:.0f} s, train step {train:.0f} s, wall / train {wall / train:.2f}")
    print(f"  {'step':<28} {'seconds':>8} {'of wall':>8} {'of train':>9}")
    for task, seconds in steps:
        print(f"  {task:<28} {seconds:>8.1f} {seconds / wall:>8.0%} {seconds / train:>9.0%}")
    others = [seconds for task, seconds in steps if task != "train-model"]
    worst = max(others) / train
    if name == "readme":
        met = wall / train <= WALL_OVER_TRAIN_GOAL
        print(f"  goal wall / train <= {WALL_OVER_TRAIN_GOAL}: {'met' if met else 'NOT met'}")
    else:
        met = worst <= OTHER_STEP_SHARE_GOAL
        print(
            f"  largest other step {worst:.0%} of the train step; goal <= "
            f"{OTHER_STEP_SHARE_GOAL:.0%}: {'met' if met else 'NOT met'}"
        )
    accuracy = summary.get("accuracy")
    if accuracy is not None:
        print(f"  held-out accuracy {accuracy:.2%} (the sample's 2,000 test digits)")
    return met


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--sizes", nargs="+", default=["readme", str(KAGGLE_ROWS)], help="readme and/or a row count"
    )
    parser.add_argument(
        "--import-floor",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="after the README run, run it again with every import timed; print the import floor",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="pipeline-bench-") as temp:
        work = Path(temp)
        for size in args.sizes:
            if size == "readme":
                summary = run(work / "readme")
            else:
                from digits.data import sample_data

                train = tiled_train_csv(work / f"train-{size}.csv", int(size))
                summary = run(
                    work / size,
                    "--data", str(train),
                    "--predict-data", str(sample_data("test.csv.gz")),
                    "--predict-labels", str(sample_data("test_labels.csv.gz")),
                )  # fmt: skip
            report(size, summary)
            if size == "readme" and args.import_floor:
                report_imports(run(work / "imports", time_imports=True))


if __name__ == "__main__":
    main()
