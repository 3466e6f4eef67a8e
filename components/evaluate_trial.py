"""Sweep step 3: score one trial on the validation split and log it as a child of the sweep's
MLflow run; a failed trial is recorded as failed, never raised (see ``train_trial``)."""

import traceback
from dataclasses import asdict
from pathlib import Path

from digits.artifacts import TRAINING_FILENAME
from digits.sweep import TRIAL_FILENAME, TRIAL_HISTORY_FILENAME, TrialRecord
from digits.sweep_tracking import SweepRun, SweepTarget


def evaluate_trial(
    model_dir: Path,
    validation_path: Path,
    record_path: Path,
    sweep: SweepRun | None = None,
    target: SweepTarget | None = None,
    data_report_path: Path | None = None,
    data_params: dict | None = None,
    train_data_uri: str = "",
    recipe: str = "",
) -> TrialRecord:
    """The trial's record, with its evaluation when it trained; written to ``record_path``.

    With a ``target`` and the ``sweep``'s run (from the trial's plan), the trial becomes a child
    of the sweep's MLflow run: its params, curves, evaluation, pictures and model, or, failed,
    its params and error.
    MLflow errors are raised (the step is retried); a trial's own failure is not.
    """
    import json

    record = TrialRecord.read(model_dir / TRIAL_FILENAME)
    config = None
    if record.succeeded:
        try:
            from digits.evaluation import evaluate_model_dir

            evaluation = evaluate_model_dir(model_dir, validation_path)
            record.evaluation = asdict(evaluation)
            record.val_accuracy = evaluation.accuracy
            config = json.loads((model_dir / TRAINING_FILENAME).read_text())["config"]
        except Exception as error:  # any error scoring one trial is that trial's failure
            traceback.print_exc()
            record.fail(error)
    if target is not None and sweep is not None:
        from digits.sweep_tracking import SweepTracker

        tracker = SweepTracker(target)
        record.parent_run_id = sweep.parent_run_id
        with tracker.session():
            record.mlflow_run_id = tracker.log_trial(
                sweep,
                record,
                model_dir,
                model_dir / TRIAL_HISTORY_FILENAME,
                validation_path,
                data_report_path,
                data_params or {},
                train_data_uri,
                recipe,
                config,
            )
    record.write(record_path)
    outcome = (
        f"validation accuracy {record.val_accuracy:.4f}"
        if record.succeeded
        else f"failed: {record.error}"
    )
    print(f"{record.name} {outcome}", flush=True)
    return record


def component(image: str):
    """Build the KFP component that runs :func:`evaluate_trial` in ``image``."""
    from kfp import dsl
    from kfp.dsl import Artifact, Dataset, Input, Metrics, Model, Output

    @dsl.component(base_image=image, install_kfp_package=False)
    def evaluate_trial(
        model: Input[Model],
        validation: Input[Dataset],
        data_report: Input[Artifact],
        parent_run_id: str,
        experiment_id: str,
        space_digest: str,
        recipe: str,
        mlflow_tracking_uri: str,
        experiment_name: str,
        train_data_uri: str,
        validation_fraction: float,
        split_seed: int,
        kfp_ui_url: str,
        mlflow_timeout_s: float,
        pipeline_run_id: str,
        pipeline_run_name: str,
        trial: Output[Artifact],
        metrics: Output[Metrics],
    ):
        """Score one trial on the validation rows; log it as a child of the sweep's run."""
        from pathlib import Path

        from digits.components.evaluate_trial import evaluate_trial as run
        from digits.sweep_tracking import SweepRun, SweepTarget

        record = run(
            Path(model.path),
            Path(validation.path),
            Path(trial.path),
            sweep=SweepRun(experiment_id, parent_run_id, space_digest),
            target=SweepTarget(
                tracking_uri=mlflow_tracking_uri,
                experiment_name=experiment_name,
                pipeline_run_id=pipeline_run_id,
                pipeline_run_name=pipeline_run_name,
                kfp_ui_url=kfp_ui_url,
                timeout_s=mlflow_timeout_s,
            ),
            data_report_path=Path(data_report.path),
            data_params={
                "train_data_uri": train_data_uri,
                "validation_fraction": validation_fraction,
                "split_seed": split_seed,
            },
            train_data_uri=train_data_uri,
            recipe=recipe,
        )
        trial.metadata.update({"trial": record.name, "status": record.status})
        metrics.log_metric("trial_id", record.trial_id)
        metrics.log_metric("succeeded", 1.0 if record.succeeded else 0.0)
        if record.succeeded:
            metrics.log_metric("accuracy", record.val_accuracy)
            metrics.log_metric("seconds", record.seconds)

    return evaluate_trial
