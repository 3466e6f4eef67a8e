"""Run the whole pipeline on this machine through kfp.local, then summarize it."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import time
import warnings
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from digits.app.docker_runner import DockerSettings
from digits.config import RUN_PARAMETERS
from digits.data import sample_data


@dataclass(frozen=True)
class LocalRunSettings:
    """One local run: pipeline arguments, and what only a local run has.

    ``arguments`` are named as :data:`digits.config.RUN_PARAMETERS`; one left out (or None)
    takes its local default: the bundled sample's CSVs, a SQLite MLflow store inside
    ``output_dir``, else the pipeline's own default.
    """

    arguments: Mapping[str, Any] = field(default_factory=dict)
    # ImageId,Label to score the submission against; default: the bundled labels, when the
    # bundled test.csv is predicted.
    predict_labels: str | None = None
    output_dir: Path = Path("local_runs")
    verbose: bool = False  # stream every task's output instead of the step report
    # kfp.local's task cache under output_dir, keyed as a cluster keys it: the data steps of a
    # rerun on unchanged files are reused; changed content behind the same path is read again.
    cache: bool = True
    docker: DockerSettings | None = None  # None: every task runs in this Python environment
    # A sweep's trials training at once; locally 1, as each one uses every core.
    trial_parallelism: int = 1

    def __post_init__(self) -> None:
        unknown = sorted(set(self.arguments) - {p.name for p in RUN_PARAMETERS})
        if unknown:
            raise ValueError(f"not pipeline parameters: {', '.join(unknown)}")

    @property
    def uses_local_store(self) -> bool:
        return not self.arguments.get("mlflow_tracking_uri")

    def pipeline_arguments(self) -> dict[str, Any]:
        """Every pipeline parameter's value for this run."""
        given = {name: value for name, value in self.arguments.items() if value is not None}
        arguments = {p.name: p.default for p in RUN_PARAMETERS if not p.required} | given
        arguments.setdefault("train_data_uri", str(sample_data("train.csv.gz")))
        arguments.setdefault("predict_data_uri", str(sample_data("test.csv.gz")))
        if self.uses_local_store:
            tracking_uri, artifact_location = local_mlflow_store(self.output_dir)
            arguments["mlflow_tracking_uri"] = tracking_uri
            arguments["mlflow_artifact_location"] = artifact_location
        if arguments["checkpoint_dir"]:
            arguments["checkpoint_dir"] = str(Path(arguments["checkpoint_dir"]).resolve())
        return arguments

    def labels(self) -> str | None:
        """The held-out labels to score against; the bundled ones fit only the bundled test.csv."""
        if self.predict_labels:
            return self.predict_labels
        if self.arguments.get("predict_data_uri") is None:
            return str(sample_data("test_labels.csv.gz"))
        return None


@dataclass(frozen=True)
class RunSummary:
    """What a local run reports; `digits run --summary-json` writes exactly this."""

    accuracy: float | None
    validation_accuracy: float
    baseline_validation_accuracy: float | None
    mlflow_run_id: str
    model_name: str
    model_version: str
    promotion_decision: str
    predicted_with: str
    model_path: str
    predictions_path: str
    mlflow_tracking_uri: str
    mlflow_ui_command: str
    pipeline_root: str
    logs_dir: str
    seconds: float
    # Seconds of each task as the report saw it (a loop's iterations added up), and of the
    # training tasks (the train step, or a sweep's trials): where the run's time went.
    step_seconds: dict[str, float] = field(default_factory=dict)
    train_seconds: float = 0.0

    @property
    def wall_over_train(self) -> float | None:
        return self.seconds / self.train_seconds if self.train_seconds else None

    def write_json(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(asdict(self), indent=2))

    def lines(self) -> list[str]:
        """The summary as plain lines (not a table: paths and commands stay whole to copy)."""
        held_out = "n/a (no labels)" if self.accuracy is None else f"{self.accuracy:.2%}"
        baseline = (
            "not run"
            if self.baseline_validation_accuracy is None
            else f"{self.baseline_validation_accuracy:.2%} validation accuracy"
        )
        rows = [
            ("held-out accuracy", held_out),
            ("validation accuracy", f"{self.validation_accuracy:.2%}"),
            ("baseline (sklearn)", baseline),
            ("model version", f"{self.model_name} v{self.model_version}"),
            ("promotion", self.promotion_decision),
            ("predicted with", self.predicted_with),
            ("predictions", self.predictions_path),
            ("model", self.model_path),
            ("MLflow run", self.mlflow_run_id),
            ("MLflow UI", self.mlflow_ui_command),
            ("task logs", self.logs_dir),
            ("wall time", self._wall_time()),
        ]
        return [f"  {name:<20} {value}" for name, value in rows]

    def _wall_time(self) -> str:
        if self.wall_over_train is None:
            return f"{self.seconds:.0f} s"
        return (
            f"{self.seconds:.0f} s, {self.wall_over_train:.2f}x the train step "
            f"({self.train_seconds:.0f} s)"
        )


