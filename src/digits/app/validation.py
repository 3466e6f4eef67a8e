"""`digits validate`: the pipeline's own ingest and validate steps, run on one file here."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

from digits.artifacts import ValidationReport
from digits.errors import DigitsError


@dataclass(frozen=True)
class FileCheck:
    """The outcome of :func:`check_csv`: the report (None when ingest failed) and the error."""

    report: ValidationReport | None
    error: str | None

    @property
    def passed(self) -> bool:
        return self.error is None


def check_csv(
    source_uri: str,
    require_label: bool = True,
    max_rejected_fraction: float = 0.0,
    report_json: Path | None = None,
    retry_budget_s: float = 120.0,
) -> FileCheck:
    """Run ingest_csv then validate_data on ``source_uri`` exactly as the pipeline does.

    The steps' outputs go to a temporary directory, removed afterwards. When ``report_json``
    is given the validation report is written there, also on failure (with ``error`` set).
    """
    from digits.components.ingest_csv import ingest_csv
    from digits.components.validate_data import validate_data

    error = None
    with tempfile.TemporaryDirectory(prefix="digits-validate-") as scratch:
        work = Path(scratch)
        report_path = work / "report.json"
        try:
            ingest_csv(source_uri, work / "dataset", retry_budget_s=retry_budget_s)
            validate_data(
                work / "dataset",
                work / "valid.parquet",
                work / "rejected.parquet",
                report_path,
                source=source_uri,
                require_label=require_label,
                max_rejected_fraction=max_rejected_fraction,
            )
        except DigitsError as failure:
            error = str(failure)
        report = ValidationReport.read(report_path) if report_path.exists() else None
    if report_json is not None:
        written = report or ValidationReport(
            source_uri=source_uri,
            source_sha256="",
            require_label=require_label,
            max_rejected_fraction=max_rejected_fraction,
            error=error,
        )
        report_json.parent.mkdir(parents=True, exist_ok=True)
        written.write(report_json)
    return FileCheck(report, error)
