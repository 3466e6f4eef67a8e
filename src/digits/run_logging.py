"""Logging one trained model to MLflow: its run, params, datasets, curves, pictures, the logged
model in its flavor, and its registered version; every step idempotent and retried.

One pipeline run gives exactly one MLflow run per model family and at most one model version,
however often the register task is retried and even when the server commits a create but loses
the answer (see :mod:`digits.tracking`).
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from digits.artifacts import MODEL_FILENAME, Evaluation
from digits.data import ImageSet
from digits.errors import RegistrationError
from digits.tracking import MODEL_FAMILY_TAG, PIPELINE_RUN_TAG

DATA_REPORT_ARTIFACT = "data/train_validation_report.json"
# The logged model's name, by model family: the run page, the compare view and the experiment's
# Models view list it by this name, and ``runs:/<run id>/<name>`` loads it.
LOGGED_MODEL_NAMES = {"cnn": "cnn", "scikit-learn": "sklearn-baseline"}
# The evaluation of the logged model on the validation rows. MLflow's Model metrics tab groups
# charts into sections by the key up to its last "/" and sorts the sections by name, so these
# come after the per-epoch curves (sections "train" and "val"): first the summary
# ("val/eval"), then the 30 per-digit scores ("val/per_digit").
EVAL_METRIC_PREFIX = "val/eval/"
PER_DIGIT_METRIC_PREFIX = "val/per_digit/"
VALIDATION_ACCURACY_METRIC = f"{EVAL_METRIC_PREFIX}accuracy"


def logged_model_name(family: str) -> str:
    """The name of a model family's logged model (``cnn``, ``sklearn-baseline``)."""
    return LOGGED_MODEL_NAMES.get(family, family)


def evaluation_metric_key(name: str) -> str:
    """MLflow key of one of :meth:`Evaluation.scalar_metrics`: ``val/eval/accuracy``,
    ``val/per_digit/recall_7``."""
    per_digit = name.rsplit("_", 1)[-1].isdigit()
    return f"{PER_DIGIT_METRIC_PREFIX if per_digit else EVAL_METRIC_PREFIX}{name}"


@dataclass(frozen=True)
class RunRecord:
    """What one pipeline run produced, ready to log."""

    model_dir: Path
    history_path: Path
    evaluation_path: Path
    validation_path: Path
    pipeline_run_id: str
    pipeline_run_name: str = ""
    run_name: str = ""
    train_data_uri: str = ""
    data_report_path: Path | None = None
    data_params: dict[str, str | int | float] = field(default_factory=dict)
    kfp_ui_url: str = ""
    # Which recurring run and pipeline version made this run (digits.tracking.schedule_tags).
    schedule_tags: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Registration:
    run_id: str
    experiment_id: str
    model_name: str
    model_version: str  # "" when the run was logged without registering a version
    model_uri: str