def local_mlflow_store(output_dir: Path) -> tuple[str, str]:
    """(tracking URI, artifact location) of the embedded default store: SQLite plus a folder."""
    root = output_dir.resolve() / "mlflow"
    root.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{root / 'mlflow.db'}", (root / "artifacts").as_uri()


def run_locally(settings: LocalRunSettings, console=None) -> RunSummary:
    """Run every pipeline task in this Python environment (kfp.local SubprocessRunner).

    Each task's output goes to ``OUTPUT_DIR/logs/<task>.log``; ``console`` (a rich Console,
    default: standard output) gets one line per finished step and the training bar, or, with
    ``settings.verbose``, everything the tasks print.

    Raises:
        PipelineStepError: a task failed; it carries the task's own one-line error and its log.
    """
    from kfp import local
    from rich.console import Console

    from digits.app.progress import StepReporter, TaskLogRouter, task_identities, tasks_of
    from digits.artifacts import MODEL_FILENAME, Evaluation
    from digits.errors import PipelineStepError
    from digits.evaluation import held_out_accuracy
    from digits.pipelines.digits_pipeline import ClusterSettings, build_pipeline
    from digits.pipelines.stages import GPU_STEPS

    started = time.perf_counter()
    # Pinned to the terminal: inside the run, sys.stdout is the router.
    console = console or Console(file=sys.stdout, highlight=False)
    logs_dir = settings.output_dir.resolve() / "logs"
    pipeline_root = settings.output_dir.resolve() / "pipeline_root"
    arguments = settings.pipeline_arguments()
    tracking_uri = arguments["mlflow_tracking_uri"]

    # Task subprocesses inherit this: TensorFlow's C++ start-up chatter buries the task logs.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if settings.docker is None:
        runner, cluster = local.SubprocessRunner(use_venv=False), ClusterSettings()
    else:
        local_paths = [
            arguments["train_data_uri"],
            arguments["predict_data_uri"],
            arguments["predict_model_uri"],
        ]
        if tracking_uri.startswith("sqlite:///"):
            local_paths.append(str(settings.output_dir.resolve() / "mlflow"))
        if arguments["checkpoint_dir"]:
            Path(arguments["checkpoint_dir"]).mkdir(parents=True, exist_ok=True)
            local_paths.append(arguments["checkpoint_dir"])
        from digits.app.docker_runner import docker_runner

        runner, cluster = docker_runner(settings.docker, local_paths)
    cluster = replace(cluster, trial_parallelism=settings.trial_parallelism)
    local.init(
        runner=runner,
        pipeline_root=str(pipeline_root),
        raise_on_error=True,
        enable_caching=settings.cache,
        cache_root=str(settings.output_dir.resolve() / "kfp_cache"),
    )
    # kfp.local prints every task's output and its own log lines to sys.stdout: the router
    # files them by task and drives the step report.
    pipeline = build_pipeline(cluster, for_kfp_local=True)
    identities = task_identities(pipeline)
    router = TaskLogRouter(
        logs_dir, StepReporter(console, identities), echo=sys.stdout if settings.verbose else None
    )
    with (
        warnings.catch_warnings(),
        contextlib.redirect_stdout(router),
        _cache_hits_to(router),
    ):
        # kfp.local ignores images, resources, GPU placement and display names by design; its
        # per-task warnings about them would bury the task logs.
        warnings.filterwarnings("ignore", message=".*non-Python base image.*")
        warnings.filterwarnings("ignore", message=".*no effect in the current local runner.*")
        try:
            run = pipeline(**arguments)
        except RuntimeError as error:  # kfp.local: a task failed
            router.finish_pending()
            failed = router.failed_task()
            if failed is None:
                raise
            raise PipelineStepError(
                failed.name, failed.error or str(error), failed.log_path
            ) from None
        finally:
            router.flush()
            router.finish_pending()
    router.close()
    outputs = run.outputs
    # Kaggle wants a .csv; the artifact itself stays in the pipeline root.
    submission = settings.output_dir / "submission.csv"
    shutil.copyfile(outputs["submission"].path, submission)
    # KFP returns no artifacts from under dsl.If: the registered model, its evaluation and the
    # baseline's report are where kfp.local puts the outputs of the tasks that made them.
    run_root = Path(outputs["submission"].path).parents[1]
    model_dir, evaluation_path = registered_model(run_root, identities)
    evaluation = Evaluation.read(evaluation_path)
    baseline_report = next(
        (
            run_root / task / "report"
            for task in tasks_of(identities, "evaluate baseline")
            if (run_root / task / "report").is_file()
        ),
        run_root / "no-baseline",
    )
    return RunSummary(
        accuracy=held_out_accuracy(submission, settings.labels()) if settings.labels() else None,
        validation_accuracy=evaluation.accuracy,
        baseline_validation_accuracy=Evaluation.read(baseline_report).accuracy
        if baseline_report.is_file()
        else None,
        mlflow_run_id=outputs["mlflow_run_id"],
        model_name=arguments["registered_model_name"],
        model_version=outputs["model_version"],
        promotion_decision=outputs["promotion_decision"],
        predicted_with=outputs["predicted_with"],
        model_path=str(model_dir / MODEL_FILENAME),
        predictions_path=str(submission.resolve()),
        mlflow_tracking_uri=tracking_uri,
        mlflow_ui_command=(
            f"digits ui --output-dir {settings.output_dir}"
            if settings.uses_local_store
            else tracking_uri
        ),
        pipeline_root=str(pipeline_root),
        logs_dir=str(logs_dir),
        seconds=round(time.perf_counter() - started, 1),
        step_seconds=_seconds_by_task(router.finished),
        # Every training task's seconds: a sweep's trials (ParallelFor iterations) add up.
        train_seconds=round(
            sum(
                record.seconds
                for record in router.finished
                if record.name in identities and identities[record.name].function in GPU_STEPS
            ),
            1,
        ),
    )


