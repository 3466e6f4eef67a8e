"""Step 2: validate_data. No row is ever lost: valid + rejected == input."""

import json

import numpy as np
import pandas as pd
import pytest
from kfp.dsl import Artifact, Dataset

from digits.components import validate_data
from digits.components.ingest_csv import ingest_csv
from digits.data import PIXEL_COLUMNS, SOURCE_ROW_COLUMN
from digits.errors import DataValidationError


def _ingest(tmp_path, frame: pd.DataFrame):
    source = tmp_path / "train.csv"
    frame.to_csv(source, index=False)
    ingest_csv(str(source), tmp_path / "raw.parquet")
    return source


def _validate(tmp_path, source, require_label=True, max_rejected_fraction=0.0):
    return validate_data.validate_data(
        tmp_path / "raw.parquet",
        tmp_path / "valid.parquet",
        tmp_path / "rejected.parquet",
        tmp_path / "report.json",
        source=str(source),
        require_label=require_label,
        max_rejected_fraction=max_rejected_fraction,
    )


def test_clean_rows_all_pass_as_uint8_with_their_source_rows(tmp_path, sample_train):
    source = _ingest(tmp_path, sample_train.head(50))

    report = _validate(tmp_path, source)

    valid = pd.read_parquet(tmp_path / "valid.parquet")
    assert (report.rows, report.valid_rows, report.rejected_rows) == (50, 50, 0)
    assert valid[PIXEL_COLUMNS].dtypes.unique().tolist() == [np.dtype("uint8")]
    assert valid[SOURCE_ROW_COLUMN].tolist() == list(range(1, 51))
    assert sum(report.label_counts.values()) == 50
    assert json.loads((tmp_path / "report.json").read_text())["valid_rows"] == 50


def _damaged(sample_train) -> pd.DataFrame:
    frame = sample_train.head(20).astype(object)
    frame.loc[2, "pixel5"] = None  # row 3: null
    frame.loc[5, "pixel700"] = 300  # row 6: out of range
    frame.loc[7, "pixel9"] = "x"  # row 8: non-numeric
    frame.loc[11, "label"] = 12  # row 12: not a digit
    frame.loc[13, ["pixel1", "pixel2", "pixel3"]] = None  # row 14: three nulls
    return frame


def test_bad_rows_are_rejected_with_a_reason_and_nothing_is_lost(tmp_path, sample_train):
    source = _ingest(tmp_path, _damaged(sample_train))

    report = _validate(tmp_path, source, max_rejected_fraction=0.5)

    valid = pd.read_parquet(tmp_path / "valid.parquet")
    rejected = pd.read_parquet(tmp_path / "rejected.parquet")
    assert len(valid) + len(rejected) == 20
    assert sorted(set(valid[SOURCE_ROW_COLUMN]) | set(rejected[SOURCE_ROW_COLUMN])) == list(
        range(1, 21)
    )
    reasons = dict(zip(rejected[SOURCE_ROW_COLUMN], rejected["rejection_reason"], strict=True))
    assert reasons == {
        3: "null in pixel5",
        6: "value out of range in pixel700",
        8: "non-numeric value in pixel9",
        12: "value out of range in label",
        14: "null in pixel1 (+2 more cells)",
    }
    assert rejected.loc[rejected[SOURCE_ROW_COLUMN] == 8, "pixel9"].item() == "x"
    assert report.null_cells == {"pixel5": 1, "pixel1": 1, "pixel2": 1, "pixel3": 1}
    assert report.rejections == {"null": 2, "value out of range": 2, "non-numeric value": 1}


def test_too_many_rejections_fail_with_row_column_and_fix_after_keeping_them(
    tmp_path, sample_train
):
    source = _ingest(tmp_path, _damaged(sample_train))

    with pytest.raises(DataValidationError) as error:
        _validate(tmp_path, source, max_rejected_fraction=0.1)

    message = str(error.value)
    assert "\n" not in message
    assert message.startswith(f"{source}: 5 of 20 rows rejected (25.00%, allowed 10.00%)")
    assert "first at row 3: null in pixel5" in message
    assert "raise max_rejected_fraction" in message
    assert len(pd.read_parquet(tmp_path / "rejected.parquet")) == 5
    assert json.loads((tmp_path / "report.json").read_text())["rejected_rows"] == 5


def test_missing_columns_are_named_with_the_expected_format(tmp_path, sample_train):
    source = _ingest(tmp_path, sample_train.head(5).drop(columns=["label", "pixel783"]))

    with pytest.raises(DataValidationError, match=r"missing column\(s\) label, pixel783; expected"):
        _validate(tmp_path, source)

    report = json.loads((tmp_path / "report.json").read_text())
    assert report["missing_columns"] == ["label", "pixel783"]


def test_unlabeled_test_data_passes_when_no_label_is_required(tmp_path, test_csv):
    ingest_csv(str(test_csv), tmp_path / "raw.parquet")

    report = _validate(tmp_path, test_csv, require_label=False)

    assert not report.has_label and report.valid_rows == 60


def test_wrapper_records_row_counts(tmp_path, sample_train):
    source = _ingest(tmp_path, _damaged(sample_train))
    artifacts = {
        name: (Artifact if name == "report" else Dataset)(name=name, uri=str(tmp_path / name))
        for name in ("valid", "rejected", "report")
    }

    validate_data.component("digits:test").python_func(
        dataset=Dataset(name="dataset", uri=str(tmp_path / "raw.parquet")),
        source=str(source),
        require_label=True,
        max_rejected_fraction=0.5,
        **artifacts,
    )

    assert artifacts["valid"].metadata["rows"] == 15
    assert artifacts["rejected"].metadata["rows"] == 5
