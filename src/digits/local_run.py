"""Run the whole pipeline on this machine through kfp.local, then summarize it."""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
import warnings
from dataclasses import asdict, dataclass, field
from importlib.resources import files
from pathlib import Path

from digits.config import TrainConfig
from digits.errors import DockerRunError


def sample_data(name: str) -> Path:
    """Path of a bundled sample file: train.csv.gz, test.csv.gz or test_labels.csv.gz."""
    return Path(str(files("digits") / "sample_data" / name))


@dataclass(frozen=True)
class DockerSettings:
    """Run every task in its container image instead (kfp.local.DockerRunner)."""

    image: str | None = None  # default: the pipeline's CPU image, ClusterSettings.image
    train_image: str | None = None  # default: the GPU image with ``gpus``, else ``image``
    gpus: str | None = None  # "all" or a count: GPUs passed through to the containers


@dataclass(frozen=True)
class LocalRunSettings:
    """Inputs of one local run; the defaults run the bundled sample end to end."""

    train_data: str = field(default_factory=lambda: str(sample_data("train.csv.gz")))
    predict_data: str = field(default_factory=lambda: str(sample_data("test.csv.gz")))
    predict_labels: str | None = field(
        default_factory=lambda: str(sample_data("test_labels.csv.gz"))
    )
    output_dir: Path = Path("local_runs")
    mlflow_uri: str | None = None  # default: a SQLite store inside output_dir
    experiment_name: str = "digits"
    registered_model_name: str = "digits-cnn"
    max_rejected_fraction: float = 0.0
    validation_fraction: float = 0.1
    split_seed: int = 2
    train: TrainConfig = TrainConfig()
    docker: DockerSettings | None = None  # None: every task runs in this Python environment


@dataclass(frozen=True)
class RunSummary:
    """What a local run reports; `digits run --summary-json` writes exactly this."""

    accuracy: float | None
    validation_accuracy: float
    mlflow_run_id: str
    model_name: str
    model_version: str
    model_path: str
    predictions_path: str
    mlflow_tracking_uri: str
    mlflow_ui_command: str
    pipeline_root: str
    seconds: float

    def write_json(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(asdict(self), indent=2))


def local_mlflow_store(output_dir: Path) -> tuple[str, str]:
    """(tracking URI, artifact location) of the embedded default store: SQLite plus a folder."""
    root = output_dir.resolve() / "mlflow"
    root.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{root / 'mlflow.db'}", (root / "artifacts").as_uri()


def run_locally(settings: LocalRunSettings) -> RunSummary:
    """Run every pipeline task in this Python environment (kfp.local SubprocessRunner)."""
    from kfp import local

    from digits.artifacts import MODEL_FILENAME, Evaluation
    from digits.pipelines.digits_pipeline import ClusterSettings, build_pipeline

    started = time.perf_counter()
    pipeline_root = settings.output_dir.resolve() / "pipeline_root"
    if settings.mlflow_uri:
        tracking_uri, artifact_location = settings.mlflow_uri, ""
    else:
        tracking_uri, artifact_location = local_mlflow_store(settings.output_dir)

    # Task subprocesses inherit this: TensorFlow's C++ start-up chatter buries the task logs.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if settings.docker is None:
        runner, cluster = local.SubprocessRunner(use_venv=False), ClusterSettings()
    else:
        inputs = [settings.train_data, settings.predict_data]
        if tracking_uri.startswith("sqlite:///"):
            inputs.append(str(settings.output_dir.resolve() / "mlflow"))
        runner, cluster = docker_runner(settings.docker, inputs)
    local.init(runner=runner, pipeline_root=str(pipeline_root), raise_on_error=True)
    with warnings.catch_warnings():
        # kfp.local ignores images, resources, GPU placement and display names by design; its
        # per-task warnings about them would bury the task logs.
        warnings.filterwarnings("ignore", message=".*non-Python base image.*")
        warnings.filterwarnings("ignore", message=".*no effect in the current local runner.*")
        run = build_pipeline(cluster)(
            train_data_uri=settings.train_data,
            predict_data_uri=settings.predict_data,
            mlflow_tracking_uri=tracking_uri,
            mlflow_artifact_location=artifact_location,
            experiment_name=settings.experiment_name,
            registered_model_name=settings.registered_model_name,
            max_rejected_fraction=settings.max_rejected_fraction,
            validation_fraction=settings.validation_fraction,
            split_seed=settings.split_seed,
            **asdict(settings.train),
        )
    outputs = run.outputs
    # Kaggle wants a .csv; the artifact itself stays in the pipeline root.
    submission = settings.output_dir / "submission.csv"
    shutil.copyfile(outputs["submission"].path, submission)
    model_dir = Path(outputs["model"].path)
    evaluation = Evaluation.read(Path(outputs["evaluation"].path))
    return RunSummary(
        accuracy=held_out_accuracy(submission, settings.predict_labels)
        if settings.predict_labels
        else None,
        validation_accuracy=evaluation.accuracy,
        mlflow_run_id=outputs["mlflow_run_id"],
        model_name=settings.registered_model_name,
        model_version=outputs["model_version"],
        model_path=str(model_dir / MODEL_FILENAME),
        predictions_path=str(submission.resolve()),
        mlflow_tracking_uri=tracking_uri,
        mlflow_ui_command=f"{_mlflow_executable()} ui --backend-store-uri {tracking_uri}",
        pipeline_root=str(pipeline_root),
        seconds=round(time.perf_counter() - started, 1),
    )


