"""Step 6: log the run to MLflow and register the model as a new version; safe to retry."""

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from digits.errors import RegistrationError

# Ties an MLflow run and model version to the KFP run that made them: a retried task finds
# its earlier work through it instead of registering a second version.
PIPELINE_RUN_TAG = "kfp_pipeline_run_id"
# Set once params and metrics are logged, so a retry does not log them twice.
LOGGED_TAG = "digits_metrics_logged"
MODEL_ARTIFACT = "model"


@dataclass(frozen=True)
class RunRecord:
    """What one pipeline run produced, ready to log."""

    model_dir: Path
    history_path: Path
    evaluation_path: Path
    pipeline_run_id: str
    pipeline_run_name: str = ""
    data_params: dict[str, str | int | float] = field(default_factory=dict)


@dataclass(frozen=True)
class Registration:
    run_id: str
    model_name: str
    model_version: str
    model_uri: str

    @classmethod
    def of(cls, version) -> "Registration":
        """From an MLflow ModelVersion."""
        return cls(
            run_id=version.run_id,
            model_name=version.name,
            model_version=str(version.version),
            model_uri=f"models:/{version.name}/{version.version}",
        )


def register_model(
    record: RunRecord,
    tracking_uri: str,
    experiment_name: str,
    registered_model_name: str,
    artifact_location: str = "",
) -> Registration:
    """Log params, per-epoch and evaluation metrics and the model; register a model version.

    A second call for the same ``record.pipeline_run_id`` reuses the MLflow run and returns
    the version the first call registered. ``artifact_location`` only matters when the
    experiment is created (a local store); a tracking server otherwise decides.
    """
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient(tracking_uri)
    try:
        experiment_id = _experiment_id(client, experiment_name, artifact_location)
        runs = client.search_runs(
            [experiment_id], f"tags.{PIPELINE_RUN_TAG} = '{record.pipeline_run_id}'"
        )
        run = runs[0] if runs else None
        if run is not None:
            earlier = _find_version(client, registered_model_name, record.pipeline_run_id)
            if earlier is not None:
                return earlier
        return _log_and_register(client, record, experiment_id, run, registered_model_name)
    except MlflowException as error:
        raise RegistrationError(
            f"MLflow at {tracking_uri}: {error.message.splitlines()[0]}; check mlflow_tracking_uri "
            "and that the tracking server is reachable, then retry the task"
        ) from error


def _experiment_id(client, name: str, artifact_location: str) -> str:
    from mlflow.exceptions import MlflowException

    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    try:
        return client.create_experiment(name, artifact_location=artifact_location or None)
    except MlflowException:  # created by a concurrent run in the meantime
        return client.get_experiment_by_name(name).experiment_id


def _find_version(client, model_name: str, pipeline_run_id: str) -> Registration | None:
    versions = client.search_model_versions(
        f"name = '{model_name}' and tags.{PIPELINE_RUN_TAG} = '{pipeline_run_id}'"
    )
    return Registration.of(versions[0]) if versions else None


def _log_and_register(client, record: RunRecord, experiment_id: str, run, model_name: str):
    import keras
    import mlflow
    import numpy as np
    from mlflow.models import infer_signature

    from digits.artifacts import MODEL_FILENAME, TRAINING_FILENAME, Evaluation

    training = json.loads((record.model_dir / TRAINING_FILENAME).read_text())
    history = json.loads(record.history_path.read_text())
    evaluation = Evaluation.read(record.evaluation_path)
    model = keras.saving.load_model(record.model_dir / MODEL_FILENAME)

    if run is None:
        run = client.create_run(
            experiment_id,
            run_name=record.pipeline_run_name or None,
            tags={PIPELINE_RUN_TAG: record.pipeline_run_id},
        )
    run_id = run.info.run_id
    if run.data.tags.get(LOGGED_TAG) != "true":
        _log_run_data(client, run_id, training, history, evaluation, record.data_params)

    mlflow.set_tracking_uri(client.tracking_uri)  # log_model only has the fluent API
    with mlflow.start_run(run_id=run_id):  # ends the run (FINISHED) on exit
        example = np.zeros((1, *model.input_shape[1:]), dtype=np.float32)
        model_info = mlflow.keras.log_model(
            model,
            name=MODEL_ARTIFACT,
            signature=infer_signature(example, model.predict(example, verbose=0)),
            pip_requirements=_pip_requirements(training["result"]["backend"]),
        )
    version = mlflow.register_model(
        model_info.model_uri, model_name, tags={PIPELINE_RUN_TAG: record.pipeline_run_id}
    )
    client.update_model_version(
        model_name,
        version.version,
        description=f"validation accuracy {evaluation.accuracy:.4f}; "
        f"KFP run {record.pipeline_run_name or record.pipeline_run_id}",
    )
    return Registration.of(version)


