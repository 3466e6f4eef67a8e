"""Step 6: log the pipeline run to MLflow and register the model as a new version; safe to retry.

One pipeline run gives exactly one MLflow run per model family and at most one model version,
however often the task is retried and even when the server commits a create but loses the
answer. The logging itself lives in :mod:`digits.run_logging`.
"""

import json

from digits.artifacts import TRAINING_FILENAME
from digits.run_logging import Registration, RunRecord


def register_model(
    record: RunRecord,
    tracking_uri: str,
    experiment_name: str,
    registered_model_name: str,
    artifact_location: str = "",
    register_version: bool = True,
    timeout_s: float = 300,
) -> Registration:
    """Log params, metrics, datasets, pictures and the model (the run's output, named by its
    family: ``cnn``, ``sklearn-baseline``); register a model version.

    A second call for the same ``record.pipeline_run_id`` finishes what the first left undone
    and returns the same run and version. A sweep's winner (``training.json`` names its trial)
    is logged into the sweep's run, which ``plan_trials`` opened under the same key, and the
    trial's child run and the version are tagged with each other. With KFP's MLflow plugin on
    (``KFP_MLFLOW_CONFIG``), the CNN is logged into the plugin's parent run, other model
    families into runs nested under it.
    ``artifact_location`` only matters when the experiment is created (the local store).

    Raises:
        RegistrationError: the server stayed unreachable or failing for ``timeout_s`` seconds.
    """
    from digits.registry import registry_client
    from digits.run_logging import RunLogger
    from digits.tracking import Budget, KfpMlflowPlugin, tracking_session

    plugin = KfpMlflowPlugin.from_environment()
    if plugin is not None:
        tracking_uri = plugin.endpoint
    budget = Budget(timeout_s)
    training = json.loads((record.model_dir / TRAINING_FILENAME).read_text())
    with tracking_session(tracking_uri, budget):
        # The registry lives on the same server; never a process-wide default.
        client = registry_client(tracking_uri)
        logger = RunLogger(client, budget, record, training)
        experiment_id = (
            plugin.experiment_id
            if plugin
            else logger.experiment(experiment_name, artifact_location)
        )
        run_id = logger.run(experiment_id, plugin)
        model_id = logger.log_everything(run_id, experiment_id)
        version = (
            logger.register(registered_model_name, run_id, model_id) if register_version else ""
        )
        trial_run_id = training.get("trial", {}).get("mlflow_run_id")
        if version and trial_run_id:  # a sweep's winner (see select_best)
            from digits.sweep_tracking import link_version

            link_version(client, budget, trial_run_id, registered_model_name, version)
        if plugin is None or run_id != plugin.parent_run_id:
            # The plugin ends its own parent run when the pipeline run ends.
            logger.finish(run_id)
    return Registration(
        run_id=run_id,
        experiment_id=experiment_id,
        model_name=registered_model_name if version else "",
        model_version=version,
        model_uri=f"models:/{registered_model_name}/{version}"
        if version
        else f"models:/{model_id}",
    )


def component(image: str):
    """Build the KFP component that runs :func:`register_model` in ``image``."""
    from typing import NamedTuple

    from kfp import dsl
    from kfp.dsl import Artifact, Dataset, Input, Model

    @dsl.component(base_image=image, install_kfp_package=False)
    def register_model(
        model: Input[Model],
        history: Input[Artifact],
        evaluation: Input[Artifact],
        validation: Input[Dataset],
        data_report: Input[Artifact],
        mlflow_tracking_uri: str,
        experiment_name: str,
        registered_model_name: str,
        mlflow_artifact_location: str,
        train_data_uri: str,
        validation_fraction: float,
        split_seed: int,
        run_name: str,
        register_version: bool,
        kfp_ui_url: str,
        mlflow_timeout_s: float,
        pipeline_run_id: str,
        pipeline_run_name: str,
        schedule_name: str = "",
        pipeline_version: str = "",
        scheduled_at: str = "",
    ) -> NamedTuple(
        "Outputs", mlflow_run_id=str, mlflow_experiment_id=str, model_version=str, model_uri=str
    ):
        """Log the run to MLflow and register a model version (a retry returns the same one)."""
        from collections import namedtuple
        from pathlib import Path

        from digits.components.register_model import register_model as run
        from digits.run_logging import RunRecord
        from digits.tracking import schedule_tags

        record = RunRecord(
            model_dir=Path(model.path),
            history_path=Path(history.path),
            evaluation_path=Path(evaluation.path),
            validation_path=Path(validation.path),
            data_report_path=Path(data_report.path),
            pipeline_run_id=pipeline_run_id,
            pipeline_run_name=pipeline_run_name,
            run_name=run_name,
            train_data_uri=train_data_uri,
            data_params={
                "train_data_uri": train_data_uri,
                "validation_fraction": validation_fraction,
                "split_seed": split_seed,
            },
            kfp_ui_url=kfp_ui_url,
            schedule_tags=schedule_tags(schedule_name, pipeline_version, scheduled_at),
        )
        registration = run(
            record,
            tracking_uri=mlflow_tracking_uri,
            experiment_name=experiment_name,
            registered_model_name=registered_model_name,
            artifact_location=mlflow_artifact_location,
            register_version=register_version,
            timeout_s=mlflow_timeout_s,
        )
        outputs = namedtuple(
            "Outputs", ["mlflow_run_id", "mlflow_experiment_id", "model_version", "model_uri"]
        )
        return outputs(
            registration.run_id,
            registration.experiment_id,
            registration.model_version,
            registration.model_uri,
        )

    return register_model
