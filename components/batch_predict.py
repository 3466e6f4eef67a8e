"""Step 8: score validated unlabeled rows with the registry's champion (or any model URI).

With ``shard_count`` > 1 the pipeline runs one task per shard (dsl.ParallelFor); each scores its
contiguous slice of the rows and ``collect_predictions`` joins them into one submission.
"""

from dataclasses import dataclass
from pathlib import Path

from digits.errors import PredictionError

SUBMISSION_COLUMNS = ["ImageId", "Label"]


@dataclass(frozen=True)
class ResolvedModel:
    """A model URI pinned to what it pointed at when prediction started."""

    uri: str  # what to load: pinned to a version when the URI named an alias
    requested: str
    name: str = ""
    version: str = ""

    @property
    def description(self) -> str:
        if self.version:
            return f"{self.name} v{self.version} ({self.requested})"
        return self.requested


@dataclass(frozen=True)
class PredictionSummary:
    rows: int
    predicted_with: str
    model_version: str
    shard_index: int
    shard_count: int
    predicted_class_counts: dict[str, int]


def champion_uri(registered_model_name: str) -> str:
    return f"models:/{registered_model_name}@champion"


def resolve_model(client, model_uri: str) -> ResolvedModel:
    """Pin ``models:/name@alias`` and ``models:/name/N`` to a version, or say what exists.

    Raises:
        PredictionError: the registered model, version or alias does not exist; the message
            lists the registered models and their aliases.
    """
    from mlflow.exceptions import MlflowException

    if not model_uri.startswith("models:/"):
        return ResolvedModel(uri=model_uri, requested=model_uri)
    reference = model_uri.removeprefix("models:/")
    name, at, alias = reference.partition("@")
    if not at:
        name, _, number = reference.rpartition("/")
        if not name or not number.isdigit():  # models:/<logged model id>
            return ResolvedModel(uri=model_uri, requested=model_uri)
    try:
        if at:
            version = client.get_model_version_by_alias(name, alias)
        else:
            version = client.get_model_version(name, number)
    except MlflowException as error:
        if error.error_code not in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            raise
        raise PredictionError(
            f"{model_uri}: no such registered model, version or alias; the registry has "
            f"{_registry_contents(client)}. Pass predict_model_uri naming one of them, or run "
            "the training pipeline first so a champion exists"
        ) from None
    return ResolvedModel(
        uri=f"models:/{version.name}/{version.version}",
        requested=model_uri,
        name=version.name,
        version=str(version.version),
    )


def _registry_contents(client) -> str:
    """'digits-cnn (champion=v3, challenger=v4), other (no aliases)' or 'no registered models'."""
    # Search results leave `aliases` empty: ask for each model.
    names = [model.name for model in client.search_registered_models(max_results=50)]
    if not names:
        return "no registered models"
    listed = []
    for name in names:
        aliases = client.get_registered_model(name).aliases or {}
        described = ", ".join(f"{alias}=v{version}" for alias, version in sorted(aliases.items()))
        listed.append(f"{name} ({described or 'no aliases'})")
    return ", ".join(listed)


def batch_predict(
    rows_path: Path,
    submission_path: Path,
    probabilities_path: Path,
    model_uri: str,
    tracking_uri: str,
    shard_index: int = 0,
    shard_count: int = 1,
    batch_size: int = 512,
) -> PredictionSummary:
    """Predict this shard's rows; ImageId is the row's 1-based position in the source CSV.

    Writes ``ImageId,Label`` as CSV (what Kaggle accepts) and the per-row class probabilities
    (``ImageId, prob_0..prob_9``) as Parquet. ``model_uri`` is an MLflow model URI
    (``models:/name@champion``, ``models:/name/3``, ``runs:/<id>/model``) or a local model
    artifact directory.
    """
    import mlflow
    import numpy as np
    import pandas as pd
    import pyarrow.parquet as pq

    from digits.data import to_image_set
    from digits.predictor import load_predictor
    from digits.registry import load_logged_predictor

    if not 0 <= shard_index < shard_count:
        raise PredictionError(f"shard {shard_index} of {shard_count}: expected 0 <= index < count")
    if Path(model_uri).is_dir():
        resolved = ResolvedModel(uri=model_uri, requested=model_uri)
        predict = load_predictor(Path(model_uri), batch_size)
    else:
        resolved = resolve_model(mlflow.MlflowClient(tracking_uri), model_uri)
        predict = load_logged_predictor(resolved.uri, tracking_uri, batch_size)

    table = pq.read_table(rows_path)
    start = table.num_rows * shard_index // shard_count
    end = table.num_rows * (shard_index + 1) // shard_count
    images = to_image_set(table.slice(start, end - start).to_pandas())
    probabilities = predict(images.images) if len(images) else np.zeros((0, 10), dtype=np.float32)
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
        rows=len(labels),
        predicted_with=resolved.description,
        model_version=resolved.version,
        shard_index=shard_index,
        shard_count=shard_count,
        predicted_class_counts={str(d): int(n) for d, n in enumerate(counts)},
    )


def component(image: str):
    """Build the KFP component that runs :func:`batch_predict` in ``image``."""
    from kfp import dsl
    from kfp.dsl import Dataset, Input, Output

    @dsl.component(base_image=image, install_kfp_package=False)
    def batch_predict(
        rows: Input[Dataset],
        mlflow_tracking_uri: str,
        registered_model_name: str,
        predict_model_uri: str,
        champion_version: str,
        shard_index: int,
        shard_count: int,
        submission: Output[Dataset],
        probabilities: Output[Dataset],
    ):
        """Kaggle submission (ImageId,Label CSV) plus per-row probabilities (Parquet), one shard.

        ``champion_version`` orders this task after the promotion gate; the model is looked up
        by ``predict_model_uri`` (default: the registered model's champion) when the task runs.
        """
        from dataclasses import asdict
        from pathlib import Path

        from digits.components.batch_predict import batch_predict as run
        from digits.components.batch_predict import champion_uri

        summary = run(
            Path(rows.path),
            Path(submission.path),
            Path(probabilities.path),
            model_uri=predict_model_uri or champion_uri(registered_model_name),
            tracking_uri=mlflow_tracking_uri,
            shard_index=shard_index,
            shard_count=shard_count,
        )
        for artifact in (submission, probabilities):
            artifact.metadata.update(asdict(summary))

    return batch_predict
