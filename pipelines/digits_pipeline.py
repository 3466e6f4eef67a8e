"""The digit-recognition DAG.

ingest_csv -> validate_data -> normalize_and_split -> train_model (GPU pool) -> evaluate_model
-> register_model (MLflow) -> batch_predict, with the unlabeled CSV ingested and validated
alongside, and a CPU-only classical baseline (train_baseline -> evaluate_model) beside the CNN.
Placement, retries and caching are set here; the components hold only logic.
"""

from dataclasses import dataclass, field
from pathlib import Path

from digits import __version__
from digits.config import TrainConfig
from digits.errors import SettingsError

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
    train_retries: int = 2
    baseline_cpu: str = "2"

    def __post_init__(self) -> None:
        if self.gpu_count > 1:
            raise SettingsError(
                f"{self.gpu_count} GPUs requested, but the train step trains on one device, so "
                f"{self.gpu_count - 1} would sit idle: compile with --gpus 1 (a bigger GPU is "
                "the way to go faster)."
            )


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
        train_baseline,
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
    train_baseline_op = train_baseline.component(image)
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
        train_baseline: bool = True,
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

        # The classical baseline, on CPU beside the CNN, scored by the same step on the same rows.
        # KFP cannot return outputs of tasks under dsl.If as pipeline outputs (only dsl.OneOf
        # over If/Else branches); steps that use them go inside this block.
        with dsl.If(train_baseline == True, name="baseline"):  # noqa: E712 (a KFP condition)
            baseline = train_baseline_op(train=split.outputs["train"], seed=seed)
            baseline.set_display_name("train baseline").set_cpu_request(settings.baseline_cpu)
            baseline_evaluation = evaluate_model_op(
                model=baseline.outputs["model"], validation=split.outputs["validation"]
            ).set_display_name("evaluate baseline")
            for task in (baseline, baseline_evaluation):
                task.set_memory_request(settings.step_memory)

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
    # A preempted GPU node kills the pod; retrying reschedules it.
    task.set_retry(num_retries=settings.train_retries, backoff_duration="60s")
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
