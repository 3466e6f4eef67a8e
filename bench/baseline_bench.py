"""Which classical baseline? Accuracy and fit time of each scikit-learn recipe, side by side.

Run with the project's venv, no arguments needed (the bundled sample, 7,200 / 800 split):

    .venv/bin/python bench/baseline_bench.py
    .venv/bin/python bench/baseline_bench.py --data other/train.csv \
        --test-data other/test.csv --test-labels other/test_labels.csv

Each recipe goes through the pipeline's own steps (ingest, validate, normalize_and_split,
train_baseline, evaluate_model); held-out accuracy is scored on the test CSV when labels are given.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from digits.components.evaluate_model import evaluate_model
from digits.components.ingest_csv import ingest_csv
from digits.components.normalize_and_split import normalize_and_split
from digits.components.train_baseline import BASELINE_RECIPES, train_baseline
from digits.components.validate_data import validate_data
from digits.data import sample_data
from digits.evaluation import held_out_accuracy


def labeled_split(train_csv: str, work: Path) -> tuple[Path, Path]:
    """(train.npz, validation.npz) through the real steps, with the pipeline's defaults."""
    ingest_csv(train_csv, work / "raw.parquet")
    validate_data(
        work / "raw.parquet",
        work / "valid.parquet",
        work / "rejected.parquet",
        work / "report.json",
        source=train_csv,
        require_label=True,
    )
    normalize_and_split(
        work / "valid.parquet", work / "train.npz", work / "validation.npz", 0.1, seed=2
    )
    return work / "train.npz", work / "validation.npz"


def test_rows(test_csv: str, work: Path) -> Path:
    ingest_csv(test_csv, work / "test_raw.parquet")
    validate_data(
        work / "test_raw.parquet",
        work / "test_valid.parquet",
        work / "test_rejected.parquet",
        work / "test_report.json",
        source=test_csv,
        require_label=False,
    )
    return work / "test_valid.parquet"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=str(sample_data("train.csv.gz")))
    parser.add_argument("--test-data", default=str(sample_data("test.csv.gz")))
    parser.add_argument("--test-labels", default=str(sample_data("test_labels.csv.gz")))
    parser.add_argument("--recipe", action="append", choices=list(BASELINE_RECIPES))
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as temp:
        work = Path(temp)
        train_path, validation_path = labeled_split(args.data, work)
        rows = test_rows(args.test_data, work)
        print(f"data: {args.data}")
        print(f"{'recipe':<24} {'fit s':>7} {'predict s':>9} {'validation':>10} {'held-out':>9}")
        for recipe in args.recipe or list(BASELINE_RECIPES):
            model_dir = work / recipe
            result = train_baseline(train_path, model_dir, work / "history.json", recipe=recipe)
            started = time.perf_counter()
            evaluation = evaluate_model(model_dir, validation_path, work / "report.json")
            held_out = _held_out(model_dir, rows, args.test_labels, work)
            predict_seconds = time.perf_counter() - started
            print(
                f"{recipe:<24} {result.seconds:>7.1f} {predict_seconds:>9.1f} "
                f"{evaluation.accuracy:>10.2%} {held_out:>9.2%}"
            )


def _held_out(model_dir: Path, rows: Path, labels: str, work: Path) -> float:
    """Held-out accuracy from a Kaggle submission written by the predictor, as digits run does."""
    import pandas as pd

    from digits.data import to_image_set
    from digits.predictor import load_predictor

    images = to_image_set(pd.read_parquet(rows))
    predicted = load_predictor(model_dir)(images.images).argmax(axis=1)
    submission = work / "submission.csv"
    pd.DataFrame({"ImageId": images.source_rows, "Label": predicted}).to_csv(
        submission, index=False
    )
    return held_out_accuracy(submission, labels)


if __name__ == "__main__":
    main()
