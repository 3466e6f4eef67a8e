"""Step 2: validate_data. No row is ever lost: valid + rejected == rows in."""

import json

import numpy as np
import pandas as pd
import pytest
from kfp.dsl import Artifact, Dataset, Markdown

from digits.components import validate_data
from digits.components.ingest_csv import ingest_csv
from digits.data import PIXEL_COLUMNS, SOURCE_ROW_COLUMN, to_image_set
from digits.errors import ColumnError, MissingDigitsError, TooManyRejectedRowsError


def _ingest(tmp_path, frame: pd.DataFrame, name: str = "train.csv"):
    source = tmp_path / name
    frame.to_csv(source, index=False)
    ingest_csv(str(source), tmp_path / "dataset")
    return source


def _validate(tmp_path, source, require_label=True, max_rejected_fraction=0.0):
    return validate_data.validate_data(
        tmp_path / "dataset",
        tmp_path / "valid.parquet",
        tmp_path / "rejected.parquet",
        tmp_path / "report.json",
        source=str(source),
        require_label=require_label,
        max_rejected_fraction=max_rejected_fraction,
        markdown_path=tmp_path / "report.md",
    )


def _every_digit(sample_train, per_digit=5) -> pd.DataFrame:
    return sample_train.groupby("label", sort=False).head(per_digit).reset_index(drop=True)


def test_clean_rows_all_pass_as_uint8_with_their_source_rows(tmp_path, sample_train):
    rows = _every_digit(sample_train)
    source = _ingest(tmp_path, rows)

    report = _validate(tmp_path, source)

    valid = pd.read_parquet(tmp_path / "valid.parquet")
    assert (report.rows_in, report.valid_rows, report.rejected_rows) == (50, 50, 0)
    assert valid[["label", *PIXEL_COLUMNS]].dtypes.unique().tolist() == [np.dtype("uint8")]
    assert valid[SOURCE_ROW_COLUMN].tolist() == list(range(1, 51))
    assert (valid[["label", *PIXEL_COLUMNS]].to_numpy() == rows.to_numpy()).all()
    assert report.label_counts == {str(digit): 5 for digit in range(10)}
    assert report.class_balance == 1.0 and report.duplicate_rows == 0 and report.passed
    written = json.loads((tmp_path / "report.json").read_text())
    assert written["valid_rows"] == 50 and written["source_sha256"] == report.source_sha256
    assert "| valid | 50 |" in (tmp_path / "report.md").read_text()


@pytest.mark.parametrize("rename", ["pixel1..pixel784", "reversed columns"])
def test_other_namings_and_orders_map_to_the_same_valid_rows(tmp_path, sample_train, rename):
    rows = _every_digit(sample_train, per_digit=2)
    if rename == "pixel1..pixel784":
        other = rows.rename(columns={f"pixel{i}": f"pixel{i + 1}" for i in range(784)})
    else:
        other = rows[list(rows.columns)[::-1]]
    source = _ingest(tmp_path, other)

    report = _validate(tmp_path, source)

    valid = pd.read_parquet(tmp_path / "valid.parquet")
    assert list(valid.columns) == [SOURCE_ROW_COLUMN, "label", *PIXEL_COLUMNS]
    assert (valid[["label", *PIXEL_COLUMNS]].to_numpy() == rows.to_numpy()).all()
    assert report.pixel_naming == ("pixel1..pixel784" if "784" in rename else "pixel0..pixel783")
    assert report.pixels_reordered == (rename == "reversed columns")
    images = to_image_set(valid)
    assert images.images.shape == (20, 28, 28, 1)


def _damaged(sample_train) -> pd.DataFrame:
    frame = _every_digit(sample_train, per_digit=3).astype(object)
    frame.loc[2, "pixel5"] = None  # row 3: missing
    frame.loc[5, "pixel700"] = 300  # row 6: out of range (fits int16: fast path)
    frame.loc[7, "pixel9"] = "x"  # row 8: not a number (text path)
    frame.loc[11, "label"] = 12  # row 12: not a digit
    frame.loc[13, ["pixel1", "pixel2", "pixel3"]] = None  # row 14: three missing
    frame.loc[15, "pixel4"] = 70000  # row 16: out of range, beyond int16
    frame.loc[17, "pixel4"] = "2.5"  # row 18: not an integer
    frame.loc[18, "pixel4"] = "4.0"  # row 19: an integer written as a float: valid
    frame.loc[19, "pixel4"] = "0x1F"  # row 20: hex, as pyarrow parses it: valid (31)
    return frame


