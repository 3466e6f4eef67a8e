"""The digit-recognition DAG.

fingerprint_source → ingest_csv → validate_data → normalize_and_split → train_model (GPU pool) →
evaluate_model → register_model (MLflow) → promote_model (champion/challenger) → batch_predict
(the version the gate left as champion, over N shards) → collect_predictions, with the unlabeled
CSV fingerprinted, ingested and validated alongside, and a CPU-only classical baseline
(train_baseline → evaluate_model → register_model, its own MLflow run) beside the CNN. With
``sweep`` set, a hyperparameter sweep (``stages.sweep``) takes the single training's place.
Parameters come from ``digits.config.RUN_PARAMETERS``; placement, retries, caching and secrets
are set here and in ``stages``/``placement``; the components hold only logic.
"""

from pathlib import Path
from typing import NamedTuple

from digits.pipelines.placement import (
    ClusterSettings,
    GpuToleration,  # noqa: F401  (re-exported: the CLI and tests import it from here)
    place_on_gpu_pool,
    secure_and_size_all_tasks,
    use_mlflow_credentials,
)
from digits.pipelines.stages import (
    Steps,
    gate,
    register,
    sweep,
    validated_rows,
    with_run_parameters,
)
from digits.tracking import PIPELINE_NAME


def build_pipeline(settings: ClusterSettings | None = None, for_kfp_local: bool = False):
    """Return the ``@dsl.pipeline`` function, with images and GPU placement from ``settings``
    (``for_kfp_local``: without what kfp.local cannot resolve, see ``stages.Steps``)."""
    from kfp import dsl
    from kfp.dsl import Dataset

    settings = settings or ClusterSettings()
    steps = Steps(settings, for_kfp_local)

    # The registered model and its evaluation are not outputs: they come from one of two
    # branches, and kfp.local 2.17.3 merges only parameters with dsl.OneOf (see below).
    class PipelineOutputs(NamedTuple):
        submission: Dataset
        mlflow_run_id: str
        model_version: str
        promotion_decision: str
        predicted_with: str

    @dsl.pipeline(
        name=PIPELINE_NAME,
        description="Kaggle Digit Recognizer: validate, train a CNN on GPU, register in MLflow, "
        "predict test.csv.",
    )
    @with_run_parameters
    def digits_pipeline(p) -> PipelineOutputs:
        train_rows = validated_rows(
            steps, p.train_data_uri, "train.csv", True, p.max_rejected_fraction
        )
        split = steps.normalize_and_split(
            rows=train_rows.outputs["valid"],
            validation_fraction=p.validation_fraction,
            seed=p.split_seed,
        ).set_caching_options(True)
        # One training, or (sweep set) a sweep whose best trial is registered. KFP returns the
        # outputs of tasks under dsl.If only through dsl.OneOf, and kfp.local 2.17.3 merges only
        # parameters that way (an artifact OneOf fails: "Expected 1 artifact"), so each branch
        # registers and gates its own model, and the branches' parameters are merged below.
        with dsl.If(p.sweep == "", name="single-training"):
            trained = steps.train_model(
                train=split.outputs["train"],
                validation=split.outputs["validation"],
                recipe=p.recipe,
                epochs=p.epochs,
                batch_size=p.batch_size,
                seed=p.seed,
                checkpoint_root=p.checkpoint_root,
                checkpoint_dir=p.checkpoint_dir,
                pipeline_run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
            )
            # Never from the cache: the key covers the image tag, not the code that resolves
            # the recipe name, and a cached model would be registered again as a new version.
            trained.set_caching_options(False)
            place_on_gpu_pool(trained, settings)
            evaluation = steps.evaluate_model(
                model=trained.outputs["model"], validation=split.outputs["validation"]
            ).set_caching_options(False)
            single = register(steps, p, trained, evaluation, split, train_rows, True, p.run_name)
            single_gate = gate(steps, p, evaluation, split, single)
        with dsl.Else(name="sweep"):
            swept, sweep_gate = sweep(steps, p, split, train_rows)
        mlflow_run_id = dsl.OneOf(single.outputs["mlflow_run_id"], swept.outputs["mlflow_run_id"])
        model_version = dsl.OneOf(single.outputs["model_version"], swept.outputs["model_version"])
        champion_version = dsl.OneOf(
            single_gate.outputs["champion_version"], sweep_gate.outputs["champion_version"]
        )
        decision = dsl.OneOf(single_gate.outputs["decision"], sweep_gate.outputs["decision"])

        # The classical baseline, on CPU beside the CNN, scored by the same step on the same rows
        # and logged as its own MLflow run. KFP returns no outputs of tasks under dsl.If, so
        # every step that uses them is inside this block.
        with dsl.If(p.train_baseline == True, name="baseline"):  # noqa: E712 (a KFP condition)
            baseline = steps.train_baseline(train=split.outputs["train"], seed=p.seed)
            baseline.set_display_name("train baseline").set_caching_options(False)
            baseline_evaluation = steps.evaluate_model(
                model=baseline.outputs["model"], validation=split.outputs["validation"]
            ).set_display_name("evaluate baseline")
            baseline_evaluation.set_caching_options(False)
            # A promotion candidate only when asked: then it registers a version and meets the
            # gate beside the CNN's (the two take turns under the promotion lock).
            baseline_registration = register(
                steps, p, baseline, baseline_evaluation, split, train_rows,
                p.baseline_candidate, "",
            )  # fmt: skip
            baseline_registration.set_display_name("register baseline")
            with dsl.If(p.baseline_candidate == True, name="baseline-candidate"):  # noqa: E712
                baseline_gate = gate(steps, p, baseline_evaluation, split, baseline_registration)
                baseline_gate.set_display_name("promote baseline")

        # Optional: serve the exact version the gate left as champion (a canary beside an older
        # one); the CPU image runs `digits serve` in the InferenceService.
        with dsl.If(p.deploy == True, name="deploy"):  # noqa: E712 (a KFP condition)
            deployment = steps.deploy_model(
                mlflow_tracking_uri=p.mlflow_tracking_uri,
                registered_model_name=p.registered_model_name,
                champion_version=champion_version,
                service_name=p.deploy_name,
                namespace=p.deploy_namespace,
                serving_image=settings.image,
                mlflow_secret=settings.mlflow_secret,
                canary_percent=p.canary_percent,
            )
            # Patches a live service: always runs; a retry re-reads and re-applies (idempotent).
            deployment.set_caching_options(False).set_retry(num_retries=2, backoff_duration="30s")
            use_mlflow_credentials(deployment, settings)

        predict_rows = validated_rows(
            steps, p.predict_data_uri, "test.csv", False, p.max_rejected_fraction
        )
        # Every shard predicts with the exact version the gate left as champion (or
        # predict_model_uri), and tags this run's MLflow run with it. A pure function of its
        # inputs, so cached.
        plan = steps.plan_prediction_shards(
            shard_count=p.predict_shards,
            champion_version=champion_version,
            mlflow_run_id=mlflow_run_id,
        ).set_caching_options(True)
        with dsl.ParallelFor(plan.output) as shard_plan:
            shard = steps.batch_predict(
                rows=predict_rows.outputs["valid"],
                mlflow_tracking_uri=p.mlflow_tracking_uri,
                registered_model_name=p.registered_model_name,
                predict_model_uri=p.predict_model_uri,
                champion_version=shard_plan.champion_version,
                shard_index=shard_plan.shard_index,
                shard_count=p.predict_shards,
                mlflow_run_id=shard_plan.mlflow_run_id,
                mlflow_timeout_s=p.mlflow_timeout_s,
            ).set_caching_options(False)  # writes to MLflow
            use_mlflow_credentials(shard, settings)
        predictions = steps.collect_predictions(
            submissions=dsl.Collected(shard.outputs["submission"]),
            probability_shards=dsl.Collected(shard.outputs["probabilities"]),
        ).set_caching_options(False)

        secure_and_size_all_tasks(settings)

        return PipelineOutputs(
            submission=predictions.outputs["submission"],
            mlflow_run_id=mlflow_run_id,
            model_version=model_version,
            promotion_decision=decision,
            predicted_with=predictions.outputs["Output"],
        )

    return digits_pipeline


def compile_pipeline(output: Path, settings: ClusterSettings | None = None) -> Path:
    """Write the KFP v2 IR YAML for ``settings`` to ``output``."""
    from kfp import compiler

    compiler.Compiler().compile(build_pipeline(settings), package_path=str(output))
    return output
