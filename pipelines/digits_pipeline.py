"""The digit-recognition DAG.

ingest_csv -> validate_data -> normalize_and_split -> train_model (GPU pool) -> evaluate_model
-> register_model (MLflow) -> promote_model (champion/challenger) -> batch_predict (the
registry's champion, over N shards) -> collect_predictions, with the unlabeled CSV ingested and
validated alongside, and a CPU-only classical baseline (train_baseline -> evaluate_model ->
register_model, its own MLflow run) beside the CNN. Placement, retries, caching and secrets are
set here (helpers in ``placement``); the components hold only logic.
"""

from pathlib import Path

from digits.config import DEFAULT_RECIPE
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
        collect_predictions,
        evaluate_model,
        fingerprint_source,
        ingest_csv,
        normalize_and_split,
        plan_prediction_shards,
        promote_model,
        register_model,
        train_baseline,
        train_model,
        validate_data,
    )

    settings = settings or ClusterSettings()
    image, train_image = settings.image, settings.train_image
    fingerprint_source_op = fingerprint_source.component(image)
    ingest_csv_op = ingest_csv.component(image)
    validate_data_op = validate_data.component(image)
    normalize_and_split_op = normalize_and_split.component(image)
    train_model_op = train_model.component(train_image)
    train_baseline_op = train_baseline.component(image)
    evaluate_model_op = evaluate_model.component(image)
    register_model_op = register_model.component(image)
    promote_model_op = promote_model.component(image)
    plan_prediction_shards_op = plan_prediction_shards.component(image)
    batch_predict_op = batch_predict.component(image)
    collect_predictions_op = collect_predictions.component(image)

    def validated_rows(uri, name: str, require_label: bool, max_rejected_fraction):
        """fingerprint, ingest_csv, validate_data for one CSV; the validate task's `valid` rows go
        on. The fingerprint runs every time and keys ingest's cache, so a file overwritten at
        the same URI is read again, and an unchanged one is reused with everything after it."""
        fingerprint = fingerprint_source_op(source_uri=uri).set_display_name(f"fingerprint {name}")
        fingerprint.set_caching_options(False)
        raw = ingest_csv_op(source_uri=uri, fingerprint=fingerprint.output)
        raw.set_display_name(f"ingest {name}").set_caching_options(True)
        checked = validate_data_op(
            dataset=raw.outputs["dataset"],
            source=uri,
            require_label=require_label,
            max_rejected_fraction=max_rejected_fraction,
        ).set_display_name(f"validate {name}")
        checked.set_caching_options(True)  # same rows and settings give the same result
        return checked

    class PipelineOutputs(NamedTuple):
        submission: Dataset
        model: Model
        evaluation: Artifact
        mlflow_run_id: str
        model_version: str
        promotion_decision: str
        predicted_with: str

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
        run_name: str = "",
        kfp_ui_url: str = "",
        mlflow_timeout_s: float = 300.0,
        promotion_margin: float = 0.0,
        max_recall_drop: float = 0.005,
        predict_model_uri: str = "",
        predict_shards: int = 1,
        max_rejected_fraction: float = 0.0,
        validation_fraction: float = 0.1,
        split_seed: int = 2,
        recipe: str = DEFAULT_RECIPE,
        epochs: int = 0,
        batch_size: int = 0,
        seed: int = 2,
        checkpoint_root: str = "",
        checkpoint_dir: str = "",
        train_baseline: bool = True,
        baseline_candidate: bool = False,
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
            recipe=recipe,
            epochs=epochs,
            batch_size=batch_size,
            seed=seed,
            checkpoint_root=checkpoint_root,
            checkpoint_dir=checkpoint_dir,
            pipeline_run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
        )
        # Never from the cache: the key covers the image tag, not the code that resolves the
        # recipe name, and a cached model would be registered again as a new version.
        trained.set_caching_options(False)
        place_on_gpu_pool(trained, settings)
        evaluation = evaluate_model_op(
            model=trained.outputs["model"], validation=split.outputs["validation"]
        ).set_caching_options(False)

        def register(trained_task, evaluate_task, register_version, name):
            """Log a trained model to MLflow (and register a version); safe to retry."""
            task = register_model_op(
                model=trained_task.outputs["model"],
                history=trained_task.outputs["history"],
                evaluation=evaluate_task.outputs["report"],
                validation=split.outputs["validation"],
                data_report=train_rows.outputs["report"],
                mlflow_tracking_uri=mlflow_tracking_uri,
                experiment_name=experiment_name,
                registered_model_name=registered_model_name,
                mlflow_artifact_location=mlflow_artifact_location,
                train_data_uri=train_data_uri,
                validation_fraction=validation_fraction,
                split_seed=split_seed,
                run_name=name,
                register_version=register_version,
                kfp_ui_url=kfp_ui_url,
                mlflow_timeout_s=mlflow_timeout_s,
                pipeline_run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
                pipeline_run_name=dsl.PIPELINE_JOB_NAME_PLACEHOLDER,
            )
            # Writes to MLflow: never skip it on a cache hit; retry a flaky server.
            task.set_caching_options(False).set_retry(num_retries=3, backoff_duration="30s")
            use_mlflow_credentials(task, settings)
            return task

        def gate(evaluate_task, registration_task):
            """Champion/challenger gate for the version ``registration_task`` registered."""
            task = promote_model_op(
                evaluation=evaluate_task.outputs["report"],
                validation=split.outputs["validation"],
                mlflow_tracking_uri=mlflow_tracking_uri,
                registered_model_name=registered_model_name,
                model_version=registration_task.outputs["model_version"],
                mlflow_run_id=registration_task.outputs["mlflow_run_id"],
                mlflow_experiment_id=registration_task.outputs["mlflow_experiment_id"],
                promotion_margin=promotion_margin,
                max_recall_drop=max_recall_drop,
                mlflow_timeout_s=mlflow_timeout_s,
            )
            # Moves aliases: never a cache hit; a retry re-applies the recorded decision.
            task.set_caching_options(False).set_retry(num_retries=3, backoff_duration="30s")
            use_mlflow_credentials(task, settings)
            return task

        registration = register(trained, evaluation, True, run_name)
        promotion = gate(evaluation, registration)

        # The classical baseline, on CPU beside the CNN, scored by the same step on the same rows
        # and logged as its own MLflow run. KFP returns no outputs of tasks under dsl.If, so
        # every step that uses them is inside this block.
        with dsl.If(train_baseline == True, name="baseline"):  # noqa: E712 (a KFP condition)
            baseline = train_baseline_op(train=split.outputs["train"], seed=seed)
            baseline.set_display_name("train baseline").set_caching_options(False)
            baseline_evaluation = evaluate_model_op(
                model=baseline.outputs["model"], validation=split.outputs["validation"]
            ).set_display_name("evaluate baseline")
            baseline_evaluation.set_caching_options(False)
            # A promotion candidate only when asked: then it registers a version and meets the
            # gate, beside the CNN's (each gate re-checks the champion before moving it).
            baseline_registration = register(baseline, baseline_evaluation, baseline_candidate, "")
            baseline_registration.set_display_name("register baseline")
            with dsl.If(baseline_candidate == True, name="baseline-candidate"):  # noqa: E712
                gate(baseline_evaluation, baseline_registration).set_display_name(
                    "promote baseline"
                )

        predict_rows = validated_rows(predict_data_uri, "test.csv", False, max_rejected_fraction)
        # A pure function of the shard count.
        shards = plan_prediction_shards_op(shard_count=predict_shards).set_caching_options(True)
        with dsl.ParallelFor(shards.output) as shard_index:
            # Every shard predicts with the exact version the gate left as champion (or
            # predict_model_uri), and tags this run's MLflow run with it.
            shard = batch_predict_op(
                rows=predict_rows.outputs["valid"],
                mlflow_tracking_uri=mlflow_tracking_uri,
                registered_model_name=registered_model_name,
                predict_model_uri=predict_model_uri,
                champion_version=promotion.outputs["champion_version"],
                shard_index=shard_index,
                shard_count=predict_shards,
                mlflow_run_id=registration.outputs["mlflow_run_id"],
            ).set_caching_options(False)  # writes to MLflow
            use_mlflow_credentials(shard, settings)
        predictions = collect_predictions_op(
            submissions=dsl.Collected(shard.outputs["submission"]),
            probability_shards=dsl.Collected(shard.outputs["probabilities"]),
        ).set_caching_options(False)

        secure_and_size_all_tasks(settings)

        return PipelineOutputs(
            submission=predictions.outputs["submission"],
            model=trained.outputs["model"],
            evaluation=evaluation.outputs["report"],
            mlflow_run_id=registration.outputs["mlflow_run_id"],
            model_version=registration.outputs["model_version"],
            promotion_decision=promotion.outputs["decision"],
            predicted_with=predictions.outputs["Output"],
        )

    return digits_pipeline


def compile_pipeline(output: Path, settings: ClusterSettings | None = None) -> Path:
    """Write the KFP v2 IR YAML for ``settings`` to ``output``."""
    from kfp import compiler

    compiler.Compiler().compile(build_pipeline(settings), package_path=str(output))
    return output