def _log_run_data(client, run_id, training, history, evaluation, data_params) -> None:
    import time

    from mlflow.entities import Metric, Param, RunTag

    now = int(time.time() * 1000)
    params = {**training["config"], **data_params}
    metrics = [
        Metric(name, value, now, epoch["epoch"])
        for epoch in history
        for name, value in epoch.items()
        if name != "epoch"
    ]
    summary = {
        **{f"eval_{name}": value for name, value in evaluation.scalar_metrics().items()},
        "train_seconds": training["result"]["seconds"],
        "epochs_run": training["result"]["epochs_run"],
    }
    metrics += [Metric(name, float(value), now, 0) for name, value in summary.items()]
    # log_batch takes at most 1000 metrics and 100 params per call.
    for start in range(0, len(metrics), 1000):
        client.log_batch(run_id, metrics=metrics[start : start + 1000])
    client.log_batch(
        run_id,
        params=[Param(key, str(value)) for key, value in params.items()],
        tags=[RunTag("keras_backend", training["result"]["backend"])],
    )
    client.log_dict(run_id, asdict(evaluation), "evaluation.json")
    client.log_dict(run_id, history, "history.json")
    client.log_figure(run_id, _confusion_figure(evaluation), "confusion_matrix.png")
    client.set_tag(run_id, LOGGED_TAG, "true")


def _confusion_figure(evaluation):
    """The validation confusion matrix as a figure for the MLflow UI."""
    import numpy as np
    from matplotlib.figure import Figure
    from sklearn.metrics import ConfusionMatrixDisplay

    figure = Figure(figsize=(6, 6), layout="constrained")
    axes = figure.subplots()
    ConfusionMatrixDisplay(np.array(evaluation.confusion_matrix)).plot(ax=axes, colorbar=False)
    axes.set_title(f"validation accuracy {evaluation.accuracy:.4f}")
    return figure


def _pip_requirements(backend: str) -> list[str]:
    """Pin the exact Keras and backend versions that trained the model, for serving."""
    from importlib.metadata import PackageNotFoundError, version

    requirements = [f"keras=={version('keras')}"]
    candidates = {"tensorflow": ["tensorflow", "tensorflow-cpu"], "torch": ["torch"]}
    for package in candidates.get(backend, [backend]):
        try:
            requirements.append(f"{package}=={version(package).split('+')[0]}")
            break
        except PackageNotFoundError:
            continue
    return requirements


def component(image: str):
    """Build the KFP component that runs :func:`register_model` in ``image``."""
    from typing import NamedTuple

    from kfp import dsl
    from kfp.dsl import Artifact, Input, Model

    @dsl.component(base_image=image, install_kfp_package=False)
    def register_model(
        model: Input[Model],
        history: Input[Artifact],
        evaluation: Input[Artifact],
        mlflow_tracking_uri: str,
        experiment_name: str,
        registered_model_name: str,
        mlflow_artifact_location: str,
        train_data_uri: str,
        validation_fraction: float,
        split_seed: int,
        pipeline_run_id: str,
        pipeline_run_name: str,
    ) -> NamedTuple("Outputs", mlflow_run_id=str, model_version=str, model_uri=str):
        """Log to MLflow and register a model version (a retry returns the same version)."""
        from collections import namedtuple
        from pathlib import Path

        from digits.components.register_model import RunRecord
        from digits.components.register_model import register_model as run

        record = RunRecord(
            model_dir=Path(model.path),
            history_path=Path(history.path),
            evaluation_path=Path(evaluation.path),
            pipeline_run_id=pipeline_run_id,
            pipeline_run_name=pipeline_run_name,
            data_params={
                "train_data_uri": train_data_uri,
                "validation_fraction": validation_fraction,
                "split_seed": split_seed,
            },
        )
        registration = run(
            record,
            tracking_uri=mlflow_tracking_uri,
            experiment_name=experiment_name,
            registered_model_name=registered_model_name,
            artifact_location=mlflow_artifact_location,
        )
        outputs = namedtuple("Outputs", ["mlflow_run_id", "model_version", "model_uri"])
        return outputs(registration.run_id, registration.model_version, registration.model_uri)

    return register_model
