"""`digits`: run the pipeline locally, or compile and submit it to a Kubeflow cluster."""

from __future__ import annotations

from dataclasses import replace
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from digits.app.options import COMPILE_OPTIONS, run_options, with_options


class Runner(StrEnum):
    """Where `digits run` runs the tasks."""

    subprocess = "subprocess"
    docker = "docker"


app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)


@app.command()
@with_options(run_options(), into="parameters")
def run(
    parameters: dict | None = None,
    predict_labels: Annotated[
        str | None,
        typer.Option(
            help="ImageId,Label file to score the predictions against; default: the bundled "
            "labels when the bundled test.csv is predicted."
        ),
    ] = None,
    param: Annotated[
        list[str] | None,
        typer.Option(
            help="KEY=VALUE for a pipeline parameter without an option of its own (repeatable), "
            "e.g. validation_fraction=0.2."
        ),
    ] = None,
    output_dir: Annotated[
        Path,
        typer.Option(help="Pipeline root, task logs, kfp.local's cache, default MLflow store."),
    ] = Path("local_runs"),
    summary_json: Annotated[
        Path | None, typer.Option(help="Also write the summary here as JSON.")
    ] = None,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Stream every task's full output.")
    ] = False,
    cache: Annotated[
        bool,
        typer.Option(
            help="Reuse the data steps of an earlier run on unchanged files (kfp.local's cache, "
            "keyed by content as on a cluster)."
        ),
    ] = True,
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
    trial_parallelism: Annotated[
        int,
        typer.Option(help="--sweep: trials training at once (each uses every core; 0: all)."),
    ] = 1,
) -> None:
    """Run the whole pipeline locally (kfp.local) on the bundled sample or your own CSVs.

    Every pipeline parameter with a `digits run` option (digits.config.RUN_PARAMETERS) is one
    of the options below; the others take their defaults.
    """
    from digits.app.docker_runner import DockerSettings
    from digits.app.local_run import LocalRunSettings, run_locally
    from digits.config import resolve_recipe
    from digits.errors import DockerRunError, PipelineStepError, RecipeError

    try:  # fail before the pipeline starts, not in its train task
        resolve_recipe(
            parameters["recipe"],
            epochs=parameters["epochs"],
            batch_size=parameters["batch_size"],
            seed=parameters["seed"],
        )
    except RecipeError as error:
        _refuse("run", f"--recipe: {error}")
    if parameters["sweep"]:  # every trial's recipe, before anything runs
        from digits.components.plan_trials import plan_trials
        from digits.errors import SweepError

        try:
            plan_trials(
                parameters["sweep"], parameters["trials"], parameters["sweep_seed"],
                parameters["recipe"], parameters["epochs"], parameters["batch_size"],
                parameters["seed"],
            )  # fmt: skip
        except SweepError as error:
            _refuse("run", f"--sweep: {error}")
    if trial_parallelism < 0:
        _refuse("run", f"--trial-parallelism {trial_parallelism}: pass 0 (all at once) or more")
    if runner is Runner.subprocess and (image or train_image or gpus):
        _refuse("run", "--image, --train-image and --gpus need --runner docker")
    if gpus is not None and gpus != "all" and not (gpus.isdigit() and int(gpus) > 0):
        _refuse("run", f"--gpus {gpus!r}: expected 'all' or a positive count")
    parameters = {**parameters, **_other_parameters(param or [])}
    _check_local_inputs(parameters, predict_labels, output_dir)
    settings = LocalRunSettings(
        arguments=parameters,
        predict_labels=predict_labels,
        output_dir=output_dir,
        verbose=verbose,
        cache=cache,
        trial_parallelism=trial_parallelism,
        docker=DockerSettings(image=image, train_image=train_image, gpus=gpus)
        if runner is Runner.docker
        else None,
    )
    typer.echo(f"digits run: logs in {output_dir / 'logs'}")
    try:
        summary = run_locally(settings)
    except DockerRunError as error:
        typer.echo(f"digits run: {error}", err=True)
        raise typer.Exit(1) from None
    except PipelineStepError as error:
        typer.echo(f"  full log: {error.log_path}", err=True)
        typer.echo(f"digits run: {error.task} failed: {error}", err=True)
        raise typer.Exit(1) from None
    if summary_json:
        summary.write_json(summary_json)
    typer.echo("\ndigits: local pipeline run finished")
    for line in summary.lines():
        typer.echo(line)


