"""`digits`: run the pipeline locally, or compile it for a Kubeflow cluster."""

from __future__ import annotations

from dataclasses import replace
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from digits.config import TrainConfig


class Runner(StrEnum):
    """Where `digits run` runs the tasks."""

    subprocess = "subprocess"
    docker = "docker"


app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)


@app.command()
def run(
    data: Annotated[str | None, typer.Option(help="Labeled train CSV (path or URL).")] = None,
    predict_data: Annotated[
        str | None, typer.Option(help="Unlabeled test CSV to score (path or URL).")
    ] = None,
    predict_labels: Annotated[
        str | None,
        typer.Option(help="ImageId,Label file to score the predictions against."),
    ] = None,
    epochs: Annotated[int, typer.Option(help="Training epochs.")] = TrainConfig.epochs,
    batch_size: Annotated[int, typer.Option(help="Training batch size.")] = TrainConfig.batch_size,
    augment: Annotated[
        bool, typer.Option(help="Random rotation/zoom/shift while training.")
    ] = TrainConfig.augment,
    seed: Annotated[int, typer.Option(help="Seed of weights and augmentation.")] = TrainConfig.seed,
    max_rejected_fraction: Annotated[
        float, typer.Option(help="Share of invalid rows to drop before failing the run.")
    ] = 0.0,
    output_dir: Annotated[
        Path, typer.Option(help="Pipeline root and default MLflow store.")
    ] = Path("local_runs"),
    mlflow_uri: Annotated[
        str | None, typer.Option(help="MLflow tracking URI; default: SQLite under --output-dir.")
    ] = None,
    experiment: Annotated[str, typer.Option(help="MLflow experiment.")] = "digits",
    model_name: Annotated[str, typer.Option(help="MLflow registered model.")] = "digits-cnn",
    summary_json: Annotated[
        Path | None, typer.Option(help="Also write the summary here as JSON.")
    ] = None,
    runner: Annotated[
        Runner, typer.Option(help="subprocess: this environment; docker: the built images.")
    ] = Runner.subprocess,
    image: Annotated[
        str | None, typer.Option(help="--runner docker: image of the CPU steps.")
    ] = None,
    train_image: Annotated[
        str | None,
        typer.Option(help="--runner docker: image of training; default the GPU one with --gpus."),
    ] = None,
    gpus: Annotated[
        str | None,
        typer.Option(help="--runner docker: GPUs for the containers, 'all' or a count."),
    ] = None,
) -> None:
    """Run the whole pipeline locally (kfp.local) on the bundled sample or your own CSVs."""
    from digits.errors import DockerRunError
    from digits.local_run import DockerSettings, LocalRunSettings, run_locally

    if runner is Runner.subprocess and (image or train_image or gpus):
        raise typer.BadParameter("--image, --train-image and --gpus need --runner docker")
    if gpus is not None and gpus != "all" and not (gpus.isdigit() and int(gpus) > 0):
        raise typer.BadParameter(f"--gpus {gpus!r}: expected 'all' or a positive count")
    defaults = LocalRunSettings()
    own_test_data = predict_data is not None
    settings = replace(
        defaults,
        train_data=data or defaults.train_data,
        predict_data=predict_data or defaults.predict_data,
        # The bundled labels only fit the bundled test.csv.
        predict_labels=predict_labels or (None if own_test_data else defaults.predict_labels),
        output_dir=output_dir,
        mlflow_uri=mlflow_uri,
        experiment_name=experiment,
        registered_model_name=model_name,
        max_rejected_fraction=max_rejected_fraction,
        train=replace(
            defaults.train, epochs=epochs, batch_size=batch_size, augment=augment, seed=seed
        ),
        docker=DockerSettings(image=image, train_image=train_image, gpus=gpus)
        if runner is Runner.docker
        else None,
    )
    try:
        summary = run_locally(settings)
    except DockerRunError as error:
        typer.secho(f"digits run: {error}", err=True)
        raise typer.Exit(1) from None
    except RuntimeError as error:  # kfp.local: a task failed; its log above holds the reason
        typer.secho(f"digits run: {error} The task's error is in its log above.", err=True)
        raise typer.Exit(1) from None
    if summary_json:
        summary.write_json(summary_json)

    held_out = "n/a (no labels)" if summary.accuracy is None else f"{summary.accuracy:.2%}"
    rows = [
        ("held-out accuracy", held_out),
        ("validation accuracy", f"{summary.validation_accuracy:.2%}"),
        ("model", summary.model_path),
        ("predictions", summary.predictions_path),
        ("MLflow run", summary.mlflow_run_id),
        ("model version", f"{summary.model_name} v{summary.model_version}"),
        ("MLflow UI", summary.mlflow_ui_command),
        ("wall time", f"{summary.seconds:.0f} s"),
    ]
    # Plain lines, not a table: paths and the UI command must stay whole to be copied.
    typer.echo("\ndigits: local pipeline run finished")
    for name, value in rows:
        typer.echo(f"  {name:<20} {value}")


@app.command(name="compile")
def compile_(
    output: Annotated[Path, typer.Option(help="Where to write the KFP IR YAML.")] = Path(
        "pipeline.yaml"
    ),
    image: Annotated[str | None, typer.Option(help="Image of the CPU steps.")] = None,
    train_image: Annotated[str | None, typer.Option(help="Image of the GPU training step.")] = None,
    gpu_node_selector: Annotated[
        list[str] | None,
        typer.Option(help="KEY=VALUE label of the GPU node pool (repeatable)."),
    ] = None,
    gpu_toleration: Annotated[
        list[str] | None,
        typer.Option(help="KEY[=VALUE][:EFFECT] taint of the GPU node pool (repeatable)."),
    ] = None,
    gpus: Annotated[int, typer.Option(help="nvidia.com/gpu limit of the training task.")] = 1,
) -> None:
    """Compile the pipeline to KFP v2 IR YAML for a cluster."""
    from digits.pipelines.digits_pipeline import ClusterSettings, compile_pipeline

    defaults = ClusterSettings()
    settings = replace(
        defaults,
        image=image or defaults.image,
        train_image=train_image or defaults.train_image,
        gpu_node_selector=dict(_parse_label(item) for item in gpu_node_selector)
        if gpu_node_selector
        else defaults.gpu_node_selector,
        gpu_tolerations=tuple(_parse_toleration(item) for item in gpu_toleration)
        if gpu_toleration
        else defaults.gpu_tolerations,
        gpu_count=gpus,
    )
    compile_pipeline(output, settings)
    typer.echo(f"wrote {output}")


def _parse_label(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise typer.BadParameter(
            f"{text!r}: expected KEY=VALUE, e.g. cloud.google.com/gke-nodepool=gpu"
        )
    return key, value


def _parse_toleration(text: str):
    """'nvidia.com/gpu:NoSchedule' -> Exists; 'pool=gpu:NoSchedule' -> Equal."""
    from digits.pipelines.digits_pipeline import GpuToleration

    taint, _, effect = text.partition(":")
    key, sep, value = taint.partition("=")
    if not key or (effect and effect not in ("NoSchedule", "PreferNoSchedule", "NoExecute")):
        raise typer.BadParameter(
            f"{text!r}: expected KEY[=VALUE][:EFFECT] with EFFECT NoSchedule, "
            "PreferNoSchedule or NoExecute, e.g. nvidia.com/gpu:NoSchedule"
        )
    return GpuToleration(
        key=key,
        operator="Equal" if sep else "Exists",
        value=value if sep else None,
        effect=effect or None,
    )