class RunLogger:
    """The steps of one registration, each idempotent and retried within the budget."""

    def __init__(self, client, budget, record: RunRecord, training: dict):
        self.client, self.budget, self.record, self.training = client, budget, record, training
        self.family = training["result"].get(MODEL_FAMILY_TAG, "cnn")
        self.evaluation = Evaluation.read(record.evaluation_path)
        self.history = json.loads(record.history_path.read_text())
        path = record.data_report_path
        self.data_report = (
            json.loads(Path(path).read_text()) if path and Path(path).is_file() else None
        )
        self.validation = ImageSet.load(record.validation_path)

    def experiment(self, name: str, artifact_location: str) -> str:
        from digits.tracking import experiment_once

        return experiment_once(self.client, self.budget, name, artifact_location)

    def run(self, experiment_id: str, plugin) -> str:
        """This pipeline run's MLflow run: found by tag, else created with training's start."""
        from digits.tracking import readable_tags, run_once

        if plugin is not None and self.family == "cnn":
            return plugin.parent_run_id
        record = self.record
        key = f"{record.pipeline_run_id}/{self.family}"
        tags = {
            PIPELINE_RUN_TAG: key,
            MODEL_FAMILY_TAG: self.family,
            **readable_tags(record.pipeline_run_id, record.pipeline_run_name, record.kfp_ui_url),
            **record.schedule_tags,
        }
        if plugin is not None:
            tags["mlflow.parentRunId"] = plugin.parent_run_id
        start_ms = self.training["result"].get("started_at_ms")
        return run_once(self.client, self.budget, experiment_id, tags, self.run_name(), start_ms)

    def run_name(self) -> str:
        """The user's name, else the recipe and the settings that differ from it."""
        if self.record.run_name:
            return self.record.run_name
        from dataclasses import asdict

        from digits.config import RECIPES

        recipe = self.training.get("recipe", self.family)
        defaults = asdict(RECIPES[recipe]) if recipe in RECIPES else {}
        changed = {
            key: value
            for key, value in self.training["config"].items()
            if key in defaults and defaults[key] != value
        }
        details = " ".join(f"{key}={value}" for key, value in sorted(changed.items()))
        return f"{recipe} {details}".strip()

    def log_everything(self, run_id: str, experiment_id: str) -> str:
        """Params, tags, datasets, per-epoch metrics, the model, its evaluation and pictures."""
        from mlflow.entities import Metric, Param, RunTag

        from digits.tracking import retry

        record, result = self.record, self.training["result"]
        params = {
            "recipe": self.training.get("recipe", self.family),
            **self.training["config"],
            **record.data_params,
        }
        tags = (
            # What the recipe's precision resolved to on the training hardware.
            {"keras_backend": result.get("backend", ""), "compute_dtype": result["compute_dtype"]}
            if self.family == "cnn"
            else {}
        )
        tags["recipe"] = params["recipe"]
        tags[MODEL_FAMILY_TAG] = self.family
        if record.kfp_ui_url:
            tags["mlflow.note.content"] = self._description()
        retry(
            self.budget,
            lambda: self.client.log_batch(
                run_id,
                params=[Param(key, str(value)[:6000]) for key, value in params.items()],
                tags=[RunTag(key, str(value)) for key, value in tags.items()],
            ),
        )
        training_set, validation_set, sha256 = self._datasets()
        retry(self.budget, lambda: self._log_inputs(run_id, training_set, validation_set, sha256))
        start = result.get("started_at_ms") or 0
        epoch_metrics = _epoch_metrics(self.history, start)
        for first in range(0, len(epoch_metrics), 900):  # the server takes 1000 per call
            chunk = epoch_metrics[first : first + 900]
            retry(self.budget, lambda chunk=chunk: self.client.log_batch(run_id, metrics=chunk))

        model_id = self._log_model(run_id, experiment_id)
        timestamp = start + int(1000 * result.get("seconds", 0))
        evaluation_metrics = [
            Metric(
                evaluation_metric_key(name),
                value,
                timestamp,
                0,
                model_id=model_id,
                dataset_name=validation_set.name,
                dataset_digest=validation_set.digest,
            )
            for name, value in self.evaluation.scalar_metrics().items()
        ]
        evaluation_metrics.append(Metric("train/seconds", result.get("seconds", 0.0), timestamp, 0))
        retry(self.budget, lambda: self.client.log_batch(run_id, metrics=evaluation_metrics))
        retry(self.budget, lambda: self._log_pictures_and_reports(run_id))
        return model_id

    def _description(self) -> str:
        from digits.tracking import kfp_run_url

        record = self.record
        url = kfp_run_url(record.kfp_ui_url, record.pipeline_run_id)
        return f"KFP run [{record.pipeline_run_name or record.pipeline_run_id}]({url})"

    def _datasets(self):
        """(training CSV, validation split, sha256 of the CSV's bytes, "" when unknown)."""
        import mlflow.data
        from mlflow.data.dataset_source_registry import resolve_dataset_source
        from mlflow.data.meta_dataset import MetaDataset

        record = self.record
        report = self.data_report or {}
        sha256 = report.get("source_sha256", "")
        source_uri = record.train_data_uri or report.get("source_uri", "") or "unknown"
        with warnings.catch_warnings():  # "can be interpreted in multiple ways": same class twice
            warnings.simplefilter("ignore", UserWarning)
            source = resolve_dataset_source(source_uri)
        # MLflow's dataset digest column holds 36 characters; the full hash is an input tag.
        training_set = MetaDataset(
            source, name=Path(source_uri).name or "train.csv", digest=sha256[:16] or None
        )
        validation = self.validation
        validation_set = mlflow.data.from_numpy(
            validation.images.reshape(len(validation), -1),
            targets=validation.labels,
            source=source,
            name="validation",
        )
        return training_set, validation_set, sha256

    def _log_inputs(self, run_id: str, training_set, validation_set, sha256: str) -> None:
        from mlflow.entities import DatasetInput, InputTag

        inputs = [
            DatasetInput(
                training_set._to_mlflow_entity(),
                tags=[InputTag("mlflow.data.context", "training")]
                + ([InputTag("sha256", sha256)] if sha256 else []),
            ),
            DatasetInput(
                validation_set._to_mlflow_entity(),
                tags=[InputTag("mlflow.data.context", "validation")],
            ),
        ]
        self.client.log_inputs(run_id, datasets=inputs)

    def _log_model(self, run_id: str, experiment_id: str) -> str:
        """The MLflow 3 logged model of this run, created once, its files uploaded once, and
        linked as the run's output once (what the run page's "Logged models" shows)."""
        import mlflow

        from digits.tracking import create_once, retry

        name = logged_model_name(self.family)

        def find():
            models = self.client.search_logged_models(
                [experiment_id],
                filter_string=f"source_run_id = '{run_id}' AND name = '{name}'",
                max_results=1,
            )
            return models[0] if models else None

        logged = create_once(
            self.budget,
            find,
            lambda: self.client.create_logged_model(
                experiment_id,
                name=name,
                source_run_id=run_id,
                tags={MODEL_FAMILY_TAG: self.family},
                model_type=self.family,
            ),
        )
        if str(logged.status) != "READY":
            mlflow.set_tracking_uri(self.client.tracking_uri)  # log_model has only the fluent API
            retry(self.budget, lambda: self._upload_model(name, logged.model_id))
        self._link_output(run_id, logged.model_id)
        return logged.model_id

    def _link_output(self, run_id: str, model_id: str) -> None:
        """Record the model as the run's output. ``log_model`` does that only inside an active
        run; the logged model already names its run as source, but the run page and the compare
        view list a run's models from its outputs."""
        from mlflow.entities import LoggedModelOutput

        from digits.tracking import create_once

        def find():
            outputs = self.client.get_run(run_id).outputs
            models = outputs.model_outputs if outputs else []
            return True if any(output.model_id == model_id for output in models) else None

        def create():
            # Step 0: the step of the evaluation metrics logged for this model.
            self.client.log_outputs(run_id, [LoggedModelOutput(model_id, step=0)])
            return True

        create_once(self.budget, find, create)

    def _upload_model(self, name: str, model_id: str) -> None:
        # The logged model already names its run; no active run is needed (or ended).
        flavor_kwargs = {"name": name, "model_id": model_id}
        if self.family == "cnn":
            _log_keras_model(self.record.model_dir, self.training, flavor_kwargs)
        else:
            _log_sklearn_model(self.record.model_dir, flavor_kwargs)

    def _log_pictures_and_reports(self, run_id: str) -> None:
        from dataclasses import asdict

        from digits import plots

        evaluation = self.evaluation
        self.client.log_dict(run_id, asdict(evaluation), "evaluation.json")
        self.client.log_dict(run_id, self.history, "history.json")
        self.client.log_dict(run_id, self.training, "training.json")
        if self.data_report is not None:
            self.client.log_dict(run_id, self.data_report, DATA_REPORT_ARTIFACT)
        self.client.log_figure(
            run_id, plots.confusion_figure(evaluation), plots.CONFUSION_MATRIX_PNG
        )
        self.client.log_figure(
            run_id, plots.training_curves_figure(self.history), plots.TRAINING_CURVES_PNG
        )
        self.client.log_figure(run_id, self._misclassified(), plots.MISCLASSIFIED_PNG)

    def _misclassified(self):
        import numpy as np

        from digits import plots

        validation, predicted = self.validation, np.asarray(self.evaluation.predicted)
        if len(predicted) != len(validation):
            raise RegistrationError(
                f"the evaluation report has {len(predicted)} predicted classes for "
                f"{len(validation)} validation rows: evaluate the model on this run's "
                "validation split (evaluate_model writes them)"
            )
        return plots.misclassified_figure(validation.images, validation.labels, predicted)

    def register(self, model_name: str, run_id: str, model_id: str) -> str:
        """This run's version of ``model_name``: found by tag, else created (and described)."""
        from digits.tracking import create_once, retry

        client, key = self.client, f"{self.record.pipeline_run_id}/{self.family}"
        retry(self.budget, lambda: self._ensure_registered_model(model_name))

        def find():
            versions = client.search_model_versions(
                f"name = '{model_name}' and tags.`{PIPELINE_RUN_TAG}` = '{key}'"
            )
            return str(versions[0].version) if versions else None

        description = (
            f"{self.run_name()}: validation accuracy {self.evaluation.accuracy:.4f} "
            f"({sum(self.evaluation.support)} rows); KFP run "
            f"{self.record.pipeline_run_name or self.record.pipeline_run_id}"
        )
        # Passing model_id also links the version to the logged model (tag mlflow.modelVersions).
        version = create_once(
            self.budget,
            find,
            lambda: str(
                client.create_model_version(
                    model_name,
                    source=f"models:/{model_id}",
                    run_id=run_id,
                    tags={
                        PIPELINE_RUN_TAG: key,
                        MODEL_FAMILY_TAG: self.family,
                        **self.record.schedule_tags,
                    },
                    description=description,
                    model_id=model_id,
                ).version
            ),
        )
        return version

    def _ensure_registered_model(self, model_name: str) -> None:
        from mlflow.exceptions import MlflowException

        description = (
            "Handwritten-digit classifier (Kaggle Digit Recognizer format: 28x28 grey images, "
            "pixels 0-255, labels 0-9), registered by the digits KFP pipeline. Alias `champion` "
            "is the version batch prediction uses; `challenger` the latest that did not beat it."
        )
        try:
            self.client.get_registered_model(model_name)
        except MlflowException as error:
            if error.error_code != "RESOURCE_DOES_NOT_EXIST":
                raise
            try:
                self.client.create_registered_model(model_name, description=description)
            except MlflowException as create_error:  # made by a concurrent run meanwhile
                if create_error.error_code != "RESOURCE_ALREADY_EXISTS":
                    raise

    def finish(self, run_id: str) -> None:
        from digits.tracking import retry

        retry(self.budget, lambda: self.client.set_terminated(run_id, "FINISHED"))