def _check_local_inputs(parameters: dict, predict_labels, output_dir: Path) -> None:
    """Refuse, before anything runs, a local file that is missing or a folder in its place."""
    from digits.config import run_parameter
    from digits.sources import is_remote

    files = [
        (run_parameter(name).option, parameters[name])
        for name in ("train_data_uri", "predict_data_uri")
    ]
    for option, value in [*files, ("--predict-labels", predict_labels)]:
        if value is None or is_remote(value):
            continue
        path = Path(value.removeprefix("file://"))
        if not path.is_file():
            problem = "is a folder" if path.is_dir() else "does not exist"
            _refuse("run", f"{option} {value} {problem}; pass a CSV file (path or URL)")
    checkpoint_dir = parameters["checkpoint_dir"]
    for option, folder in (("--checkpoint-dir", checkpoint_dir), ("--output-dir", output_dir)):
        if folder and Path(folder).exists() and not Path(folder).is_dir():
            _refuse("run", f"{option} {folder} is a file; pass a folder (created when missing)")


def _other_parameters(items: list[str]) -> dict:
    """`digits run --param KEY=VALUE`, typed by the parameter table; one line on a mistake."""
    from digits.config import RUN_PARAMETERS, run_parameter

    values = {}
    for item in items:
        name, _, text = item.partition("=")
        try:
            parameter = run_parameter(name)
        except KeyError:
            known = ", ".join(p.name for p in RUN_PARAMETERS if p.option is None)
            _refuse("run", f"--param {item}: {name!r} is not a pipeline parameter; those "
                    f"without an option of their own: {known}")  # fmt: skip
        if parameter.option:
            _refuse("run", f"--param {item}: use {parameter.option}")
        try:
            if parameter.type is bool:
                if text.lower() not in ("true", "false"):
                    raise ValueError(text)
                values[name] = text.lower() == "true"
            else:
                values[name] = parameter.type(text)
        except ValueError:
            _refuse("run", f"--param {item}: {name} takes {parameter.type.__name__}")
    return values


def _refuse(command: str, message: str) -> None:
    """A bad option: one line on stderr, exit 2 (as click's usage errors), nothing started."""
    typer.echo(f"digits {command}: {message}", err=True)
    raise typer.Exit(2)


@app.command()
def ui(
    output_dir: Annotated[Path, typer.Option(help="The --output-dir of `digits run`.")] = Path(
        "local_runs"
    ),
    port: Annotated[int, typer.Option(help="Port of the MLflow UI.")] = 5000,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
) -> None:
    """Start the MLflow UI on the local store that `digits run` wrote."""
    import os

    from digits.app.local_run import local_mlflow_store, mlflow_executable

    if not (output_dir / "mlflow" / "mlflow.db").is_file():
        typer.echo(
            f"digits ui: no MLflow store in {output_dir / 'mlflow'}; run `digits run` first "
            "(or pass the --output-dir it used)",
            err=True,
        )
        raise typer.Exit(1)
    tracking_uri, artifact_location = local_mlflow_store(output_dir)
    typer.echo(f"digits ui: MLflow UI on http://{host}:{port} (store {tracking_uri}); Ctrl+C stops")
    executable = mlflow_executable()
    os.execvp(
        executable,
        [
            executable,
            "ui",
            "--backend-store-uri",
            tracking_uri,
            "--default-artifact-root",
            artifact_location,
            "--host",
            host,
            "--port",
            str(port),
        ],
    )


@app.command()
def serve(
    model_uri: Annotated[
        str, typer.Option(help="Registered model to serve, pinned to its version at start.")
    ] = "models:/digits-cnn@champion",
    port: Annotated[int, typer.Option(help="HTTP port.")] = 8080,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    mlflow_uri: Annotated[
        str | None,
        typer.Option(
            help="MLflow tracking URI; default $MLFLOW_TRACKING_URI, else the local store "
            "`digits run` writes (./local_runs)."
        ),
    ] = None,
    max_batch: Annotated[int, typer.Option(help="Most images one request may carry.")] = 1024,
) -> None:
    """Serve a registered model version over KServe's v2 (Open Inference) and v1 protocols."""
    if max_batch < 1:
        raise typer.BadParameter(f"{max_batch}: expected at least 1", param_hint="--max-batch")
    from digits.errors import DigitsError

    try:
        from digits.app.serving import ServeSettings, default_tracking_uri
        from digits.app.serving import serve as serve_model
    except ModuleNotFoundError as error:
        typer.echo(
            f"digits serve: {error.name} is not installed: pip install 'digits[serve]'", err=True
        )
        raise typer.Exit(1) from None

    def announce(model) -> None:
        ref, name = model.served.ref, model.name
        typer.echo(
            f"digits serve: {ref.description}, run {ref.run_id or '-'}, on http://{host}:{port}\n"
            f"  v2  POST /v2/models/{name}/infer    metadata  GET /v2/models/{name}\n"
            f"  v1  POST /v1/models/{name}:predict  health    GET /v2/health/ready\n"
            f"  reload (re-resolve {ref.requested}): POST /v2/repository/models/{name}/load "
            "or SIGHUP"
        )

    try:
        settings = ServeSettings(
            model_uri=model_uri,
            tracking_uri=mlflow_uri or default_tracking_uri(),
            host=host,
            port=port,
            max_batch=max_batch,
        )
        serve_model(settings, on_ready=announce)
    except DigitsError as error:
        typer.echo(f"digits serve: {error}", err=True)
        raise typer.Exit(1) from None


