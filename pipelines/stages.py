"""The pipeline's building blocks: the components for one set of images, and the stages of the DAG
(a CSV's fingerprint → ingest → validate; register then gate; a hyperparameter sweep), each with
its caching, retries, placement and MLflow credentials set here, beside the task it configures."""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from types import SimpleNamespace

from digits.config import RUN_PARAMETERS
from digits.pipelines.placement import ClusterSettings, place_on_gpu_pool, use_mlflow_credentials


@dataclass(frozen=True)
class Steps:
    """Every component of the pipeline, built for the images of ``settings``."""

    settings: ClusterSettings
    # kfp.local 2.17 fails on the schedule-time placeholder (IndexError resolving it), so a
    # pipeline built for it passes "" instead: one-off local runs have no schedule time.
    for_kfp_local: bool = False

    def __post_init__(self) -> None:
        for module in component_modules():
            name = module.__name__.rsplit(".", 1)[-1]
            # Only training runs in the GPU image.
            image = self.settings.train_image if name in GPU_STEPS else self.settings.image
            object.__setattr__(self, name, module.component(image))


# The steps that train the CNN: in the GPU image, on the GPU pool.
GPU_STEPS = ("train_model", "train_trial")


def component_modules() -> list:
    """Every step's module in ``digits.components``, in DAG order."""
    from digits.components import (
        batch_predict,
        collect_predictions,
        deploy_model,
        evaluate_model,
        evaluate_trial,
        fingerprint_source,
        ingest_csv,
        normalize_and_split,
        plan_prediction_shards,
        plan_trials,
        promote_model,
        register_model,
        select_best,
        train_baseline,
        train_model,
        train_trial,
        validate_data,
    )

    return [
        fingerprint_source,
        ingest_csv,
        validate_data,
        normalize_and_split,
        train_model,
        plan_trials,
        train_trial,
        evaluate_trial,
        select_best,
        train_baseline,
        evaluate_model,
        register_model,
        promote_model,
        plan_prediction_shards,
        batch_predict,
        collect_predictions,
        deploy_model,
    ]


def with_run_parameters(body):
    """A pipeline function whose parameters are :data:`digits.config.RUN_PARAMETERS`.

    KFP reads a pipeline's parameters from its signature; this one is generated from the table,
    and ``body`` receives them as one namespace (``p.train_data_uri``), so a new parameter is one
    row in the table plus its use in the DAG.
    """
    # Required parameters first, as a Python signature needs; table order otherwise.
    ordered = sorted(RUN_PARAMETERS, key=lambda parameter: not parameter.required)
    names = [parameter.name for parameter in ordered]

    def pipeline_function(*args, **kwargs):
        return body(SimpleNamespace(**dict(zip(names, args, strict=False)), **kwargs))

    pipeline_function.__signature__ = inspect.Signature(
        [
            inspect.Parameter(
                parameter.name,
                inspect.Parameter.POSITIONAL_OR_KEYWORD,
                annotation=parameter.type,
                default=inspect.Parameter.empty if parameter.required else parameter.default,
            )
            for parameter in ordered
        ],
        return_annotation=inspect.signature(body).return_annotation,
    )
    pipeline_function.__name__ = body.__name__
    pipeline_function.__doc__ = body.__doc__
    return pipeline_function


def validated_rows(steps: Steps, uri, name: str, require_label: bool, max_rejected_fraction):
    """fingerprint → ingest_csv → validate_data for one CSV; returns the validate task.

    The fingerprint runs every time and keys ingest's cache, so a file overwritten at the same
    URI is read again, and an unchanged one is reused with everything after it.
    """
    fingerprint = steps.fingerprint_source(source_uri=uri).set_display_name(f"fingerprint {name}")
    fingerprint.set_caching_options(False)
    raw = steps.ingest_csv(source_uri=uri, fingerprint=fingerprint.output)
    raw.set_display_name(f"ingest {name}").set_caching_options(True)
    checked = steps.validate_data(
        dataset=raw.outputs["dataset"],
        source=uri,
        require_label=require_label,
        max_rejected_fraction=max_rejected_fraction,
    ).set_display_name(f"validate {name}")
    checked.set_caching_options(True)  # same rows and settings give the same result
    return checked


def register(steps: Steps, p, trained, evaluation, split, train_rows, register_version, run_name):
    """Log a trained model to MLflow (and register a version); safe to retry."""
    from kfp import dsl

    task = steps.register_model(
        model=trained.outputs["model"],
        history=trained.outputs["history"],
        evaluation=evaluation.outputs["report"],
        validation=split.outputs["validation"],
        data_report=train_rows.outputs["report"],
        mlflow_tracking_uri=p.mlflow_tracking_uri,
        experiment_name=p.experiment_name,
        registered_model_name=p.registered_model_name,
        mlflow_artifact_location=p.mlflow_artifact_location,
        train_data_uri=p.train_data_uri,
        validation_fraction=p.validation_fraction,
        split_seed=p.split_seed,
        run_name=run_name,
        register_version=register_version,
        kfp_ui_url=p.kfp_ui_url,
        mlflow_timeout_s=p.mlflow_timeout_s,
        pipeline_run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
        pipeline_run_name=dsl.PIPELINE_JOB_NAME_PLACEHOLDER,
        schedule_name=p.schedule_name,
        pipeline_version=p.pipeline_version,
        scheduled_at="" if steps.for_kfp_local else dsl.PIPELINE_JOB_SCHEDULE_TIME_UTC_PLACEHOLDER,
    )
    # Writes to MLflow: never skip it on a cache hit; retry a flaky server.
    task.set_caching_options(False).set_retry(num_retries=3, backoff_duration="30s")
    use_mlflow_credentials(task, steps.settings)
    return task


