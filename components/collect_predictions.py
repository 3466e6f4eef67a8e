"""Step 8b: join the prediction shards into Kaggle's single submission, ImageIds intact."""

from dataclasses import dataclass
from pathlib import Path

from digits.errors import PredictionError

# Rows read and written per step: submission rows are two integers, probability rows eleven
# numbers, so a chunk stays a few MiB.
CHUNK_ROWS = 65_536


@dataclass(frozen=True)
class CollectedPredictions:
    rows: int
    shards: int
    predicted_with: str


def collect_predictions(
    submission_paths: list[Path],
    probability_paths: list[Path],
    submission_path: Path,
    probabilities_path: Path,
    predicted_with: list[str] | None = None,
    chunk_rows: int = CHUNK_ROWS,
) -> CollectedPredictions:
    """Join the shards in ImageId order; every ImageId must appear exactly once.

    Each shard holds one contiguous slice of the rows in source order, so the shards are
    ordered by their first ImageId and streamed through ``chunk_rows`` rows at a time: memory
    stays bounded whatever the row count, as in each shard.

    Raises:
        PredictionError: an ImageId is in two shards (or a shard is out of order), or the
            shards used different models.
    """
    models = sorted(set(predicted_with or []))
    if len(models) > 1:
        raise PredictionError(
            f"prediction shards used different models ({', '.join(models)}): the champion moved "
            "during prediction; pass predict_model_uri pinned to one version and rerun"
        )
    order = sorted(range(len(submission_paths)), key=lambda i: _first_image_id(submission_paths[i]))
    rows = _join_csv([submission_paths[i] for i in order], submission_path, chunk_rows)
    _join_parquet([probability_paths[i] for i in order], probabilities_path, chunk_rows)
    return CollectedPredictions(
        rows=rows, shards=len(submission_paths), predicted_with=models[0] if models else ""
    )


class _InOrder:
    """Checks that ImageIds arrive strictly increasing across every chunk of every shard."""

    def __init__(self) -> None:
        self.last = 0

    def check(self, image_ids) -> None:
        import numpy as np

        if not len(image_ids):
            return
        steps = np.diff(np.concatenate([[self.last], image_ids]))
        bad = np.flatnonzero(steps <= 0)
        if len(bad):
            raise PredictionError(
                f"ImageId {image_ids[bad[0]]} is in more than one prediction shard; "
                "rerun the prediction with the same predict_shards for every shard"
            )
        self.last = int(image_ids[-1])


def _first_image_id(path: Path) -> float:
    import pandas as pd

    first = pd.read_csv(path, nrows=1)["ImageId"]
    return float(first.iloc[0]) if len(first) else float("inf")  # empty shards last


def _join_csv(paths: list[Path], output: Path, chunk_rows: int) -> int:
    import pandas as pd

    in_order, rows = _InOrder(), 0
    with open(output, "w", newline="") as out:
        for index, path in enumerate(paths):
            for chunk in pd.read_csv(path, chunksize=chunk_rows):
                in_order.check(chunk["ImageId"].to_numpy())
                chunk.to_csv(out, index=False, header=index == 0 and rows == 0)
                rows += len(chunk)
        if rows == 0 and paths:  # only empty shards: still the header
            pd.read_csv(paths[0], nrows=0).to_csv(out, index=False)
    return rows


def _join_parquet(paths: list[Path], output: Path, chunk_rows: int) -> None:
    import pyarrow.parquet as pq

    in_order, writer = _InOrder(), None
    try:
        for path in paths:
            shard = pq.ParquetFile(path)
            writer = writer or pq.ParquetWriter(output, shard.schema_arrow)
            for batch in shard.iter_batches(batch_size=chunk_rows):
                in_order.check(batch.column("ImageId").to_numpy())
                writer.write_batch(batch)
    finally:
        if writer is not None:
            writer.close()


def component(image: str):
    """Build the KFP component that runs :func:`collect_predictions` in ``image``."""
    from typing import List  # noqa: UP035  (KFP reads typing.List)

    from kfp import dsl
    from kfp.dsl import Dataset, Input, Output

    @dsl.component(base_image=image, install_kfp_package=False)
    def collect_predictions(
        submissions: Input[List[Dataset]],  # noqa: UP006
        probability_shards: Input[List[Dataset]],  # noqa: UP006
        submission: Output[Dataset],
        probabilities: Output[Dataset],
    ) -> str:
        """One submission.csv and one probabilities Parquet from all shards; returns the model."""
        from dataclasses import asdict
        from pathlib import Path

        from digits.components.collect_predictions import collect_predictions as run

        collected = run(
            [Path(shard.path) for shard in submissions],
            [Path(shard.path) for shard in probability_shards],
            Path(submission.path),
            Path(probabilities.path),
            predicted_with=[shard.metadata.get("predicted_with", "") for shard in submissions],
        )
        for artifact in (submission, probabilities):
            artifact.metadata.update(asdict(collected))
        return collected.predicted_with

    return collect_predictions
