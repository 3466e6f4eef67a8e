"""A corpus of broken (and awkward but valid) Kaggle CSVs, written from the real bundled sample.

Each case is one file and what the pipeline must say about it: the one-line error (a regular
expression) or, for files that pass, nothing. `write_corpus(sample, folder)` writes them all;
`python tests/malformed_corpus.py DIR` does the same by hand, to look at them.
"""

from __future__ import annotations

import gzip
import sys
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd


@dataclass(frozen=True)
class Case:
    name: str
    file_name: str
    write: Callable[[pd.DataFrame, Path], None]
    error: str | None  # regex the one-line error must match; None: the file passes
    predict: bool = False


def base_rows(sample: pd.DataFrame, per_digit: int = 3) -> pd.DataFrame:
    """``per_digit`` real rows of every digit, in the sample's order (30 rows by default)."""
    return sample.groupby("label", sort=False).head(per_digit).reset_index(drop=True).copy()


def _csv(frame: pd.DataFrame) -> str:
    return frame.to_csv(index=False, lineterminator="\n")


def _text(build: Callable[[pd.DataFrame], str], encoding: str = "utf-8"):
    def write(sample: pd.DataFrame, path: Path) -> None:
        path.write_bytes(build(base_rows(sample)).encode(encoding))

    return write


def _edit_line(text: str, line: int, edit: Callable[[list[str]], list[str]]) -> str:
    """Apply ``edit`` to the fields of 1-based ``line`` (line 1 is the header)."""
    lines = text.split("\n")
    lines[line - 1] = ",".join(edit(lines[line - 1].split(",")))
    return "\n".join(lines)


def _set(field: int, value: str):
    def edit(fields: list[str]) -> list[str]:
        fields[field] = value
        return fields

    return edit


def _gzip(sample: pd.DataFrame, path: Path) -> None:
    path.write_bytes(gzip.compress(_csv(base_rows(sample)).encode()))


def _zip(members: list[str]):
    def write(sample: pd.DataFrame, path: Path) -> None:
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as bundle:
            for member in members:
                bundle.writestr(member, _csv(base_rows(sample)))

    return write