def test_bad_rows_are_rejected_with_a_reason_and_nothing_is_lost(tmp_path, sample_train):
    source = _ingest(tmp_path, _damaged(sample_train))

    report = _validate(tmp_path, source, max_rejected_fraction=0.5)

    valid = pd.read_parquet(tmp_path / "valid.parquet")
    rejected = pd.read_parquet(tmp_path / "rejected.parquet")
    assert len(valid) + len(rejected) == report.rows_in == 30
    assert sorted([*valid[SOURCE_ROW_COLUMN], *rejected[SOURCE_ROW_COLUMN]]) == list(range(1, 31))
    reasons = dict(zip(rejected[SOURCE_ROW_COLUMN], rejected["rejection_reason"], strict=True))
    assert reasons == {
        3: "missing value in pixel5",
        6: "out of range in pixel700: 300 (expected 0-255)",
        8: "not a number in pixel9: 'x'",
        12: "out of range in label: 12 (expected 0-9)",
        14: "missing value in pixel1 (+2 more bad cells)",
        16: "out of range in pixel4: 70000 (expected 0-255)",
        18: "not an integer in pixel4: '2.5'",
    }
    row_8 = rejected.loc[rejected[SOURCE_ROW_COLUMN] == 8, "row"].item().split(",")
    assert len(row_8) == 785 and row_8[10] == "x"
    assert valid.loc[valid[SOURCE_ROW_COLUMN] == 19, "pixel4"].item() == 4
    assert valid.loc[valid[SOURCE_ROW_COLUMN] == 20, "pixel4"].item() == 31
    assert report.rejections == {
        "out of range": 3,
        "missing value": 2,
        "not a number": 1,
        "not an integer": 1,
    }


def test_too_many_rejections_fail_with_row_column_and_fix_after_keeping_them(
    tmp_path, sample_train
):
    source = _ingest(tmp_path, _damaged(sample_train))

    with pytest.raises(TooManyRejectedRowsError) as error:
        _validate(tmp_path, source, max_rejected_fraction=0.1)

    message = str(error.value)
    assert "\n" not in message
    assert message.startswith(f"{source}: 7 of 30 rows rejected (23.33%, allowed 10.00%)")
    assert "first at row 3: missing value in pixel5" in message
    assert "raise max_rejected_fraction" in message
    assert len(pd.read_parquet(tmp_path / "rejected.parquet")) == 7
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["rejected_rows"] == 7 and report["error"] == message
    assert "**failed**" in (tmp_path / "report.md").read_text()


def test_missing_columns_are_named_with_the_expected_format(tmp_path, sample_train):
    source = _ingest(tmp_path, sample_train.head(5).drop(columns=["pixel783"]))

    with pytest.raises(
        ColumnError, match=r"783 pixel columns \(pixel0..pixel782\): missing pixel783"
    ):
        _validate(tmp_path, source)

    assert "missing pixel783" in json.loads((tmp_path / "report.json").read_text())["error"]


def test_a_digit_with_no_rows_is_fatal_for_training(tmp_path, sample_train):
    source = _ingest(tmp_path, _every_digit(sample_train).query("label != 4"))

    with pytest.raises(MissingDigitsError, match=r"no valid rows of digit\(s\) 4 \(rows per digit"):
        _validate(tmp_path, source)


def test_duplicates_and_balance_are_reported_not_fatal(tmp_path, sample_train):
    rows = _every_digit(sample_train, per_digit=2)
    sevens = rows[rows["label"] == 7]
    source = _ingest(tmp_path, pd.concat([rows, sevens, sevens], ignore_index=True))

    report = _validate(tmp_path, source)

    assert report.duplicate_rows == 4 and report.passed
    assert report.label_counts["7"] == 6 and report.class_balance == pytest.approx(2 / 6)


def test_unlabeled_test_data_passes_when_no_label_is_required(tmp_path, test_csv):
    ingest_csv(str(test_csv), tmp_path / "dataset")

    report = _validate(tmp_path, test_csv, require_label=False)

    assert not report.has_label and report.valid_rows == 60 and report.label_counts == {}


def test_a_label_in_prediction_data_is_ignored_and_reported(tmp_path, sample_train):
    rows = _every_digit(sample_train, per_digit=1).astype(object)
    rows.loc[0, "label"] = "not a digit"  # ignored, so not checked
    source = _ingest(tmp_path, rows, name="test.csv")

    report = _validate(tmp_path, source, require_label=False)

    valid = pd.read_parquet(tmp_path / "valid.parquet")
    assert report.label_ignored and report.has_label and report.valid_rows == 10
    assert list(valid.columns) == [SOURCE_ROW_COLUMN, *PIXEL_COLUMNS]


def test_wrapper_records_row_counts_and_writes_the_markdown(tmp_path, sample_train):
    source = _ingest(tmp_path, _damaged(sample_train))
    kinds = {"report": Artifact, "report_markdown": Markdown}
    artifacts = {
        name: kinds.get(name, Dataset)(name=name, uri=str(tmp_path / name))
        for name in ("valid", "rejected", "report", "report_markdown")
    }

    validate_data.component("digits:test").python_func(
        dataset=Dataset(name="dataset", uri=str(tmp_path / "dataset")),
        source=str(source),
        require_label=True,
        max_rejected_fraction=0.5,
        **artifacts,
    )

    assert artifacts["valid"].metadata["rows"] == 23
    assert artifacts["rejected"].metadata["rows"] == 7
    assert (tmp_path / "report_markdown").read_text().startswith(f"# Validation of `{source}`")
