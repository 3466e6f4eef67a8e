"""Step 2: check the Kaggle schema and every cell; split rows into valid and rejected."""

import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

from digits.data import LABEL_COLUMN, PIXEL_COLUMNS, SOURCE_ROW_COLUMN
from digits.errors import DataValidationError

EXPECTED_FORMAT = "label,pixel0..pixel783 with 0-255 integers (Kaggle Digit Recognizer format)"
REASON_COLUMN = "rejection_reason"
PROBLEMS = {1: "null", 2: "non-numeric value", 3: "value out of range"}


@dataclass(frozen=True)
class ValidationReport:
    """What validation found; written as JSON next to the valid and rejected rows."""

    source: str
    rows: int
    valid_rows: int = 0
    rejected_rows: int = 0
    has_label: bool = False
    missing_columns: list[str] = field(default_factory=list)
    ignored_columns: list[str] = field(default_factory=list)
    null_cells: dict[str, int] = field(default_factory=dict)
    rejections: dict[str, int] = field(default_factory=dict)
    label_counts: dict[str, int] = field(default_factory=dict)

    def write(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=2))


def validate_data(
    dataset_path: Path,
    valid_path: Path,
    rejected_path: Path,
    report_path: Path,
    source: str,
    require_label: bool,
    max_rejected_fraction: float = 0.0,
) -> ValidationReport:
    """Keep rows whose cells are all present, numeric and in range; reject the rest, losing none.

    Valid rows go to ``valid_path`` (pixels as uint8), rejected rows to ``rejected_path`` as read
    plus a ``rejection_reason``; the report is written before any error is raised.

    Raises:
        DataValidationError: a required column is missing, no row is valid, or more than
            ``max_rejected_fraction`` of the rows were rejected.
    """
    import numpy as np
    import pandas as pd

    frame = pd.read_parquet(dataset_path)
    required = ([LABEL_COLUMN] if require_label else []) + PIXEL_COLUMNS
    missing = [column for column in required if column not in frame.columns]
    if missing:
        ValidationReport(source, len(frame), missing_columns=missing).write(report_path)
        raise DataValidationError(
            f"{source}: missing column(s) {_abbreviate(missing)}; expected {EXPECTED_FORMAT}. "
            "Re-export the file with its header and all 784 pixel columns"
        )

    has_label = LABEL_COLUMN in frame.columns
    checked = ([LABEL_COLUMN] if has_label else []) + PIXEL_COLUMNS
    cells = frame[checked]
    values = cells.apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float64)
    is_null = cells.isna().to_numpy()
    upper = np.full(len(checked), 255.0)
    if has_label:
        upper[0] = 9.0
    # One small code per cell (not strings: Kaggle's train.csv has 33M cells); later wins.
    problem = np.zeros(values.shape, dtype=np.uint8)
    problem[(values < 0) | (values > upper) | (values % 1 != 0)] = 3
    problem[np.isnan(values)] = 2
    problem[is_null] = 1
    is_bad = problem > 0
    bad_rows = is_bad.any(axis=1)

    rejected = frame[bad_rows].copy()
    first_bad = is_bad[bad_rows].argmax(axis=1)
    kinds = [PROBLEMS[code] for code in problem[bad_rows][np.arange(len(first_bad)), first_bad]]
    extra_cells = is_bad[bad_rows].sum(axis=1) - 1
    rejected[REASON_COLUMN] = [
        f"{kind} in {checked[col]}" + (f" (+{extra} more cells)" if extra else "")
        for kind, col, extra in zip(kinds, first_bad, extra_cells, strict=True)
    ]
    rejected.to_parquet(rejected_path, index=False)

    valid = pd.DataFrame(values[~bad_rows].astype(np.uint8), columns=checked)
    if has_label:
        valid[LABEL_COLUMN] = valid[LABEL_COLUMN].astype(np.int64)
    valid.insert(0, SOURCE_ROW_COLUMN, frame.loc[~bad_rows, SOURCE_ROW_COLUMN].to_numpy())
    valid.to_parquet(valid_path, index=False)

    null_counts = is_null.sum(axis=0)
    label_counts = valid[LABEL_COLUMN].value_counts().sort_index() if has_label else {}
    report = ValidationReport(
        source=source,
        rows=len(frame),
        valid_rows=len(valid),
        rejected_rows=len(rejected),
        has_label=has_label,
        ignored_columns=[c for c in frame.columns if c not in checked and c != SOURCE_ROW_COLUMN],
        null_cells={checked[i]: int(n) for i, n in enumerate(null_counts) if n},
        rejections=dict(Counter(kinds)),
        label_counts={str(k): int(n) for k, n in dict(label_counts).items()},
    )
    report.write(report_path)

    if len(frame) == 0:
        raise DataValidationError(f"{source}: no data rows; expected {EXPECTED_FORMAT}")
    rejected_fraction = len(rejected) / len(frame)
    if len(valid) == 0 or rejected_fraction > max_rejected_fraction:
        first = rejected.iloc[0]
        raise DataValidationError(
            f"{source}: {len(rejected)} of {len(frame)} rows rejected ({rejected_fraction:.2%}, "
            f"allowed {max_rejected_fraction:.2%}), first at row {first[SOURCE_ROW_COLUMN]}: "
            f"{first[REASON_COLUMN]}. Fix those rows, or raise max_rejected_fraction to drop them; "
            "every rejected row is kept in the 'rejected' artifact"
        )
    return report


def _abbreviate(columns: list[str], shown: int = 5) -> str:
    listed = ", ".join(columns[:shown])
    return listed if len(columns) <= shown else f"{listed} and {len(columns) - shown} more"


def component(image: str):
    """Build the KFP component that runs :func:`validate_data` in ``image``."""
    from kfp import dsl
    from kfp.dsl import Artifact, Dataset, Input, Output

    @dsl.component(base_image=image, install_kfp_package=False)
    def validate_data(
        dataset: Input[Dataset],
        source: str,
        require_label: bool,
        max_rejected_fraction: float,
        valid: Output[Dataset],
        rejected: Output[Dataset],
        report: Output[Artifact],
    ):
        """Null and schema check; valid rows pass on, rejected rows are kept with a reason."""
        from pathlib import Path

        from digits.components.validate_data import validate_data as run

        summary = run(
            Path(dataset.path),
            Path(valid.path),
            Path(rejected.path),
            Path(report.path),
            source=source,
            require_label=require_label,
            max_rejected_fraction=max_rejected_fraction,
        )
        valid.metadata["rows"] = summary.valid_rows
        rejected.metadata["rows"] = summary.rejected_rows

    return validate_data