def _epoch_metrics(history: list[dict], start_ms: int):
    """Per-epoch series named by split, timestamped from the history so a retry logs the same."""
    from mlflow.entities import Metric

    names = {
        "loss": "train/loss",
        "accuracy": "train/accuracy",
        "val_loss": "val/loss",
        "val_accuracy": "val/accuracy",
        "learning_rate": "train/learning_rate",
        "seconds": "train/epoch_seconds",
    }
    metrics, elapsed = [], 0.0
    for record in history:
        elapsed += record.get("seconds", 0.0)
        timestamp = start_ms + int(1000 * elapsed)
        for key, name in names.items():
            if key in record:
                metrics.append(Metric(name, float(record[key]), timestamp, int(record["epoch"])))
    return metrics


def _log_keras_model(model_dir: Path, training: dict, flavor_kwargs: dict) -> None:
    import keras
    import mlflow
    import numpy as np
    from mlflow.models import infer_signature

    model = keras.saving.load_model(model_dir / MODEL_FILENAME)
    example = np.zeros((1, *model.input_shape[1:]), dtype=np.float32)
    mlflow.keras.log_model(
        model,
        signature=infer_signature(example, model.predict(example, verbose=0)),
        pip_requirements=_pip_requirements(training["result"].get("backend", "tensorflow")),
        **flavor_kwargs,
    )


