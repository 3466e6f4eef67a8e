"""Step 3: scale pixels to [0, 1] float32 images and make a stratified train/validation split."""

from dataclasses import dataclass
from pathlib import Path

from digits.data import ImageSet, to_image_set
from digits.errors import DataValidationError


@dataclass(frozen=True)
class SplitSummary:
    train_rows: int
    validation_rows: int


def normalize_and_split(
    rows_path: Path,
    train_path: Path,
    validation_path: Path,
    validation_fraction: float = 0.1,
    seed: int = 2,
) -> SplitSummary:
    """Write the validated rows as train and validation ``.npz`` image sets, stratified by label."""
    import pandas as pd
    from sklearn.model_selection import train_test_split

    if not 0 < validation_fraction < 1:
        raise ValueError(f"validation_fraction must be between 0 and 1, got {validation_fraction}")
    images = to_image_set(pd.read_parquet(rows_path))
    if images.labels is None:
        raise DataValidationError(f"{rows_path}: no label column; training data needs labels")
    try:
        train_idx, validation_idx = train_test_split(
            range(len(images)),
            test_size=validation_fraction,
            stratify=images.labels,
            random_state=seed,
        )
    except ValueError as error:
        raise DataValidationError(
            f"{rows_path}: cannot split {len(images)} rows with validation_fraction="
            f"{validation_fraction} stratified by label ({error}); supply more rows per class"
        ) from error
    for indices, path in ((train_idx, train_path), (validation_idx, validation_path)):
        ImageSet(images.images[indices], images.labels[indices], images.source_rows[indices]).save(
            path
        )
    return SplitSummary(train_rows=len(train_idx), validation_rows=len(validation_idx))


def component(image: str):
    """Build the KFP component that runs :func:`normalize_and_split` in ``image``."""
    from kfp import dsl
    from kfp.dsl import Dataset, Input, Output

    @dsl.component(base_image=image, install_kfp_package=False)
    def normalize_and_split(
        rows: Input[Dataset],
        validation_fraction: float,
        seed: int,
        train: Output[Dataset],
        validation: Output[Dataset],
    ):
        """Pixels /255 as float32 28x28x1 images; stratified train/validation split (.npz)."""
        from pathlib import Path

        from digits.components.normalize_and_split import normalize_and_split as run

        summary = run(
            Path(rows.path), Path(train.path), Path(validation.path), validation_fraction, seed
        )
        train.metadata["rows"] = summary.train_rows
        validation.metadata["rows"] = summary.validation_rows

    return normalize_and_split
