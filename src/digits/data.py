"""The Kaggle Digit Recognizer format and the binary files passed between steps."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

IMAGE_SIDE = 28
PIXEL_COLUMNS = [f"pixel{i}" for i in range(IMAGE_SIDE * IMAGE_SIDE)]
LABEL_COLUMN = "label"
# 1-based row number in the source CSV (header excluded); Kaggle's ImageId for test.csv.
SOURCE_ROW_COLUMN = "source_row"


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


def to_image_set(rows: pd.DataFrame) -> ImageSet:
    """Scale validated rows' 0-255 pixels to float32 [0, 1] images of shape (n, 28, 28, 1)."""
    pixels = rows[PIXEL_COLUMNS].to_numpy(dtype=np.float32) / 255.0
    images = pixels.reshape(-1, IMAGE_SIDE, IMAGE_SIDE, 1)
    labels = rows[LABEL_COLUMN].to_numpy(dtype=np.int64) if LABEL_COLUMN in rows else None
    return ImageSet(images, labels, rows[SOURCE_ROW_COLUMN].to_numpy(dtype=np.int64))