@app.command()
def deploy(
    model_uri: Annotated[
        str, typer.Option(help="Registered model to deploy, pinned to its version now.")
    ] = "models:/digits-cnn@champion",
    name: Annotated[str, typer.Option(help="InferenceService name.")] = "digits",
    namespace: Annotated[str, typer.Option(help="Kubernetes namespace.")] = "kubeflow",
    image: Annotated[
        str | None, typer.Option(help="Image running `digits serve`; default the CPU image.")
    ] = None,
    canary_percent: Annotated[
        int, typer.Option(help="Traffic share of a new version beside an older one.")
    ] = 10,
    promote: Annotated[
        bool, typer.Option("--promote", help="Send the version all traffic (ends a canary).")
    ] = False,
    current_version: Annotated[
        str | None,
        typer.Option(help="Version served now (without --apply); a different one is a canary."),
    ] = None,
    apply: Annotated[
        bool,
        typer.Option("--apply", help="Read the existing InferenceService, then create or patch."),
    ] = False,
    output: Annotated[
        Path | None, typer.Option(help="Write the InferenceService YAML here (default: stdout).")
    ] = None,
    mlflow_uri: Annotated[
        str | None,
        typer.Option(
            help="MLflow tracking URI to resolve --model-uri; default $MLFLOW_TRACKING_URI, "
            "else --cluster-mlflow-uri."
        ),
    ] = None,
    cluster_mlflow_uri: Annotated[
        str | None, typer.Option(help="MLflow tracking URI as the predictor pod reaches it.")
    ] = None,
) -> None:
    """Write (and with --apply, create or patch) a KServe InferenceService serving one version."""
    import os

    import yaml

    from digits.errors import DigitsError
    from digits.kserve_compat import import_kserve

    try:
        import_kserve()  # the InferenceService's typed models
    except ModuleNotFoundError:
        typer.echo("digits deploy: kserve is not installed: pip install 'digits[serve]'", err=True)
        raise typer.Exit(1) from None
    from digits.inference_service import DeploySettings
    from digits.inference_service import deploy as deploy_model

    try:
        defaults = DeploySettings()
        settings = replace(
            defaults,
            name=name,
            namespace=namespace,
            image=image or defaults.image,
            canary_percent=canary_percent,
            mlflow_uri=cluster_mlflow_uri or defaults.mlflow_uri,
        )
        outcome = deploy_model(
            model_uri,
            mlflow_uri or os.environ.get("MLFLOW_TRACKING_URI") or settings.mlflow_uri,
            settings,
            promote=promote,
            current_version=current_version,
            apply=apply,
        )
    except DigitsError as error:
        typer.echo(f"digits deploy: {error}", err=True)
        raise typer.Exit(1) from None
    text = yaml.safe_dump(outcome.service, sort_keys=False)
    if output:
        output.write_text(text)
        typer.echo(f"wrote {output}", err=True)
    elif not apply:
        typer.echo(text, nl=False)
    typer.echo(f"digits deploy: {outcome.summary()}", err=True)


