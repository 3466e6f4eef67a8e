"""The digit-recognition DAG.

ingest_csv -> validate_data -> normalize_and_split -> train_model (GPU pool) -> evaluate_model
-> register_model (MLflow) -> batch_predict, with the unlabeled CSV ingested and validated
alongside. Placement, retries, caching and secrets are set here (helpers in ``placement``); the
components hold only logic.
"""

from pathlib import Path

from digits.config import TrainConfig
from digits.pipelines.placement import (
    ClusterSettings,
    GpuToleration,  # noqa: F401  (re-exported: the CLI and tests import it from here)
    place_on_gpu_pool,
    secure_and_size_all_tasks,
    use_mlflow_credentials,
)

PIPELINE_NAME = "digits-recognizer"
DEFAULT_MLFLOW_URI = "http://mlflow.mlflow.svc.cluster.local:5000"


def build_pipeline(settings: ClusterSettings | None = None):
    """Return the ``@dsl.pipeline`` function, with images and GPU placement from ``settings``."""
    from typing import NamedTuple

    from kfp import dsl
    from kfp.dsl import Artifact, Dataset, Model

    from digits.components import (
        batch_predict,
        evaluate_model,
        ingest_csv,
        normalize_and_split,
        register_model,
        train_model,
        validate_data,
    )

    settings = settings or ClusterSettings()
    image, train_image = settings.image, settings.train_image
    defaults = TrainConfig()
    ingest_csv_op = ingest_csv.component(image)
    validate_data_op = validate_data.component(image)
    normalize_and_split_op = normalize_and_split.component(image)
    train_model_op = train_model.component(train_image)
    evaluate_model_op = evaluate_model.component(image)
    register_model_op = register_model.component(image)
    batch_predict_op = batch_predict.component(image)

    def validated_rows(uri, name: str, require_label: bool, max_rejected_fraction):
        """ingest_csv then validate_data for one CSV; the validate task's `valid` rows go on."""
        raw = ingest_csv_op(source_uri=uri).set_display_name(f"ingest {name}")
        checked = validate_data_op(
            dataset=raw.outputs["dataset"],
            source=uri,
            require_label=require_label,
            max_rejected_fraction=max_rejected_fraction,
        ).set_display_name(f"validate {name}")
        # Same input and code give the same rows: reuse them across runs.
        for task in (raw, checked):
            task.set_caching_options(True)
        return checked

    class PipelineOutputs(NamedTuple):
        submission: Dataset
        model: Model
        evaluation: Artifact
        mlflow_run_id: str
        model_version: str

    @dsl.pipeline(
        name=PIPELINE_NAME,
        description="Kaggle Digit Recognizer: validate, train a CNN on GPU, register in MLflow, "
        "predict test.csv.",
    )
    def digits_pipeline(
        train_data_uri: str,
        predict_data_uri: str,
        mlflow_tracking_uri: str = DEFAULT_MLFLOW_URI,
        experiment_name: str = "digits",
        registered_model_name: str = "digits-cnn",
        mlflow_artifact_location: str = "",
        max_rejected_fraction: float = 0.0,
        validation_fraction: float = 0.1,
        split_seed: int = 2,
        epochs: int = defaults.epochs,
        batch_size: int = defaults.batch_size,
        learning_rate: float = defaults.learning_rate,
        rho: float = defaults.rho,
        epsilon: float = defaults.epsilon,
        lr_patience: int = defaults.lr_patience,
        lr_factor: float = defaults.lr_factor,
        min_learning_rate: float = defaults.min_learning_rate,
        augment: bool = defaults.augment,
        seed: int = defaults.seed,
    ) -> PipelineOutputs:
        train_rows = validated_rows(train_data_uri, "train.csv", True, max_rejected_fraction)
        split = normalize_and_split_op(
            rows=train_rows.outputs["valid"],
            validation_fraction=validation_fraction,
            seed=split_seed,
        ).set_caching_options(True)
        trained = train_model_op(
            train=split.outputs["train"],
            validation=split.outputs["validation"],
            epochs=epochs,
            batch_size=batch_size,
            learning_rate=learning_rate,
            rho=rho,
            epsilon=epsilon,
            lr_patience=lr_patience,
            lr_factor=lr_factor,
            min_learning_rate=min_learning_rate,
            augment=augment,
            seed=seed,
        )
        place_on_gpu_pool(trained, settings)
        evaluation = evaluate_model_op(
            model=trained.outputs["model"], validation=split.outputs["validation"]
        )
        registration = register_model_op(
            model=trained.outputs["model"],
            history=trained.outputs["history"],
            evaluation=evaluation.outputs["report"],
            mlflow_tracking_uri=mlflow_tracking_uri,
            experiment_name=experiment_name,
            registered_model_name=registered_model_name,
            mlflow_artifact_location=mlflow_artifact_location,
            train_data_uri=train_data_uri,
            validation_fraction=validation_fraction,
            split_seed=split_seed,
            pipeline_run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
            pipeline_run_name=dsl.PIPELINE_JOB_NAME_PLACEHOLDER,
        )
        # Registration writes to MLflow: never skip it on a cache hit; retry transient errors.
        registration.set_caching_options(False).set_retry(num_retries=3, backoff_duration="30s")
        use_mlflow_credentials(registration, settings)

        predict_rows = validated_rows(predict_data_uri, "test.csv", False, max_rejected_fraction)
        predictions = batch_predict_op(
            model=trained.outputs["model"],
            rows=predict_rows.outputs["valid"],
            model_version=registration.outputs["model_version"],
        )

        secure_and_size_all_tasks(settings)

        return PipelineOutputs(
            submission=predictions.outputs["submission"],
            model=trained.outputs["model"],
            evaluation=evaluation.outputs["report"],
            mlflow_run_id=registration.outputs["mlflow_run_id"],
            model_version=registration.outputs["model_version"],
        )

    return digits_pipeline


def compile_pipeline(output: Path, settings: ClusterSettings | None = None) -> Path:
    """Write the KFP v2 IR YAML for ``settings`` to ``output``."""
    from kfp import compiler

    compiler.Compiler().compile(build_pipeline(settings), package_path=str(output))
    return output
