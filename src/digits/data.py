"""The Kaggle Digit Recognizer format and the binary files passed between steps."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from digits.errors import ColumnError

IMAGE_SIDE = 28
PIXEL_COUNT = IMAGE_SIDE * IMAGE_SIDE
# The internal order: Kaggle Digit Recognizer's own names. Files named pixel1..pixel784
# (Fashion-MNIST on Kaggle) are mapped onto it by position in the image.
PIXEL_COLUMNS = [f"pixel{i}" for i in range(PIXEL_COUNT)]
LABEL_COLUMN = "label"
# 1-based data row in the source CSV (header and empty lines not counted); Kaggle's ImageId.
SOURCE_ROW_COLUMN = "source_row"
EXPECTED_HEADER = (
    "a header naming label (training data) and 784 pixel columns, pixel0..pixel783 "
    "or pixel1..pixel784, in any order"
)
_PIXEL_NAME = re.compile(r"pixel(0|[1-9][0-9]*)")
_NAMINGS = {0: "pixel0..pixel783", 1: "pixel1..pixel784"}


@dataclass(frozen=True)
class ColumnLayout:
    """Where the file keeps each column the pipeline reads, as positions in its header.

    Attributes:
        header: the file's column names as written.
        label_index: position of ``label``; None when absent or ignored (prediction data).
        pixel_indices: position of internal pixel i (``PIXEL_COLUMNS[i]``) in the file.
        naming: which Kaggle naming the file uses.
        label_ignored: prediction data carried a ``label`` column; it is not used.
        ignored_columns: other columns, neither label nor pixel; not read.
    """

    header: tuple[str, ...]
    label_index: int | None
    pixel_indices: tuple[int, ...]
    naming: str
    label_ignored: bool = False
    ignored_columns: tuple[str, ...] = ()

    @property
    def used_indices(self) -> list[int]:
        """File positions in internal order: label first (when used), then pixel0..pixel783."""
        label = [] if self.label_index is None else [self.label_index]
        return label + list(self.pixel_indices)

    @property
    def reordered(self) -> bool:
        """The pixel columns are not in image order in the file."""
        return list(self.pixel_indices) != sorted(self.pixel_indices)


def resolve_columns(header: list[str], require_label: bool, source: str) -> ColumnLayout:
    """Map a CSV header onto the internal column order, accepting both Kaggle namings.

    Args:
        header: column names of the file's first line (BOM and surrounding spaces removed).
        require_label: training data; a ``label`` column must be present.
        source: the file, for the error message.

    Raises:
        ColumnError: one line saying what is wrong with the header and what was expected.
    """
    if header and all(_is_number(name) for name in header):
        raise ColumnError(
            f"{source}: the first line holds numbers, not column names; expected "
            f"{EXPECTED_HEADER}. Add the header line"
        )
    duplicated = sorted({name for name in header if header.count(name) > 1}, key=header.index)
    if duplicated:
        raise ColumnError(
            f"{source}: duplicated column(s) {_abbreviate(duplicated)}; expected "
            f"{EXPECTED_HEADER}, each once. Remove the repeated columns"
        )
    pixels = {}
    for position, name in enumerate(header):
        match = _PIXEL_NAME.fullmatch(name)
        if match:
            pixels[int(match.group(1))] = position
    offset = 1 if pixels and min(pixels) == 1 else 0
    wanted = set(range(offset, offset + PIXEL_COUNT))
    missing = sorted(wanted - pixels.keys())
    surplus = sorted(pixels.keys() - wanted)
    if missing or surplus:
        found = f"{len(pixels)} pixel columns" + (
            f" (pixel{min(pixels)}..pixel{max(pixels)})" if pixels else ""
        )
        problems = []
        if missing:
            problems.append(f"missing {_abbreviate([f'pixel{i}' for i in missing])}")
        if surplus:
            problems.append(f"surplus {_abbreviate([f'pixel{i}' for i in surplus])}")
        raise ColumnError(
            f"{source}: {found}: {'; '.join(problems)}; expected exactly 784, "
            "pixel0..pixel783 or pixel1..pixel784. Re-export the file with one column per pixel"
        )
    has_label = LABEL_COLUMN in header
    if require_label and not has_label:
        raise ColumnError(
            f"{source}: no '{LABEL_COLUMN}' column; training data needs the digit (0-9) of each "
            f"row in a column named {LABEL_COLUMN}. Add it, or check the file is training data"
        )
    used = set(pixels.values()) | ({header.index(LABEL_COLUMN)} if has_label else set())
    return ColumnLayout(
        header=tuple(header),
        label_index=header.index(LABEL_COLUMN) if has_label and require_label else None,
        pixel_indices=tuple(pixels[offset + i] for i in range(PIXEL_COUNT)),
        naming=_NAMINGS[offset],
        label_ignored=has_label and not require_label,
        ignored_columns=tuple(name for i, name in enumerate(header) if i not in used),
    )


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _abbreviate(names: list[str], shown: int = 5) -> str:
    listed = ", ".join(names[:shown])
    return listed if len(names) <= shown else f"{listed} and {len(names) - shown} more"


@dataclass(frozen=True)
class ImageSet:
    """Normalized images (n, 28, 28, 1) float32 in [0, 1], with labels and source rows."""

    images: np.ndarray
    labels: np.ndarray | None
    source_rows: np.ndarray

    def __len__(self) -> int:
        return len(self.images)

    def save(self, path: Path) -> None:
        """Write as an uncompressed .npz (fast to load; images are the bulk)."""
        arrays = {"images": self.images, "source_rows": self.source_rows}
        if self.labels is not None:
            arrays["labels"] = self.labels
        with open(path, "wb") as handle:  # a file object keeps numpy from appending ".npz"
            np.savez(handle, **arrays)

    @classmethod
    def load(cls, path: Path) -> ImageSet:
        with np.load(path) as arrays:
            labels = arrays["labels"] if "labels" in arrays.files else None
            return cls(arrays["images"], labels, arrays["source_rows"])


def scale_pixels(pixels: np.ndarray) -> np.ndarray:
    """0-255 pixel values to float32 in [0, 1]: the one scaling that training, batch prediction
    and `digits serve` apply (float32 division, so every path gives the same bits)."""
    return pixels.astype(np.float32) / 255.0


def to_image_set(rows: pd.DataFrame) -> ImageSet:
    """Scale validated rows' 0-255 pixels to float32 [0, 1] images of shape (n, 28, 28, 1)."""
    images = scale_pixels(rows[PIXEL_COLUMNS].to_numpy()).reshape(-1, IMAGE_SIDE, IMAGE_SIDE, 1)
    labels = rows[LABEL_COLUMN].to_numpy(dtype=np.int64) if LABEL_COLUMN in rows else None
    return ImageSet(images, labels, rows[SOURCE_ROW_COLUMN].to_numpy(dtype=np.int64))


def sample_data(name: str) -> Path:
    """Path of a bundled sample file: train.csv.gz, test.csv.gz or test_labels.csv.gz."""
    from importlib.resources import files

    return Path(str(files("digits") / "sample_data" / name))