@app.command()
def validate(
    file: Annotated[str, typer.Argument(help="CSV to check (path or URL; .gz and .zip too).")],
    predict: Annotated[
        bool, typer.Option("--predict", help="Prediction data: no label needed (one is ignored).")
    ] = False,
    max_rejected_fraction: Annotated[
        float, typer.Option(help="Share of invalid rows the pipeline would drop, not fail on.")
    ] = 0.0,
    report_json: Annotated[
        Path | None, typer.Option(help="Also write the validation report here as JSON.")
    ] = None,
    retry_seconds: Annotated[
        float, typer.Option(help="How long a URL that fails transiently is retried.")
    ] = 120.0,
) -> None:
    """Check a CSV with the pipeline's own ingest and validate steps; exit 1 if it would fail."""
    from digits.app.validation import check_csv

    check = check_csv(
        file,
        require_label=not predict,
        max_rejected_fraction=max_rejected_fraction,
        report_json=report_json,
        retry_budget_s=retry_seconds,
    )
    if check.report is not None:
        for line in check.report.summary_lines():
            typer.echo(line)
    if not check.passed:
        typer.echo(check.error, err=True)  # the one-line reason, always the last line
        raise typer.Exit(1)
    typer.echo(f"{file}: passes validation")


@app.command(name="compile")
@with_options(COMPILE_OPTIONS, into="cluster")
def compile_(
    output: Annotated[Path, typer.Option(help="Where to write the KFP IR YAML.")] = Path(
        "pipeline.yaml"
    ),
    cluster: dict | None = None,
) -> None:
    """Compile the pipeline to KFP v2 IR YAML for a cluster."""
    from digits.pipelines.digits_pipeline import compile_pipeline

    settings = _cluster_settings(**cluster)
    compile_pipeline(output, settings)
    typer.echo(f"wrote {output}")


@app.command()
@with_options(COMPILE_OPTIONS, into="cluster")
def submit(
    host: Annotated[str, typer.Option(help="KFP API / UI address, e.g. http://localhost:8080.")],
    package: Annotated[
        Path | None, typer.Option(help="Compiled pipeline YAML; default: compile one now.")
    ] = None,
    version: Annotated[
        str | None,
        typer.Option(help="Run this uploaded version of --name instead (nothing compiled)."),
    ] = None,
    name: Annotated[
        str, typer.Option("--name", "--pipeline", help="--version: the pipeline it belongs to.")
    ] = "digits-recognizer",
    experiment: Annotated[str, typer.Option(help="KFP experiment of the run.")] = "digits",
    run_name: Annotated[str | None, typer.Option(help="Run name shown in the KFP UI.")] = None,
    param: Annotated[
        list[str] | None,
        typer.Option(help="KEY=VALUE pipeline parameter (repeatable), typed from the IR."),
    ] = None,
    wait: Annotated[bool, typer.Option(help="Follow the run; exit 1 unless it succeeds.")] = False,
    token: Annotated[
        str | None,
        typer.Option(
            help="Bearer token; default: the service-account token at "
            "$KF_PIPELINES_SA_TOKEN_PATH or /var/run/secrets/kubeflow/pipelines/token."
        ),
    ] = None,
    namespace: Annotated[
        str | None, typer.Option(help="Profile namespace (multi-user KFP).")
    ] = None,
    cache: Annotated[
        bool | None,
        typer.Option(help="Override every task's caching (default: as compiled)."),
    ] = None,
    poll_seconds: Annotated[float, typer.Option(help="--wait: seconds between polls.")] = 10.0,
    timeout: Annotated[float, typer.Option(help="--wait: give up after SECONDS.")] = 86400.0,
    cluster: dict | None = None,
) -> None:
    """Create a run on a Kubeflow Pipelines cluster; print its id and UI link."""
    import tempfile

    from digits.app.schedule import run_version
    from digits.app.submit import SubmitRequest, wait_for_run
    from digits.app.submit import submit as submit_run
    from digits.errors import SubmitError
    from digits.pipelines.digits_pipeline import compile_pipeline

    params = dict(_parse_param(item) for item in param or [])
    with tempfile.TemporaryDirectory() as scratch:
        if package is None and version is None:
            package = compile_pipeline(
                Path(scratch) / "pipeline.yaml", _cluster_settings(**cluster)
            )
        request = SubmitRequest(
            host=host.rstrip("/"),
            package=package,
            experiment=experiment,
            run_name=run_name,
            params=params,
            token=token,
            namespace=namespace,
            enable_caching=cache,
        )
        try:
            run = submit_run(request) if version is None else run_version(request, name, version)
            typer.echo(f"run id  {run.run_id}\nrun UI  {run.url}")
            if not wait:
                return
            final = wait_for_run(
                run,
                request.host,
                poll_seconds=poll_seconds,
                timeout_seconds=timeout,
                on_state=lambda state: typer.echo(f"state   {state}"),
            )
        except SubmitError as error:
            typer.secho(f"digits submit: {error}", err=True)
            raise typer.Exit(1) from None
    if final.state != "SUCCEEDED":
        reason = getattr(final.error, "message", None) if final.error else None
        typer.secho(
            f"digits submit: run {run.run_id} ended {final.state}"
            + (f": {reason}" if reason else f"; see {run.url}"),
            err=True,
        )
        raise typer.Exit(1)


