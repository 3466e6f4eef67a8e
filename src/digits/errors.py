"""Errors a user can act on: each message names the file, the row or column, and the fix."""


class DigitsError(Exception):
    """Base class for every error this project raises on purpose."""


class IngestError(DigitsError):
    """The source CSV cannot be read."""


class DataValidationError(DigitsError):
    """The data is not in Kaggle's Digit Recognizer format, or too many rows are unusable."""


class RegistrationError(DigitsError):
    """The model could not be logged or registered in MLflow."""


class SubmitError(DigitsError):
    """A run could not be submitted to, or followed on, a Kubeflow Pipelines backend."""


class ScheduleError(SubmitError):
    """A pipeline version could not be uploaded, or a recurring run created or changed."""


class CronError(ScheduleError):
    """A cron expression KFP's scheduler would refuse or, with five fields, misread."""


class PredictionError(DigitsError):
    """Batch prediction cannot find its model or cannot join its shards."""


class RecipeError(DigitsError):
    """The training recipe name or one of its settings is not known."""


class CheckpointError(DigitsError):
    """A training checkpoint cannot be read or does not belong to this run's recipe."""


class PipelineStepError(DigitsError):
    """A step of a local pipeline run failed; ``str()`` is the step's own one-line error."""

    def __init__(self, task: str, message: str, log_path):
        super().__init__(message)
        self.task, self.log_path = task, log_path


class ModelArtifactError(DigitsError):
    """A Model artifact directory holds no model this project can load."""


class SourceNotFoundError(IngestError):
    """The source path or URL does not exist or cannot be reached."""


class NotACsvError(IngestError):
    """The source is empty, binary, wrongly delimited or not a single CSV."""


class ColumnError(DataValidationError):
    """The header does not name Kaggle's columns: missing, duplicated or surplus ones."""


class NoDataRowsError(DataValidationError):
    """The file holds a header but no data rows."""


class TooManyRejectedRowsError(DataValidationError):
    """More rows were rejected than ``max_rejected_fraction`` allows."""


class MissingDigitsError(DataValidationError):
    """Training data lacks every example of one or more digits."""


class SettingsError(DigitsError):
    """A compile or run setting asks for something the pipeline cannot honour."""


class DockerRunError(DigitsError):
    """`digits run --runner docker` cannot start: no Docker daemon, or an image is not built."""


class RegistryLookupError(DigitsError):
    """A model URI names no registered model, version or alias that the registry holds."""


class ServingError(DigitsError):
    """`digits serve` or `digits deploy` cannot serve or deploy what it was asked to."""


class SweepError(DigitsError):
    """A sweep's search space cannot be used, or none of its trials trained."""


class TrainingError(DigitsError):
    """Training could not finish: its loss diverged."""
