"""Properties of ingest + validate on generated files: rows in = accepted + quarantined, always.

Rows are real sample digits; hypothesis picks which, how the file is written (naming, column
order, line ends, blank lines) and which rows it corrupts, and how.
"""

import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from digits.components.ingest_csv import ingest_csv
from digits.components.validate_data import validate_data
from digits.data import PIXEL_COLUMNS, SOURCE_ROW_COLUMN
from digits.errors import DataValidationError

POOL = 40  # distinct sample rows to draw from
EXPECTED_KIND = {
    "missing": "missing value",
    "text": "not a number",
    "range": "out of range",
    "fraction": "not an integer",
    "label": "out of range",
    "long": "wrong number of fields",
    "short": "wrong number of fields",
}

cells = st.integers(min_value=1, max_value=784)  # field positions of pixels in the file
corruptions = st.one_of(
    st.tuples(st.just("missing"), cells),
    st.tuples(st.just("text"), cells, st.sampled_from(["x", "abc", "1-2", "#", "0x1G"])),
    st.tuples(
        st.just("range"),
        cells,
        st.one_of(st.integers(256, 10**6), st.integers(-(10**6), -1)).map(str),
    ),
    st.tuples(st.just("fraction"), cells, st.sampled_from(["0.5", "254.9", "1e-3"])),
    st.tuples(st.just("label"), st.just(0), st.integers(10, 99).map(str)),
    st.tuples(st.just("long"), st.integers(1, 3)),
    st.tuples(st.just("short"), st.integers(1, 784)),
)
rows = st.tuples(
    st.integers(0, POOL - 1),  # which sample row
    st.one_of(st.none(), corruptions),
    st.booleans(),  # a blank line before it
)
layouts = st.fixed_dictionaries(
    {
        "offset": st.sampled_from([0, 1]),  # pixel0..pixel783 or pixel1..pixel784
        "reverse": st.booleans(),  # columns in reverse order
        "newline": st.sampled_from(["\n", "\r\n"]),
        "bom": st.booleans(),
    }
)


def _write(sample: pd.DataFrame, specs, layout, path: Path) -> list[str]:
    """Write the file; return the header as written (for naming the expected column)."""
    header = ["label"] + [f"pixel{i + layout['offset']}" for i in range(784)]
    order = list(range(785))[::-1] if layout["reverse"] else list(range(785))
    lines = [",".join(header[i] for i in order)]
    for index, corruption, blank_before in specs:
        fields = [str(v) for v in sample.iloc[index]]
        if corruption is not None:
            kind = corruption[0]
            if kind == "missing":
                fields[corruption[1]] = ""
            elif kind in ("text", "range", "fraction", "label"):
                fields[corruption[1]] = corruption[2]
        fields = [fields[i] for i in order]
        if corruption is not None and corruption[0] == "long":
            fields += ["0"] * corruption[1]
        if corruption is not None and corruption[0] == "short":
            fields = fields[: corruption[1]]
        if blank_before:
            lines.append("")
        lines.append(",".join(fields))
    text = layout["newline"].join(lines) + layout["newline"]
    path.write_text(("\ufeff" if layout["bom"] else "") + text, encoding="utf-8")
    return header


def _run(sample, specs, layout):
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        header = _write(sample, specs, layout, work / "train.csv")
        ingest_csv(str(work / "train.csv"), work / "dataset")
        try:
            report = validate_data(
                work / "dataset",
                work / "valid.parquet",
                work / "rejected.parquet",
                work / "report.json",
                source="train.csv",
                require_label=True,
                max_rejected_fraction=1.0,
            )
        except DataValidationError:  # all rejected, or a digit missing: outputs are written
            from digits.artifacts import ValidationReport

            report = ValidationReport.read(work / "report.json")
        valid = pd.read_parquet(work / "valid.parquet")
        rejected = pd.read_parquet(work / "rejected.parquet")
    return header, report, valid, rejected


@pytest.fixture(scope="module")
def pool(sample_train) -> pd.DataFrame:
    return sample_train.head(POOL).reset_index(drop=True)


def _assert_no_row_lost(report, valid, rejected, count):
    assert report.rows_in == count == report.valid_rows + report.rejected_rows
    assert (len(valid), len(rejected)) == (report.valid_rows, report.rejected_rows)
    seen = [*valid[SOURCE_ROW_COLUMN], *rejected[SOURCE_ROW_COLUMN]]
    assert sorted(seen) == list(range(1, count + 1))
    assert sum(report.rejections.values()) == report.rejected_rows


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    specs=st.lists(
        st.tuples(st.integers(0, POOL - 1), st.none(), st.booleans()), min_size=1, max_size=20
    ),
    layout=layouts,
)
def test_valid_frames_pass_whole_with_their_values(pool, specs, layout):
    _, report, valid, rejected = _run(pool, specs, layout)

    _assert_no_row_lost(report, valid, rejected, len(specs))
    assert report.rejected_rows == 0
    expected = pool.iloc[[index for index, _, _ in specs]]
    assert valid[SOURCE_ROW_COLUMN].tolist() == list(range(1, len(specs) + 1))
    assert np.array_equal(
        valid[["label", *PIXEL_COLUMNS]].to_numpy(), expected[["label", *PIXEL_COLUMNS]].to_numpy()
    )


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(specs=st.lists(rows, min_size=1, max_size=20), layout=layouts)
def test_every_corrupted_row_is_quarantined_with_its_row_and_reason(pool, specs, layout):
    header, report, valid, rejected = _run(pool, specs, layout)

    _assert_no_row_lost(report, valid, rejected, len(specs))
    reasons = dict(zip(rejected[SOURCE_ROW_COLUMN], rejected["rejection_reason"], strict=True))
    for row, (index, corruption, _) in enumerate(specs, start=1):
        if corruption is None:
            assert row not in reasons
            kept = valid.loc[valid[SOURCE_ROW_COLUMN] == row, ["label", *PIXEL_COLUMNS]]
            assert np.array_equal(kept.to_numpy()[0], pool.iloc[index].to_numpy())
            continue
        assert reasons[row].startswith(EXPECTED_KIND[corruption[0]]), (corruption, reasons[row])
        if corruption[0] not in ("long", "short"):
            assert f" in {header[corruption[1]]}" in reasons[row]
