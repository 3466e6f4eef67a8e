"""Step 8b: join the prediction shards into Kaggle's single submission, ImageIds intact."""

from dataclasses import dataclass
from pathlib import Path

from digits.errors import PredictionError


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
) -> CollectedPredictions:
    """Concatenate the shards ordered by ImageId; every ImageId must appear exactly once.

    Raises:
        PredictionError: an ImageId is in two shards, or the shards used different models.
    """
    import pandas as pd

    submission = pd.concat([pd.read_csv(path) for path in submission_paths], ignore_index=True)
    probabilities = pd.concat(
        [pd.read_parquet(path) for path in probability_paths], ignore_index=True
    )
    duplicated = submission["ImageId"][submission["ImageId"].duplicated()]
    if len(duplicated):
        raise PredictionError(
            f"ImageId {duplicated.iloc[0]} is in more than one prediction shard; "
            "rerun the prediction with the same predict_shards for every shard"
        )
    models = sorted(set(predicted_with or []))
    if len(models) > 1:
        raise PredictionError(
            f"prediction shards used different models ({', '.join(models)}): the champion moved "
            "during prediction; pass predict_model_uri pinned to one version and rerun"
        )
    submission.sort_values("ImageId").to_csv(submission_path, index=False)
    probabilities.sort_values("ImageId").to_parquet(probabilities_path, index=False)
    return CollectedPredictions(
        rows=len(submission),
        shards=len(submission_paths),
        predicted_with=models[0] if models else "",
    )


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