def _log_sklearn_model(model_dir: Path, flavor_kwargs: dict) -> None:
    import joblib
    import mlflow
    import numpy as np
    import skops.io
    from mlflow.models import infer_signature

    from digits.artifacts import SKLEARN_MODEL_FILENAME

    model = joblib.load(model_dir / SKLEARN_MODEL_FILENAME)
    example = np.zeros((1, 28 * 28), dtype=np.float32)
    mlflow.sklearn.log_model(
        model,
        signature=infer_signature(example, model.predict_proba(example)),
        # MLflow saves with skops, which loads only the types it is told to trust: those of the
        # estimator this pipeline just fitted (scikit-learn's own, plus numpy scalars).
        skops_trusted_types=skops.io.get_untrusted_types(data=skops.io.dumps(model)),
        # Named, so MLflow does not infer them by loading the model in a new Python process
        # (about 10 s of every register step).
        pip_requirements=mlflow.sklearn.get_default_pip_requirements(include_skops=True),
        **flavor_kwargs,
    )


def _pip_requirements(backend: str) -> list[str]:
    """Pin the exact Keras and backend versions that trained the model, for serving."""
    from importlib.metadata import PackageNotFoundError, version

    requirements = [f"keras=={version('keras')}"]
    candidates = {"tensorflow": ["tensorflow", "tensorflow-cpu"], "torch": ["torch"]}
    for package in candidates.get(backend, [backend]):
        try:
            requirements.append(f"{package}=={version(package).split('+')[0]}")
            break
        except PackageNotFoundError:
            continue
    return requirements
