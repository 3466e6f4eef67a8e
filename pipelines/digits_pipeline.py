"""The digit-recognition DAG.

ingest_csv -> validate_data -> normalize_and_split -> train_model (GPU pool) -> evaluate_model
-> register_model (MLflow) -> batch_predict, with the unlabeled CSV ingested and validated
alongside. Placement, retries and caching are set here; the components hold only logic.
"""

from dataclasses import dataclass, field
from pathlib import Path

from digits import __version__
from digits.config import DEFAULT_RECIPE

PIPELINE_NAME = "digits-recognizer"
DEFAULT_MLFLOW_URI = "http://mlflow.mlflow.svc.cluster.local:5000"


@dataclass(frozen=True)
class GpuToleration:
    """Lets the training pod onto tainted GPU nodes (GKE and AKS taint them like this)."""

    key: str = "nvidia.com/gpu"
    operator: str = "Exists"
    value: str | None = None
    effect: str | None = "NoSchedule"


@dataclass(frozen=True)
class ClusterSettings:
    """Compile-time settings: images, and where and how big the training task runs."""

    image: str = f"digits-pipeline:{__version__}"
    train_image: str = f"digits-pipeline:{__version__}-gpu"
    # Set on GPU nodes by NVIDIA's GPU feature discovery (GPU operator).
    gpu_node_selector: dict[str, str] = field(
        default_factory=lambda: {"nvidia.com/gpu.present": "true"}
    )
    gpu_tolerations: tuple[GpuToleration, ...] = (GpuToleration(),)
    gpu_count: int = 1
    train_cpu: str = "4"
    train_memory: str = "16G"
    step_memory: str = "4G"
    # With checkpoint_root set, each retry resumes after the last finished epoch, so a
    # preemption costs at most one epoch; size retries to the preemptions a run may meet.
    train_retries: int = 3
    train_retry_backoff: str = "30s"


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
        for task in (raw, checked):
            task.set_memory_request(settings.step_memory)
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
        recipe: str = DEFAULT_RECIPE,
        epochs: int = 0,
        batch_size: int = 0,
        seed: int = 2,
        checkpoint_root: str = "",
        checkpoint_dir: str = "",
    ) -> PipelineOutputs:
        train_rows = validated_rows(train_data_uri, "train.csv", True, max_rejected_fraction)
        split = normalize_and_split_op(
            rows=train_rows.outputs["valid"],
            validation_fraction=validation_fraction,
            seed=split_seed,
        )
        trained = train_model_op(
            train=split.outputs["train"],
            validation=split.outputs["validation"],
            recipe=recipe,
            epochs=epochs,
            batch_size=batch_size,
            seed=seed,
            checkpoint_root=checkpoint_root,
            checkpoint_dir=checkpoint_dir,
            pipeline_run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
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

        predict_rows = validated_rows(predict_data_uri, "test.csv", False, max_rejected_fraction)
        predictions = batch_predict_op(
            model=trained.outputs["model"],
            rows=predict_rows.outputs["valid"],
            model_version=registration.outputs["model_version"],
        )

        for task in (split, evaluation, registration, predictions):
            task.set_memory_request(settings.step_memory)

        return PipelineOutputs(
            submission=predictions.outputs["submission"],
            model=trained.outputs["model"],
            evaluation=evaluation.outputs["report"],
            mlflow_run_id=registration.outputs["mlflow_run_id"],
            model_version=registration.outputs["model_version"],
        )

    return digits_pipeline


def place_on_gpu_pool(task, settings: ClusterSettings) -> None:
    """Request GPUs and pin the task to the GPU node pool; locally these are ignored."""
    from kfp import kubernetes

    task.set_accelerator_type("nvidia.com/gpu").set_accelerator_limit(settings.gpu_count)
    task.set_cpu_request(settings.train_cpu).set_memory_request(settings.train_memory)
    # A preempted GPU node kills the pod; retrying reschedules it and resumes the checkpoint.
    task.set_retry(
        num_retries=settings.train_retries,
        backoff_duration=settings.train_retry_backoff,
        backoff_factor=2.0,
        backoff_max_duration="600s",
    )
    for key, value in settings.gpu_node_selector.items():
        kubernetes.add_node_selector(task, label_key=key, label_value=value)
    for toleration in settings.gpu_tolerations:
        kubernetes.add_toleration(
            task,
            key=toleration.key,
            operator=toleration.operator,
            value=toleration.value,
            effect=toleration.effect,
        )


def compile_pipeline(output: Path, settings: ClusterSettings | None = None) -> Path:
    """Write the KFP v2 IR YAML for ``settings`` to ``output``."""
    from kfp import compiler

    compiler.Compiler().compile(build_pipeline(settings), package_path=str(output))
    return output