def _truncated_gzip(sample: pd.DataFrame, path: Path) -> None:
    payload = gzip.compress(_csv(base_rows(sample, per_digit=20)).encode())
    path.write_bytes(payload[: len(payload) * 2 // 3])


def _png(sample: pd.DataFrame, path: Path) -> None:
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4)


def _renamed_pixels(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.rename(columns={f"pixel{i}": f"pixel{i + 1}" for i in range(784)})


def _shuffled(frame: pd.DataFrame) -> pd.DataFrame:
    columns = list(frame.columns)
    return frame[columns[::-1]]


def _one_digit(sample: pd.DataFrame, path: Path) -> None:
    path.write_text(_csv(sample[sample["label"] == 7].head(20)))


def _duplicates(sample: pd.DataFrame, path: Path) -> None:
    rows = base_rows(sample)
    path.write_text(_csv(pd.concat([rows, rows.head(4)], ignore_index=True)))


CASES = [
    # Whole-file problems: ingest_csv fails, nothing is validated.
    Case("empty file", "empty.csv", _text(lambda rows: ""), r"empty\.csv: the file is empty"),
    Case(
        "only blank lines",
        "blank.csv",
        _text(lambda rows: "\n\n  \n"),
        r"blank\.csv: the file is empty",
    ),
    Case(
        "semicolon-separated",
        "semicolons.csv",
        _text(lambda rows: _csv(rows).replace(",", ";")),
        r"semicolons\.csv: looks `;`-separated .*expected comma-separated values",
    ),
    Case(
        "tab-separated",
        "tabs.tsv",
        _text(lambda rows: _csv(rows).replace(",", "\t")),
        r"tabs\.tsv: looks tab-separated",
    ),
    Case("binary (a PNG)", "image.csv", _png, r"image\.csv: not a text file \(byte 0x89"),
    Case(
        "not UTF-8 (UTF-16)",
        "utf16.csv",
        _text(_csv, encoding="utf-16"),
        r"utf16\.csv: not a text file",
    ),
    Case(
        "zip with two CSVs",
        "two.zip",
        _zip(["train.csv", "test.csv"]),
        r"two\.zip: the zip holds 2 files \(train\.csv, test\.csv\); expected exactly one CSV",
    ),
    Case(
        "truncated gzip",
        "truncated.csv.gz",
        _truncated_gzip,
        r"truncated\.csv\.gz: unreadable after row \d+ \(.*\); the file is damaged or truncated",
    ),
    # Header problems: validate_data fails before reading any row.
    Case(
        "header only",
        "header_only.csv",
        _text(lambda rows: _csv(rows.head(0))),
        r"header_only\.csv: a header but no data rows",
    ),
    Case(
        "no header line",
        "no_header.csv",
        _text(lambda rows: rows.to_csv(index=False, header=False)),
        r"no_header\.csv: the first line holds numbers, not column names.*Add the header line",
    ),
    Case(
        "a 785th pixel column",
        "surplus_pixel.csv",
        _text(lambda rows: _csv(rows.assign(pixel784=0))),
        r"surplus_pixel\.csv: 785 pixel columns \(pixel0\.\.pixel784\): surplus pixel784; "
        r"expected exactly 784, pixel0\.\.pixel783 or pixel1\.\.pixel784",
    ),
    Case(
        "a missing pixel column",
        "missing_pixel.csv",
        _text(lambda rows: _csv(rows.drop(columns=["pixel783"]))),
        r"missing_pixel\.csv: 783 pixel columns \(pixel0\.\.pixel782\): missing pixel783; "
        r"expected exactly 784",
    ),
    Case(
        "a duplicated pixel column",
        "duplicated_pixel.csv",
        _text(lambda rows: _csv(rows).replace("pixel6,", "pixel5,", 1)),  # two pixel5, no pixel6
        r"duplicated_pixel\.csv: duplicated column\(s\) pixel5; expected .*each once",
    ),
    Case(
        "training data without label",
        "no_label.csv",
        _text(lambda rows: _csv(rows.drop(columns=["label"]))),
        r"no_label\.csv: no 'label' column; training data needs the digit",
    ),
    # Row problems: rows are rejected with their reason; 0 % allowed, so the step fails.
    Case(
        "non-numeric cell",
        "non_numeric.csv",
        _text(lambda rows: _edit_line(_csv(rows), 5, _set(10, "x"))),
        r"non_numeric\.csv: 1 of 30 rows rejected \(3\.33%, allowed 0\.00%\), first at row 4: "
        r"not a number in pixel9: 'x'\. Fix those rows, or raise max_rejected_fraction",
    ),
    Case(
        "pixel out of range",
        "pixel_256.csv",
        _text(lambda rows: _edit_line(_csv(rows), 3, _set(300, "256"))),
        r"first at row 2: out of range in pixel299: 256 \(expected 0-255\)",
    ),
    Case(
        "negative pixel",
        "pixel_negative.csv",
        _text(lambda rows: _edit_line(_csv(rows), 3, _set(1, "-1"))),
        r"first at row 2: out of range in pixel0: -1 \(expected 0-255\)",
    ),
    Case(
        "label out of range",
        "label_10.csv",
        _text(lambda rows: _edit_line(_csv(rows), 7, _set(0, "10"))),
        r"first at row 6: out of range in label: 10 \(expected 0-9\)",
    ),
    Case(
        "fractional pixel",
        "fractional.csv",
        _text(lambda rows: _edit_line(_csv(rows), 8, _set(200, "0.5"))),
        r"first at row 7: not an integer in pixel199: '0\.5'",
    ),
    Case(
        "empty cell",
        "empty_cell.csv",
        _text(lambda rows: _edit_line(_csv(rows), 9, _set(784, ""))),
        r"first at row 8: missing value in pixel783",
    ),
    Case(
        "a row with too many fields",
        "ragged_long.csv",
        _text(lambda rows: _edit_line(_csv(rows), 11, lambda fields: [*fields, "0"])),
        r"first at row 10: wrong number of fields: 786 fields, expected 785",
    ),
    Case(
        "a row with too few fields",
        "ragged_short.csv",
        _text(lambda rows: _edit_line(_csv(rows), 12, lambda fields: fields[:400])),
        r"first at row 11: wrong number of fields: 400 fields, expected 785",
    ),
    Case(
        "training data with one digit only",
        "only_sevens.csv",
        _one_digit,
        r"only_sevens\.csv: no valid rows of digit\(s\) 0, 1, 2, 3, 4, 5, 6, 8, 9 "
        r"\(rows per digit 0:0 .* 7:20 .*\).*Add labeled rows of every digit 0-9",
    ),
    # Awkward but valid: these pass.
    Case(
        "pixel1..pixel784 naming",
        "fashion_naming.csv",
        _text(lambda r: _csv(_renamed_pixels(r))),
        None,
    ),
    Case("columns in another order", "shuffled.csv", _text(lambda r: _csv(_shuffled(r))), None),
    Case(
        "UTF-8 BOM and CRLF line ends",
        "bom_crlf.csv",
        _text(lambda rows: "\ufeff" + _csv(rows).replace("\n", "\r\n")),
        None,
    ),
    Case(
        "empty lines between rows",
        "blank_lines.csv",
        _text(lambda rows: "\n" + _csv(rows).replace("\n", "\n\n", 5)),
        None,
    ),
    Case("gzip", "train.csv.gz", _gzip, None),
    Case("zip with one CSV", "train.zip", _zip(["train.csv"]), None),
    Case("duplicate rows", "duplicates.csv", _duplicates, None),
    Case(
        "prediction data with a label column",
        "test_with_label.csv",
        _text(_csv),
        None,
        predict=True,
    ),
    Case(
        "prediction data without label",
        "test.csv",
        _text(lambda rows: _csv(rows.drop(columns=["label"]))),
        None,
        predict=True,
    ),
]


def write_corpus(sample: pd.DataFrame, folder: Path) -> dict[str, Path]:
    """Write every case's file into ``folder``; returns case name -> path."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for case in CASES:
        case.write(sample, folder / case.file_name)
        paths[case.name] = folder / case.file_name
    return paths


if __name__ == "__main__":
    from digits.data import sample_data

    written = write_corpus(pd.read_csv(sample_data("train.csv.gz")), Path(sys.argv[1]))
    print("\n".join(str(path) for path in written.values()))
