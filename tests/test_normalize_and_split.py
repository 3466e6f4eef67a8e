"""Step 3: normalize_and_split."""

from collections import Counter

import numpy as np
import pytest
from kfp.dsl import Dataset

from digits.components import normalize_and_split
from digits.data import ImageSet


def test_images_are_scaled_float32_28x28x1(split_sets):
    train = ImageSet.load(split_sets[0])
    assert train.images.shape[1:] == (28, 28, 1)
    assert train.images.dtype == np.float32
    assert train.images.min() >= 0.0 and train.images.max() <= 1.0
    assert train.images.max() == 1.0  # 255 -> 1.0: the bytes were divided by 255


def test_split_is_stratified_disjoint_and_complete(split_sets):
    train, validation = (ImageSet.load(path) for path in split_sets)
    assert len(train) + len(validation) == 400
    assert len(validation) == 100
    assert not set(train.source_rows) & set(validation.source_rows)
    train_share = Counter(train.labels.tolist())
    validation_share = Counter(validation.labels.tolist())
    for digit in range(10):
        total = train_share[digit] + validation_share[digit]
        assert abs(validation_share[digit] - total * 0.25) <= 1


def test_same_seed_same_split(tmp_path, split_sets):
    rows = split_sets[0].parent / "valid.parquet"
    normalize_and_split.normalize_and_split(rows, tmp_path / "a", tmp_path / "b", 0.25, seed=2)
    again = ImageSet.load(tmp_path / "b")
    assert (again.source_rows == ImageSet.load(split_sets[1]).source_rows).all()


def test_fraction_outside_0_1_is_refused(tmp_path, split_sets):
    rows = split_sets[0].parent / "valid.parquet"
    with pytest.raises(ValueError, match="validation_fraction must be between 0 and 1, got 1.5"):
        normalize_and_split.normalize_and_split(rows, tmp_path / "a", tmp_path / "b", 1.5)


def test_wrapper_records_split_sizes(tmp_path, split_sets):
    train = Dataset(name="train", uri=str(tmp_path / "train"))
    validation = Dataset(name="validation", uri=str(tmp_path / "validation"))

    normalize_and_split.component("digits:test").python_func(
        rows=Dataset(name="rows", uri=str(split_sets[0].parent / "valid.parquet")),
        validation_fraction=0.1,
        seed=2,
        train=train,
        validation=validation,
    )

    assert (train.metadata["rows"], validation.metadata["rows"]) == (360, 40)