# `upload` and `schedule` (digits.app.schedule): named pipeline versions and recurring runs.
HostOption = Annotated[
    str, typer.Option(help="KFP API / UI address, e.g. http://localhost:8080 (http:// if none).")
]
TokenOption = Annotated[
    str | None,
    typer.Option(
        help="Bearer token; default: the service-account token at "
        "$KF_PIPELINES_SA_TOKEN_PATH or /var/run/secrets/kubeflow/pipelines/token."
    ),
]
NamespaceOption = Annotated[str | None, typer.Option(help="Profile namespace (multi-user KFP).")]
PackageOption = Annotated[
    Path | None, typer.Option(help="Compiled pipeline YAML; default: compile one now.")
]
VersionOption = Annotated[
    str | None,
    typer.Option(help="Pipeline version name; default: VERSION-COMMIT, plus -dirty on changes."),
]


@app.command()
@with_options(COMPILE_OPTIONS, into="cluster")
def upload(
    host: HostOption,
    name: Annotated[
        str, typer.Option("--name", "--pipeline", help="Pipeline name in KFP.")
    ] = "digits-recognizer",
    version: VersionOption = None,
    package: PackageOption = None,
    token: TokenOption = None,
    namespace: NamespaceOption = None,
    cluster: dict | None = None,
) -> None:
    """Upload the pipeline as a named version (the pipeline is created when absent).

    The same name uploaded again sends nothing, or is refused when the package differs.
    """
    import tempfile

    from digits.app.schedule import KfpTarget, default_version_name
    from digits.app.schedule import upload as upload_version
    from digits.errors import SubmitError
    from digits.pipelines.digits_pipeline import compile_pipeline

    with tempfile.TemporaryDirectory() as scratch:
        try:
            version = version or default_version_name()
            if package is None:
                package = compile_pipeline(
                    Path(scratch) / "pipeline.yaml", _cluster_settings(**cluster)
                )
            uploaded = upload_version(KfpTarget(host, token, namespace), package, name, version)
        except SubmitError as error:
            typer.secho(f"digits upload: {error}", err=True)
            raise typer.Exit(1) from None
    for line in uploaded.lines():
        typer.echo(line)