def gate(steps: Steps, p, evaluation, split, registration):
    """Champion/challenger gate for the version ``registration`` registered."""
    task = steps.promote_model(
        evaluation=evaluation.outputs["report"],
        validation=split.outputs["validation"],
        mlflow_tracking_uri=p.mlflow_tracking_uri,
        registered_model_name=p.registered_model_name,
        model_version=registration.outputs["model_version"],
        mlflow_run_id=registration.outputs["mlflow_run_id"],
        mlflow_experiment_id=registration.outputs["mlflow_experiment_id"],
        promotion_margin=p.promotion_margin,
        max_recall_drop=p.max_recall_drop,
        mlflow_timeout_s=p.mlflow_timeout_s,
    )
    # Moves aliases under the promotion lock: never a cache hit; a retry decides again when the
    # champion changed since its recorded decision.
    task.set_caching_options(False).set_retry(num_retries=3, backoff_duration="30s")
    use_mlflow_credentials(task, steps.settings)
    return task


def sweep(steps: Steps, p, split, train_rows):
    """A hyperparameter sweep: plan_trials → ParallelFor (at most ``trial_parallelism`` at once)
    of train_trial (GPU pool) → evaluate_trial → select_best over the collected trials, whose
    winner goes through register and the gate as a single training does. Returns (register
    task, gate task).

    The loop body takes from upstream steps only its plan item and artifacts (kfp.local 2.17.3
    replaces any upstream output parameter passed into a ParallelFor body with the loop item).
    """
    from kfp import dsl

    settings = steps.settings
    plan = steps.plan_trials(
        sweep=p.sweep,
        trials=p.trials,
        sweep_seed=p.sweep_seed,
        recipe=p.recipe,
        epochs=p.epochs,
        batch_size=p.batch_size,
        seed=p.seed,
        mlflow_tracking_uri=p.mlflow_tracking_uri,
        experiment_name=p.experiment_name,
        mlflow_artifact_location=p.mlflow_artifact_location,
        run_name=p.run_name,
        kfp_ui_url=p.kfp_ui_url,
        mlflow_timeout_s=p.mlflow_timeout_s,
        pipeline_run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
        pipeline_run_name=dsl.PIPELINE_JOB_NAME_PLACEHOLDER,
        schedule_name=p.schedule_name,
        pipeline_version=p.pipeline_version,
        scheduled_at="" if steps.for_kfp_local else dsl.PIPELINE_JOB_SCHEDULE_TIME_UTC_PLACEHOLDER,
    )
    # Opens the sweep's MLflow run (its own calls retried within mlflow_timeout_s; a bad spec
    # is not worth a retry).
    plan.set_display_name("plan trials").set_caching_options(False)
    use_mlflow_credentials(plan, settings)
    with dsl.ParallelFor(plan.output, parallelism=settings.trial_parallelism) as trial:
        trained = steps.train_trial(
            train=split.outputs["train"],
            validation=split.outputs["validation"],
            trial_id=trial.trial_id,
            overrides=trial.overrides,
            recipe=p.recipe,
            epochs=p.epochs,
            batch_size=p.batch_size,
            seed=p.seed,
            checkpoint_root=p.checkpoint_root,
            checkpoint_dir=p.checkpoint_dir,
            pipeline_run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
        )
        # As the single training: never from the cache, on the GPU pool, retried and resumed.
        trained.set_display_name("train trial").set_caching_options(False)
        place_on_gpu_pool(trained, settings)
        evaluated = steps.evaluate_trial(
            model=trained.outputs["model"],
            validation=split.outputs["validation"],
            data_report=train_rows.outputs["report"],
            parent_run_id=trial.parent_run_id,
            experiment_id=trial.experiment_id,
            space_digest=trial.space_digest,
            recipe=p.recipe,
            mlflow_tracking_uri=p.mlflow_tracking_uri,
            experiment_name=p.experiment_name,
            train_data_uri=p.train_data_uri,
            validation_fraction=p.validation_fraction,
            split_seed=p.split_seed,
            kfp_ui_url=p.kfp_ui_url,
            mlflow_timeout_s=p.mlflow_timeout_s,
            pipeline_run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
            pipeline_run_name=dsl.PIPELINE_JOB_NAME_PLACEHOLDER,
        )
        # Logs the trial's child run (found again by its key on a retry).
        evaluated.set_display_name("evaluate trial").set_caching_options(False)
        evaluated.set_retry(num_retries=3, backoff_duration="30s")
        use_mlflow_credentials(evaluated, settings)
    best = steps.select_best(
        trials=dsl.Collected(evaluated.outputs["trial"]),
        models=dsl.Collected(trained.outputs["model"]),
        mlflow_tracking_uri=p.mlflow_tracking_uri,
        experiment_name=p.experiment_name,
        mlflow_timeout_s=p.mlflow_timeout_s,
        pipeline_run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
    )
    best.set_display_name("select best").set_caching_options(False)
    use_mlflow_credentials(best, settings)
    # The winner's model, history and evaluation, as a single training's.
    registration = register(steps, p, best, best, split, train_rows, True, p.run_name)
    return registration, gate(steps, p, best, split, registration)
