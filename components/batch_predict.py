"""Step 7: score unlabeled rows and write Kaggle's submission file."""

from dataclasses import dataclass
from pathlib import Path

from digits.data import to_image_set

SUBMISSION_COLUMNS = ["ImageId", "Label"]


@dataclass(frozen=True)
class PredictionSummary:
    rows: int
    predicted_class_counts: dict[str, int]


def batch_predict(
    model_path: Path,
    rows_path: Path,
    submission_path: Path,
    probabilities_path: Path,
    batch_size: int = 512,
) -> PredictionSummary:
    """Predict each validated row; ImageId is the row's 1-based position in the source CSV.

    Writes ``ImageId,Label`` as CSV (what Kaggle accepts) and the per-row class
    probabilities (``ImageId, prob_0..prob_9``) as Parquet.
    """
    import keras
    import numpy as np
    import pandas as pd

    images = to_image_set(pd.read_parquet(rows_path))
    model = keras.saving.load_model(model_path)
    probabilities = model.predict(images.images, batch_size=batch_size, verbose=0)
    labels = probabilities.argmax(axis=1)
    pd.DataFrame({"ImageId": images.source_rows, "Label": labels}).to_csv(
        submission_path, index=False
    )
    columns = [f"prob_{digit}" for digit in range(probabilities.shape[1])]
    table = pd.DataFrame(probabilities.astype(np.float32), columns=columns)
    table.insert(0, "ImageId", images.source_rows)
    table.to_parquet(probabilities_path, index=False)
    counts = np.bincount(labels, minlength=probabilities.shape[1])
    return PredictionSummary(
        rows=len(labels), predicted_class_counts={str(d): int(n) for d, n in enumerate(counts)}
    )


def component(image: str):
    """Build the KFP component that runs :func:`batch_predict` in ``image``."""
    from kfp import dsl
    from kfp.dsl import Dataset, Input, Model, Output

    @dsl.component(base_image=image, install_kfp_package=False)
    def batch_predict(
        model: Input[Model],
        rows: Input[Dataset],
        model_version: str,
        submission: Output[Dataset],
        probabilities: Output[Dataset],
    ):
        """Kaggle submission (ImageId,Label CSV) plus per-row probabilities (Parquet)."""
        from pathlib import Path

        from digits.artifacts import MODEL_FILENAME
        from digits.components.batch_predict import batch_predict as run

        summary = run(
            Path(model.path) / MODEL_FILENAME,
            Path(rows.path),
            Path(submission.path),
            Path(probabilities.path),
        )
        for artifact in (submission, probabilities):
            artifact.metadata.update({"rows": summary.rows, "model_version": model_version})

    return batch_predict