@app.command()
@with_options(COMPILE_OPTIONS, into="cluster")
def schedule(
    host: HostOption,
    cron: Annotated[
        str | None,
        typer.Option(
            help='Six fields, seconds first (KFP\'s robfig/cron): "0 0 3 * * *" is 03:00 daily.'
        ),
    ] = None,
    list_: Annotated[
        bool, typer.Option("--list", help="Show the experiment's schedules and exit.")
    ] = False,
    disable: Annotated[
        str | None, typer.Option(metavar="NAME", help="Disable the schedule(s) of this name.")
    ] = None,
    enable: Annotated[
        str | None, typer.Option(metavar="NAME", help="Enable the newest schedule of this name.")
    ] = None,
    name: Annotated[
        str, typer.Option(help="Schedule name; one of the same name is replaced.")
    ] = "digits-retrain",
    pipeline: Annotated[str, typer.Option(help="Pipeline name in KFP.")] = "digits-recognizer",
    version: VersionOption = None,
    experiment: Annotated[str, typer.Option(help="KFP experiment of the runs.")] = "digits",
    param: Annotated[
        list[str] | None,
        typer.Option(help="KEY=VALUE pipeline parameter (repeatable), typed from the IR."),
    ] = None,
    max_concurrency: Annotated[
        int, typer.Option(min=1, max=10, help="Runs of this schedule at once (1-10).")
    ] = 1,
    catchup: Annotated[
        bool, typer.Option(help="After a pause, run every missed time (default: only the latest).")
    ] = False,
    service_account: Annotated[
        str | None, typer.Option(help="Kubernetes service account of the runs.")
    ] = None,
    timezone: Annotated[
        str,
        typer.Option(help="Show fire times in this zone: the KFP scheduler's, UTC by default."),
    ] = "UTC",
    package: PackageOption = None,
    token: TokenOption = None,
    namespace: NamespaceOption = None,
    cluster: dict | None = None,
) -> None:
    """Retrain on a schedule: a recurring run pinned to an uploaded pipeline version.

    The cron and the parameters are checked before anything is sent; the version is uploaded
    when absent (as `digits upload`); a schedule of the same name is replaced (the new one
    created, then the old one disabled). Also --list, --disable NAME, --enable NAME.
    """
    import tempfile

    from digits.app.schedule import (
        KfpTarget,
        ScheduleRequest,
        format_schedules,
        list_schedules,
        parse_cron,
        set_enabled,
    )
    from digits.app.schedule import schedule as create_schedule
    from digits.errors import SubmitError
    from digits.pipelines.digits_pipeline import compile_pipeline

    if sum([cron is not None, list_, disable is not None, enable is not None]) != 1:
        raise typer.BadParameter("pass one of --cron, --list, --disable NAME or --enable NAME")
    zone = _time_zone(timezone)
    target = KfpTarget(host, token, namespace)
    try:
        if list_:
            found = list_schedules(target, experiment)
            lines = format_schedules(found, zone) if found else [f"no schedules in {experiment}"]
            typer.echo("\n".join(lines))
            return
        if disable is not None or enable is not None:
            for line in set_enabled(target, experiment, disable or enable, enable is not None):
                typer.echo(line)
            return
        params = dict(_parse_param(item) for item in param or [])
        checked = parse_cron(cron)
        typer.echo(f"cron         {checked.expression}  (sec min hour day-of-month month weekday)")
        for i, when in enumerate(checked.next_times(3, tz=zone)):
            label = "next runs" if i == 0 else ""
            typer.echo(f"{label:<12} {when:%Y-%m-%d %H:%M:%S %Z}")
        with tempfile.TemporaryDirectory() as scratch:
            if package is None:
                package = compile_pipeline(
                    Path(scratch) / "pipeline.yaml", _cluster_settings(**cluster)
                )
            result = create_schedule(
                ScheduleRequest(
                    target=target,
                    cron=checked,
                    package=package,
                    name=name,
                    pipeline_name=pipeline,
                    version_name=version,
                    experiment=experiment,
                    params=params,
                    max_concurrency=max_concurrency,
                    no_catchup=not catchup,
                    service_account=service_account,
                )
            )
    except SubmitError as error:
        typer.secho(f"digits schedule: {error}", err=True)
        raise typer.Exit(1) from None
    for line in result.lines():
        typer.echo(line)


def _time_zone(name: str):
    from datetime import UTC
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    if name.upper() == "UTC":
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise typer.BadParameter(f"{name!r}: not a time zone, e.g. UTC or Europe/Paris") from None


def _cluster_settings(
    image, train_image, gpu_node_selector, gpu_toleration, gpus, trial_parallelism, train_cpu,
    train_cpu_limit, train_memory, step_cpu, step_cpu_limit, step_memory, mlflow_secret,
):  # fmt: skip
    """ClusterSettings from the compile options; an option left out keeps its default."""
    from digits.errors import SettingsError
    from digits.pipelines.placement import ClusterSettings, Resources

    defaults = ClusterSettings()
    train, step = defaults.train_resources, defaults.step_resources
    try:
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
            trial_parallelism=defaults.trial_parallelism
            if trial_parallelism is None
            else trial_parallelism,
            train_resources=Resources(
                cpu_request=train_cpu or train.cpu_request,
                cpu_limit=train_cpu_limit or train.cpu_limit,
                memory=train_memory or train.memory,
            ),
            step_resources=Resources(
                cpu_request=step_cpu or step.cpu_request,
                cpu_limit=step_cpu_limit or step.cpu_limit,
                memory=step_memory or step.memory,
            ),
            mlflow_secret=mlflow_secret or defaults.mlflow_secret,
        )
    except SettingsError as error:
        typer.echo(f"digits: {error}", err=True)
        raise typer.Exit(2) from None
    return settings


def _parse_param(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise typer.BadParameter(f"{text!r}: expected KEY=VALUE, e.g. epochs=10")
    return key, value


def _parse_label(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise typer.BadParameter(
            f"{text!r}: expected KEY=VALUE, e.g. cloud.google.com/gke-nodepool=gpu"
        )
    return key, value


def _parse_toleration(text: str):
    """'nvidia.com/gpu:NoSchedule' -> Exists; 'pool=gpu:NoSchedule' -> Equal."""
    from digits.pipelines.placement import GpuToleration

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
