"""scripts/make_other_dataset.py: rendered letters in Kaggle's format, accepted by the pipeline."""

import importlib.util
from pathlib import Path

import pandas as pd
import pytest

from digits.app.validation import check_csv

SCRIPT = Path(__file__).parents[1] / "scripts" / "make_other_dataset.py"


@pytest.fixture(scope="module")
def make_other_dataset():
    spec = importlib.util.spec_from_file_location("make_other_dataset", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name, require_label", [("train.csv", True), ("test.csv", False)])
def test_files_pass_the_pipelines_own_validation(tmp_path, make_other_dataset, name, require_label):
    make_other_dataset.write_dataset(tmp_path / "data", train_rows=40, test_rows=20, seed=0)
    source = str(tmp_path / "data" / name)

    check = check_csv(source, require_label=require_label)

    assert check.error is None
    assert check.report.valid_rows == (40 if require_label else 20)


def test_classes_are_balanced_and_the_seed_fixes_every_byte(tmp_path, make_other_dataset):
    for folder in ("a", "b"):
        make_other_dataset.write_dataset(tmp_path / folder, train_rows=40, test_rows=20, seed=3)

    train = pd.read_csv(tmp_path / "a" / "train.csv")
    assert train["label"].value_counts().to_dict() == {label: 4 for label in range(10)}
    labels = pd.read_csv(tmp_path / "a" / "test_labels.csv")
    assert labels["ImageId"].tolist() == list(range(1, 21))
    for name in ("train.csv", "test.csv", "test_labels.csv"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    # Not blank images: the glyphs carry ink well above the noise floor.
    assert (train.drop(columns="label").max(axis=1) > 200).all()
