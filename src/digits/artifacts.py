"""Contracts of the artifacts passed between steps: file names inside them and their JSON shapes.

Components share these instead of importing each other, so every component depends only on
``digits.*``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

# Inside the train step's Model artifact (a directory).
MODEL_FILENAME = "model.keras"
# Inside the baseline step's Model artifact: a fitted scikit-learn estimator (predict_proba).
SKLEARN_MODEL_FILENAME = "model.joblib"
# Beside the model: the fully resolved recipe and the fit's result (logged to MLflow as params).
TRAINING_FILENAME = "training.json"
CLASS_NAMES = [str(digit) for digit in range(10)]


@dataclass(frozen=True)
class Evaluation:
    """Scores of one model on one labeled split; per-class lists are indexed by digit."""

    accuracy: float
    loss: float
    macro_f1: float
    precision: list[float]
    recall: list[float]
    f1: list[float]
    support: list[int]
    confusion_matrix: list[list[int]]
    # The predicted class of each row, in the split's order: what the pictures of mistakes need,
    # so no later step predicts the rows again.
    predicted: list[int] = field(default_factory=list)

    def scalar_metrics(self) -> dict[str, float]:
        """Flat name -> value map, the shape KFP Metrics and MLflow both take."""
        metrics = {"accuracy": self.accuracy, "loss": self.loss, "macro_f1": self.macro_f1}
        for name in ("precision", "recall", "f1"):
            for digit, value in enumerate(getattr(self, name)):
                metrics[f"{name}_{digit}"] = value
        return metrics

    def write(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=2))

    @classmethod
    def read(cls, path: Path) -> Evaluation:
        return cls(**json.loads(path.read_text()))


# Inside ingest_csv's Dataset artifact (a directory): the source's CSV bytes, decompressed from
# .zip, kept gzipped when the source was, plus what ingest learned about the source.
RAW_CSV_NAMES = ("rows.csv", "rows.csv.gz")
SOURCE_INFO_FILENAME = "source.json"


@dataclass(frozen=True)
class SourceInfo:
    """Where ingested rows came from; ``sha256`` is of the source bytes as fetched."""

    source_uri: str
    sha256: str
    size_bytes: int
    compression: str  # "none", "gzip" or "zip"
    # What the fingerprint step saw (it keys the pipeline's cache); "" when run without it.
    fingerprint: str = ""

    def write(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=2))

    @classmethod
    def read(cls, path: Path) -> SourceInfo:
        return cls(**json.loads(path.read_text()))


@dataclass
class ValidationReport:
    """What validate_data found in one CSV: the JSON ``report`` artifact and its Markdown.

    Always ``rows_in == valid_rows + rejected_rows``. ``rejections`` counts rejected rows by the
    kind of their first problem; ``first_rejections`` lists the lowest source rows with their
    reasons. ``error`` is the one-line reason the step failed, None when it passed.
    """

    source_uri: str
    source_sha256: str
    require_label: bool
    max_rejected_fraction: float
    rows_in: int = 0
    valid_rows: int = 0
    rejected_rows: int = 0
    rejections: dict[str, int] = field(default_factory=dict)
    first_rejections: list[dict] = field(default_factory=list)
    pixel_naming: str | None = None
    pixels_reordered: bool = False
    has_label: bool = False
    label_ignored: bool = False
    ignored_columns: list[str] = field(default_factory=list)
    label_counts: dict[str, int] = field(default_factory=dict)
    missing_digits: list[int] = field(default_factory=list)
    class_balance: float | None = None  # rows of the rarest digit / rows of the commonest
    duplicate_rows: int = 0  # valid rows identical to an earlier valid row
    passed: bool = False
    error: str | None = None

    def write(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=2))

    @classmethod
    def read(cls, path: Path) -> ValidationReport:
        return cls(**json.loads(path.read_text()))

    def summary_lines(self) -> list[str]:
        """The report as short plain lines: what `digits validate` prints."""
        lines = [
            f"source          {self.source_uri}",
            f"sha256          {self.source_sha256}",
            f"rows in         {self.rows_in}",
            f"valid           {self.valid_rows}",
            f"rejected        {self.rejected_rows}",
        ]
        lines += [f"  {kind}: {count}" for kind, count in sorted(self.rejections.items())]
        lines += [f"  row {item['source_row']}: {item['reason']}" for item in self.first_rejections]
        if self.pixel_naming:
            order = ", reordered by name" if self.pixels_reordered else ""
            lines.append(f"pixel columns   {self.pixel_naming}{order}")
        if self.label_ignored:
            lines.append("label column    present in prediction data; ignored")
        if self.ignored_columns:
            lines.append(f"ignored columns {', '.join(self.ignored_columns)}")
        if self.label_counts:
            counts = " ".join(f"{digit}:{n}" for digit, n in self.label_counts.items())
            lines.append(f"class counts    {counts}")
            if self.class_balance is not None:
                lines.append(f"class balance   {self.class_balance:.2f} (rarest / commonest)")
        lines.append(f"duplicate rows  {self.duplicate_rows}")
        return lines

    def to_markdown(self) -> str:
        """The report for the KFP UI's Markdown viewer."""
        verdict = "passed" if self.passed else f"**failed**: {self.error}"
        reordered = " (reordered by name)" if self.pixels_reordered else ""
        rows = [
            ("source", f"`{self.source_uri}`"),
            ("sha256", f"`{self.source_sha256}`"),
            ("rows in", self.rows_in),
            ("valid", self.valid_rows),
            ("rejected", self.rejected_rows),
            ("pixel columns", f"{self.pixel_naming or 'n/a'}{reordered}"),
            ("label column", "ignored (prediction data)" if self.label_ignored else self.has_label),
            ("ignored columns", ", ".join(self.ignored_columns) or "none"),
            ("duplicate rows", self.duplicate_rows),
        ]
        if self.class_balance is not None:
            rows.append(("class balance (rarest / commonest)", f"{self.class_balance:.2f}"))
        parts = [f"# Validation of `{self.source_uri}`", "", f"Result: {verdict}", ""]
        parts += ["| | |", "|---|---|", *(f"| {name} | {value} |" for name, value in rows), ""]
        if self.label_counts:
            parts += ["## Rows per digit", "", "| digit | rows |", "|---|---|"]
            parts += [f"| {digit} | {n} |" for digit, n in self.label_counts.items()] + [""]
        if self.rejections:
            parts += ["## Rejected rows by reason", "", "| reason | rows |", "|---|---|"]
            parts += [f"| {kind} | {n} |" for kind, n in sorted(self.rejections.items())] + [""]
            parts += ["First rejected rows:", ""]
            parts += [f"- row {r['source_row']}: {r['reason']}" for r in self.first_rejections]
        return "\n".join(parts) + "\n"