def docker_runner(settings: DockerSettings, paths: list[str]):
    """(kfp.local.DockerRunner, ClusterSettings naming its images) after checking both exist.

    DockerRunner bind-mounts only the pipeline root; the local files among ``paths`` (inputs,
    the default MLflow store) are mounted at the same paths so the tasks' arguments stay valid.
    kfp 2.17 gives every container the same arguments, so ``gpus`` reaches all of them; only
    the train image carries CUDA.
    """
    import docker
    from docker.types import DeviceRequest, Mount
    from kfp import local

    from digits.pipelines.digits_pipeline import ClusterSettings

    defaults = ClusterSettings()
    image = settings.image or defaults.image
    train_image = settings.train_image or (defaults.train_image if settings.gpus else image)
    try:
        client = docker.from_env()
        client.ping()
    except docker.errors.DockerException as error:
        raise DockerRunError(
            f"--runner docker: no Docker daemon answers ({error}); start dockerd "
            "(bash scripts/start_docker.sh as root) or set DOCKER_HOST"
        ) from None
    device_requests = []
    if settings.gpus:
        count = -1 if settings.gpus == "all" else int(settings.gpus)
        device_requests = [DeviceRequest(count=count, capabilities=[["gpu"]])]
    try:
        for name in dict.fromkeys((image, train_image)):
            try:
                client.images.get(name)
            except docker.errors.ImageNotFound:
                raise DockerRunError(
                    f"--runner docker: image {name} is not in the local Docker daemon; "
                    "build it with scripts/build_images.sh"
                ) from None
        if device_requests:
            # Without NVIDIA's toolkit every task would fail to start; say so once, up front.
            probe = client.containers.create(train_image, "true", device_requests=device_requests)
            try:
                probe.start()
            except docker.errors.APIError as error:
                raise DockerRunError(
                    f"--gpus {settings.gpus}: Docker cannot pass GPUs to containers here "
                    f"({error.explanation}); install the NVIDIA Container Toolkit, or leave out "
                    "--gpus"
                ) from None
            finally:
                probe.remove(force=True)
    finally:
        client.close()
    mounts = [
        Mount(target=str(path), source=str(path), type="bind")
        for path in (Path(p).resolve() for p in paths if "://" not in p)
        if path.exists()
    ]
    run_args: dict = {
        # Host networking reaches a tracking server on 127.0.0.1; the host's uid owns the
        # mounted pipeline root, so the tasks run as that uid.
        "network_mode": "host",
        "user": f"{os.getuid()}:{os.getgid()}",
        "mounts": mounts,
        # As for the subprocesses: TensorFlow's C++ start-up chatter buries the task logs.
        "environment": {"TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2")},
    }
    if device_requests:
        run_args["device_requests"] = device_requests
    return local.DockerRunner(**run_args), ClusterSettings(image=image, train_image=train_image)


def held_out_accuracy(submission_path: Path, labels_path: str) -> float:
    """Share of submission rows whose Label matches the held-out ``ImageId,Label`` file."""
    import pandas as pd

    submission = pd.read_csv(submission_path)
    labels = pd.read_csv(labels_path)
    joined = labels.merge(submission, on="ImageId", how="left", suffixes=("_true", "_pred"))
    # A row missing from the submission counts as wrong, as Kaggle would score it.
    return float((joined["Label_true"] == joined["Label_pred"]).mean())


def _mlflow_executable() -> str:
    """The `mlflow` beside this Python (the project's venv), so the printed command works as is."""
    beside = Path(sys.executable).with_name("mlflow")
    return str(beside) if beside.exists() else "mlflow"