def _seconds_by_task(records) -> dict[str, float]:
    """Seconds of each task name; the iterations of a loop under one name add up."""
    seconds: dict[str, float] = {}
    for record in records:
        seconds[record.name] = seconds.get(record.name, 0.0) + record.seconds
    return {name: round(value, 1) for name, value in seconds.items()}


def registered_model(run_root: Path, identities: Mapping) -> tuple[Path, Path]:
    """(model directory, evaluation report) of the CNN a local run registered: the sweep's
    select_best copies the best trial's; without a sweep, the train and evaluate steps'."""
    from digits.app.progress import tasks_of

    def output(function: str, name: str, leave_out: tuple[str, ...] = ()) -> Path | None:
        for task, identity in identities.items():
            path = run_root / task / name
            if identity.function == function and task not in leave_out and path.exists():
                return path
        return None

    selected = output("select_best", "model")
    if selected is not None:
        return selected, selected.with_name("report")
    baseline = tuple(tasks_of(identities, "evaluate baseline"))
    return output("train_model", "model"), output("evaluate_model", "report", baseline)


@contextlib.contextmanager
def _cache_hits_to(stream):
    """Forward kfp.local's cache-hit lines (root logger, INFO) to ``stream``."""
    import logging

    class CacheHits(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            message = record.getMessage()
            if "cache hit" in message:
                stream.write(message + "\n")

    root, handler = logging.getLogger(), CacheHits(logging.INFO)
    level = root.level
    root.addHandler(handler)
    root.setLevel(min(level, logging.INFO) if level else logging.INFO)
    try:
        yield
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def mlflow_executable() -> str:
    """The `mlflow` beside this Python (the project's venv)."""
    beside = Path(sys.executable).with_name("mlflow")
    return str(beside) if beside.exists() else "mlflow"
